"""Models: the model format (``format``) and the model registry (``service``)."""

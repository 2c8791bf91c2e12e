"""Real-time endpoints: the control plane (tables, service, router) and, under ``runtime/``, the
model server process each endpoint runs (``python -m shipyard.serving.runtime --config FILE``)."""

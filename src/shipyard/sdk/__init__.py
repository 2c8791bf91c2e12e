"""The Python SDK: backends (in-process and HTTP), the client, the run context."""

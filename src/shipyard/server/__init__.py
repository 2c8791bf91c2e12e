"""The HTTP server: app factory, auth, error handlers."""

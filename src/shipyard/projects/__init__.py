"""Projects, users, API tokens and roles: who may do what, where."""

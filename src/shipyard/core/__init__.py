"""Core: settings, ids, errors, the metadata database and the artifact store."""

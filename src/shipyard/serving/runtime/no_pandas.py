"""Importing this module keeps pandas out of this process (see ``imports.py``)."""

from shipyard.serving.runtime.imports import block_pandas

block_pandas()

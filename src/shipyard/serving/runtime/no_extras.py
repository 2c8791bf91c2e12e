"""Importing this module keeps Rich and charset_normalizer out of this process (see
``imports.py``)."""

from shipyard.serving.runtime.imports import block_extras

block_extras()

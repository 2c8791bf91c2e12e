"""Importing this module imports pandas without PyArrow (see ``imports.py``)."""

from shipyard.serving.runtime.imports import import_pandas_without_pyarrow

import_pandas_without_pyarrow()

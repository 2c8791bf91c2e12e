"""Importing this module imports pandas without PyArrow, for a model server that runs no code of
its own models (``trust_code`` off: only data formats, read by their libraries).

pandas imports PyArrow whenever it is installed, to back its string columns; scikit-learn
imports pandas whenever that is installed. Together they cost a model server about 50 MB of
memory and 0.05 CPU s at start, for nothing a scikit-learn, LightGBM, XGBoost or ONNX model
reads (string columns reach them as Python strings either way). With ``trust_code`` on, a
``python_function`` model may use pandas' Arrow types, so the server keeps the default.
``import pyarrow`` still works afterwards; pandas just does not use it for its own types.
"""

import sys

if "pandas" not in sys.modules and "pyarrow" not in sys.modules:
    sys.modules["pyarrow"] = None  # type: ignore[assignment]  # pandas sees it as absent
    try:
        import pandas  # noqa: F401
    finally:
        if sys.modules.get("pyarrow", 0) is None:
            del sys.modules["pyarrow"]

"""What a model server keeps out of its imports: PyArrow under pandas, or pandas altogether;
and two packages that scikit-learn and NumPy import only because they are installed.

scikit-learn, LightGBM and XGBoost import pandas whenever it is installed, and pandas imports
PyArrow whenever that is installed, to back its string columns. A model server needs neither
for a model that takes a float matrix (``array_input`` in its manifest, or a tensor
signature): it never builds a frame. Measured with scikit-learn's linear models and forests
imported: 218 MB of RSS with pandas and PyArrow, 170 MB with pandas alone, 140 MB with
neither, which is what a bare uvicorn app holding the model holds in an environment without
pandas. PyArrow is kept out only where no model's own code runs (``trust_code`` off): a
``python_function`` model may use pandas' Arrow types.

Rich and charset_normalizer: scikit-learn imports ``rich.progress`` when Rich is installed (its
training progress bars, ``sklearn.callback``), and SciPy's array API layer imports
``numpy.f2py``, which imports charset_normalizer when installed (to read Fortran sources). Both
imports sit in a ``try``/``except ImportError``; a model server never trains nor reads Fortran.
Shipyard installs both (Rich for its command line, charset_normalizer with requests), a bare
environment with scikit-learn has neither: measured in scikit-learn's import, about 0.1 CPU s
(Rich's console, tables and progress modules, 60 of them). Kept out only where no model's own
code runs (``trust_code`` off), as PyArrow is.

The guard modules ``no_pandas``, ``no_pyarrow`` and ``no_extras`` apply these on import, so that
a fork server can preload them ahead of everything else. A request or a model that needs frames can
still arrive in a server without pandas (a body only the full parser reads, an endpoint
reloaded with a pipeline): ``allow_pandas`` lets it in from then on. scikit-learn looks pandas
up in ``sys.modules`` when it meets a frame, so it works with frames from then on.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from typing import Any


class _NoPandas(MetaPathFinder):
    """Answers every import of pandas with ModuleNotFoundError, leaving ``sys.modules`` without
    an entry (scikit-learn reads ``sys.modules["pandas"]`` to tell a frame, and would trip over
    a None there)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (kept out of this model server)")
        return None


# Top-level packages a model server that runs no model code keeps out (see above).
EXTRAS = ("rich", "charset_normalizer")


class _NoExtras(MetaPathFinder):
    """Answers every import of ``EXTRAS`` with ModuleNotFoundError (what their importers expect
    when they are not installed)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in EXTRAS:
            raise ModuleNotFoundError(f"No module named {name!r} (kept out of this model server)")
        return None


def block_extras() -> None:
    if not any(isinstance(f, _NoExtras) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoExtras())


def block_pandas() -> None:
    if "pandas" not in sys.modules and not pandas_blocked():
        sys.meta_path.insert(0, _NoPandas())


def pandas_blocked() -> bool:
    return any(isinstance(f, _NoPandas) for f in sys.meta_path)


def allow_pandas(without_pyarrow: bool = True) -> None:
    """Let pandas in again, and import it (a model or a request needs frames)."""
    if not pandas_blocked():
        return
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _NoPandas)]
    if without_pyarrow:
        import_pandas_without_pyarrow()
    else:
        import pandas  # noqa: F401


def import_pandas_without_pyarrow() -> None:
    if "pandas" in sys.modules or "pyarrow" in sys.modules or pandas_blocked():
        return
    sys.modules["pyarrow"] = None  # type: ignore[assignment]  # pandas sees it as absent
    try:
        import pandas  # noqa: F401
    finally:
        if sys.modules.get("pyarrow", 0) is None:
            del sys.modules["pyarrow"]

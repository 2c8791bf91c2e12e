"""Hyperparameter tuning: tuning jobs whose trials are training jobs or Python functions.

``sy.tuning`` is this package, so the SDK's calls (``sy.tuning.create``, ``get``, ``wait``,
``stop``, ``uniform``, ...; they live in ``shipyard.sdk.tuning``) are forwarded from here on
first use. Binding ``shipyard.tuning`` to the SDK module instead would shadow this package and
break ``import shipyard.tuning.service as ...``.
"""

from __future__ import annotations

from typing import Any

_SDK = frozenset(
    {
        "Trial",
        "TrialPruned",
        "TuningJob",
        "categorical",
        "create",
        "delete",
        "get",
        "integer",
        "list_jobs",
        "loguniform",
        "register_best",
        "stop",
        "tune",
        "uniform",
        "wait",
    }
)


# ``sy.tuning.list`` reads as ``sy.jobs.list`` does; the SDK module cannot name a function
# ``list`` without shadowing the builtin in its own annotations.
_ALIASES = {"list": "list_jobs"}


def __getattr__(name: str) -> Any:
    if name in _SDK or name in _ALIASES:
        from shipyard.sdk import tuning as sdk

        return getattr(sdk, _ALIASES.get(name, name))
    raise AttributeError(f"module 'shipyard.tuning' has no attribute {name!r}")

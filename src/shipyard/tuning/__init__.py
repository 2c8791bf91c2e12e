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


def __getattr__(name: str) -> Any:
    if name in _SDK:
        from shipyard.sdk import tuning as sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'shipyard.tuning' has no attribute {name!r}")

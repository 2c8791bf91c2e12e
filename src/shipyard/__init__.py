"""Shipyard: an open, self-hosted machine-learning platform.

import shipyard as sy
sy.init(project="demo")
with sy.start_run(experiment="churn") as run:
    sy.log_param("lr", 0.1)
    for step in range(100):
        sy.log_metric("loss", 1 / (step + 1), step=step)
"""

from typing import TYPE_CHECKING, Any

from shipyard.core.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SchemaBehind,
    ShipyardError,
    Unauthenticated,
    Unavailable,
)

if TYPE_CHECKING:
    from shipyard import jobs, tuning
    from shipyard.models.format import save_model
    from shipyard.sdk.autolog import autolog
    from shipyard.sdk.client import Client
    from shipyard.sdk.fluent import (
        ActiveRun,
        active_run,
        delete_tag,
        end_run,
        flush,
        get_client,
        init,
        log_artifact,
        log_artifacts,
        log_input,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        set_tag,
        set_tags,
        start_run,
    )
    from shipyard.sdk.models import LoggedModel, load_model, log_model, register_model
    from shipyard.sdk.tuning import tune

# The SDK is imported on first use of one of its names: `import shipyard.<anything>` (an endpoint's
# model server, a job's worker, the CLI) then costs none of it (httpx, the backends: about 0.3 s
# and 20 MB).
_FLUENT = [
    "ActiveRun",
    "active_run",
    "delete_tag",
    "end_run",
    "flush",
    "get_client",
    "init",
    "log_artifact",
    "log_artifacts",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "set_tag",
    "set_tags",
    "start_run",
]
_LAZY: dict[str, str] = {
    **dict.fromkeys(_FLUENT, "shipyard.sdk.fluent"),
    "autolog": "shipyard.sdk.autolog",
    "Client": "shipyard.sdk.client",
    "save_model": "shipyard.models.format",
    "LoggedModel": "shipyard.sdk.models",
    "load_model": "shipyard.sdk.models",
    "log_model": "shipyard.sdk.models",
    "register_model": "shipyard.sdk.models",
    "tune": "shipyard.sdk.tuning",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in ("jobs", "tuning"):  # the domain packages, which forward the SDK's calls
        return importlib.import_module(f"shipyard.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "jobs", "tuning"})


__version__ = "0.1.0"

__all__ = [
    "ActiveRun",
    "AlreadyExists",
    "Client",
    "Conflict",
    "InvalidArgument",
    "LoggedModel",
    "NotFound",
    "PermissionDenied",
    "SchemaBehind",
    "ShipyardError",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "active_run",
    "autolog",
    "delete_tag",
    "end_run",
    "flush",
    "get_client",
    "init",
    "jobs",
    "load_model",
    "log_artifact",
    "log_artifacts",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "register_model",
    "save_model",
    "set_tag",
    "set_tags",
    "start_run",
    "tune",
    "tuning",
]

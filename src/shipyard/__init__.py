"""Shipyard: an open, self-hosted machine-learning platform.

import shipyard as sy
sy.init(project="demo")
with sy.start_run(experiment="churn") as run:
    sy.log_param("lr", 0.1)
    for step in range(100):
        sy.log_metric("loss", 1 / (step + 1), step=step)
"""

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
from shipyard.models.format import save_model
from shipyard.sdk.models import LoggedModel, load_model, log_model, register_model
from shipyard.sdk.tuning import tune

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
]

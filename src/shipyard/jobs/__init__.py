"""Training jobs: a script, a function or a built-in algorithm run on an executor, tracked as a
run (``schemas``, ``tables``, ``service``, ``worker``, ``router``; ``launcher`` runs inside the
job's process, with ``channels``, ``run_tracking`` and ``model_dir``).

``sy.jobs`` is this package, so the SDK's calls are reachable here too: ``sy.jobs.submit(...)``,
``get``, ``list``, ``wait``, ``stop``, ``logs``, ``follow_logs``, ``delete`` (from
``shipyard.sdk.jobs``, imported on first use so the domain itself never loads the SDK).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.sdk.jobs import delete as delete
    from shipyard.sdk.jobs import follow_logs as follow_logs
    from shipyard.sdk.jobs import get as get
    from shipyard.sdk.jobs import list as list
    from shipyard.sdk.jobs import logs as logs
    from shipyard.sdk.jobs import stop as stop
    from shipyard.sdk.jobs import submit as submit
    from shipyard.sdk.jobs import wait as wait

_SDK = ("delete", "follow_logs", "get", "list", "logs", "stop", "submit", "wait")


def __getattr__(name: str) -> Any:
    if name in _SDK:
        from shipyard.sdk import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module 'shipyard.jobs' has no attribute {name!r}")

"""Studio's tuning job pages: the tuning jobs (filtered by status, paginated) and one tuning job
(its strategy, objective, best trial, the trials as a sortable table, and charts of the objective
against the trial number, with the running best, and against each parameter).

A tuning job still searching refreshes its page every few seconds. The sort and page of the
trials table live in the URL. Stop is a form posted to this server (editor role, same site).
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote, urlencode, urlparse

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from shipyard.core.errors import InvalidArgument, PermissionDenied
from shipyard.core.paging import encode_page_token
from shipyard.projects.schemas import Role
from shipyard.studio import views
from shipyard.studio.auth import auth_on, projects_of, require_viewer, studio_principal
from shipyard.studio.jobs_views import can_edit, fmt_seconds
from shipyard.studio.router import StudioRoute, _page, _server_url
from shipyard.tuning.schemas import (
    Direction,
    ParamKind,
    TrialPublic,
    TrialState,
    TuningJobPublic,
    TuningJobStatus,
)
from shipyard.tuning.service import TuningService

router: APIRouter = APIRouter(route_class=StudioRoute, include_in_schema=False)

PAGE = 50
TRIALS_PAGE = 100
MAX_PAGE = 200
STATUS_CLASS = {
    TuningJobStatus.running: "running",
    TuningJobStatus.stopping: "running",
    TuningJobStatus.completed: "finished",
    TuningJobStatus.failed: "failed",
    TuningJobStatus.stopped: "killed",
}
TRIAL_CLASS = {
    TrialState.running: "running",
    TrialState.completed: "finished",
    TrialState.pruned: "pruned",
    TrialState.failed: "failed",
    TrialState.stopped: "killed",
}
# The trials table's built-in sort keys; "p.<name>" sorts by a parameter.
TRIAL_SORTS = ("number", "value", "state", "duration")


def _tuning(request: Request) -> TuningService:
    return request.app.state.services.tuning  # type: ignore[no-any-return]


def tuning_url(project: str, tuning_job_id: str | None = None) -> str:
    out = f"/projects/{quote(project)}/tuning-jobs"
    return out if tuning_job_id is None else f"{out}/{quote(tuning_job_id)}"


def _common() -> dict[str, Any]:
    return {
        "status_class": STATUS_CLASS,
        "trial_class": TRIAL_CLASS,
        "seconds": fmt_seconds,
        "fmt_param": fmt_param,
        "nav": "tuning",
    }


def fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return views.fmt_num(v)
    return str(v)


def _duration(t: TrialPublic) -> float | None:
    if t.started_at is None or t.ended_at is None:
        return None
    return max(0.0, (t.ended_at - t.started_at).total_seconds())


def last_value(t: TrialPublic) -> float | None:
    """The trial's objective, or for a pruned or stopped one the last value it reported."""
    if t.value is not None:
        return t.value
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def sort_trials(
    trials: list[TrialPublic], key: str, descending: bool, direction: Direction
) -> list[TrialPublic]:
    """Trials sorted by ``key``; trials without a value for it go last either way."""

    def value_of(t: TrialPublic) -> Any:
        if key == "number":
            return t.number
        if key == "value":
            return t.value
        if key == "state":
            return t.state.value
        if key == "duration":
            return _duration(t)
        v = t.params.get(key[2:])
        return v

    have = [t for t in trials if value_of(t) is not None]
    missing = [t for t in trials if value_of(t) is None]

    def order(t: TrialPublic) -> tuple[int, Any, int]:
        v = value_of(t)
        # Mixed categorical values (numbers and strings): numbers first, then by text.
        if isinstance(v, bool) or not isinstance(v, int | float):
            return (1, str(v), t.number)
        return (0, v, t.number)

    return sorted(have, key=order, reverse=descending) + sorted(missing, key=lambda t: t.number)


def chart_data(tj: TuningJobPublic) -> dict[str, Any]:
    """What the tuning job's charts draw: each trial's objective (or last reported value) and
    params, the space's parameters (categorical ones with their choices as categories)."""
    trials = tj.trials or []
    params = []
    for name, spec in tj.space.items():
        p: dict[str, Any] = {"name": name, "type": spec.type.value, "log": spec.log}
        if spec.type == ParamKind.categorical:
            p["choices"] = [fmt_param(c) for c in spec.choices or []]
        params.append(p)
    return {
        "objective": tj.objective.metric,
        "direction": tj.objective.direction.value,
        "best": tj.best.number if tj.best else None,
        "params": params,
        "trials": [
            {
                "number": t.number,
                "state": t.state.value,
                "value": _finite(t.value),
                "last": _finite(last_value(t)),
                "params": {
                    k: (fmt_param(v) if tj.space[k].type == ParamKind.categorical else v)
                    for k, v in t.params.items()
                    if k in tj.space
                },
            }
            for t in sorted(trials, key=lambda t: t.number)
        ],
    }


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


@router.get("/projects/{project}/tuning-jobs")
def tuning_jobs_page(
    request: Request, project: str, status: str = "", page: int = 1, size: int = PAGE
) -> Response:
    require_viewer(request, project)
    wanted = views.choice_param(status, TuningJobStatus)
    page = max(1, page)
    size = min(MAX_PAGE, max(1, size))
    svc = _tuning(request)
    found = svc.list(
        project,
        status=wanted,
        page_size=size,
        page_token=encode_page_token((page - 1) * size) if page > 1 else None,
    )
    counts = {s.value: svc.list(project, status=s, page_size=1).count or 0 for s in TuningJobStatus}

    def url(**changes: Any) -> str:
        params = {"status": status, "size": size, "page": page} | changes
        query = [
            (k, str(v))
            for k, v in params.items()
            if v and not (k == "size" and v == PAGE) and not (k == "page" and v == 1)
        ]
        return tuning_url(project) + (f"?{urlencode(query)}" if query else "")

    count = found.count or 0
    return _page(
        request,
        "tuning_jobs.html",
        project,
        items=found.data,
        count=count,
        total=sum(counts.values()),
        counts=counts,
        current=wanted.value if wanted else "",
        page=page,
        pages=max(1, -(-count // size)),
        has_next=found.next_page_token is not None,
        url=url,
        page_url=lambda p: url(page=p),
        refresh=any(not j.status.final for j in found.data),
        server_url=_server_url(request),
        crumbs=[(project, f"/projects/{project}"), ("Tuning jobs", None)],
        **_common(),
    )


@router.get("/projects/{project}/tuning-jobs/{tuning_job_id}")
def tuning_job_page(
    request: Request,
    project: str,
    tuning_job_id: str,
    sort: str = "number",
    desc: bool = False,
    page: int = 1,
) -> Response:
    principal = require_viewer(request, project)
    tj = _tuning(request).get(project, tuning_job_id)
    trials = tj.trials or []
    if sort not in TRIAL_SORTS and not (sort.startswith("p.") and sort[2:] in tj.space):
        choices = ", ".join([*TRIAL_SORTS, *(f"p.{k}" for k in tj.space)])
        raise InvalidArgument.for_field("sort", f"expected one of {choices}, got {sort!r}")
    ordered = sort_trials(trials, sort, desc, tj.objective.direction)
    pages = max(1, -(-len(ordered) // TRIALS_PAGE))
    page = min(max(1, page), pages)
    shown = ordered[(page - 1) * TRIALS_PAGE : page * TRIALS_PAGE]
    base = tuning_url(project, tj.id)

    def url(**changes: Any) -> str:
        params: dict[str, Any] = {"sort": sort, "desc": "1" if desc else "", "page": page}
        params |= changes
        query = [
            (k, str(v))
            for k, v in params.items()
            if v and not (k == "sort" and v == "number") and not (k == "page" and v == 1)
        ]
        return base + (f"?{urlencode(query)}" if query else "") + "#trials"

    def sort_url(key: str) -> str:
        # A click on the sorted column flips it; a new column starts ascending (or with the
        # best value first for the objective).
        if key == sort:
            return url(sort=key, desc="" if desc else "1", page=1)
        first_desc = key == "value" and tj.objective.direction == Direction.maximize
        return url(sort=key, desc="1" if first_desc else "", page=1)

    def aria_sort(key: str) -> str:
        if key != sort:
            return "none"
        return "descending" if desc else "ascending"

    return _page(
        request,
        "tuning_job.html",
        project,
        tj=tj,
        trials=shown,
        n_trials=len(trials),
        param_names=list(tj.space),
        page=page,
        pages=pages,
        has_next=page < pages,
        page_url=lambda p: url(page=p),
        sort_url=sort_url,
        aria_sort=aria_sort,
        duration_of=_duration,
        last_value=last_value,
        chart_data=chart_data(tj),
        refresh=not tj.status.final,
        can_edit=can_edit(request, principal, project),
        notice=request.query_params.get("done", ""),
        crumbs=[
            (project, f"/projects/{project}"),
            ("Tuning jobs", tuning_url(project)),
            (tj.name, None),
        ],
        **_common(),
    )


@router.post("/projects/{project}/tuning-jobs/{tuning_job_id}/stop")
async def post_stop(request: Request, project: str, tuning_job_id: str) -> Response:
    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc != request.headers.get("host"):
        raise PermissionDenied("stop tuning jobs from this server's own pages")
    principal = studio_principal(request)
    projects = projects_of(request)
    if auth_on(request):
        projects.authorize(principal, project, Role.editor)
    else:
        projects.project_id(project)
    tj = _tuning(request).stop(project, tuning_job_id)
    done = "Stopped" if tj.status.final else "Stopping: running trials are being stopped"
    return RedirectResponse(
        f"{tuning_url(project, tuning_job_id)}?{urlencode({'done': done})}", status_code=303
    )

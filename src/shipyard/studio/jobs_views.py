"""Studio's training job pages: the jobs list (filtered by status, paginated) and one job (its
status and failure reason, the report's findings, what it runs, a live log tail, its metrics and
resource profile as charts, a Stop button).

The job page is live while the job is active: ``jobs.js`` polls the log (``.../log?after_seq=``,
the same answer as the REST logs endpoint) and the charts' data, appends what is new, and
reloads the page once the job is final (for the report). These two JSON routes are Studio's own,
read with the sign-in cookie: the REST API takes only the ``Authorization`` header, which a
page's script does not hold. The Stop button is a form posted to this server, which needs the
editor role and refuses a form posted from another site (its ``Origin``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlparse

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from shipyard.core.errors import NotFound, PermissionDenied, ShipyardError
from shipyard.core.paging import encode_page_token
from shipyard.jobs.schemas import ACTIVE_STATUSES, Job, JobCreate, JobStatus
from shipyard.jobs.service import JobService
from shipyard.projects.schemas import Role
from shipyard.projects.service import Principal
from shipyard.studio import views
from shipyard.studio.auth import auth_on, projects_of, require_viewer, studio_principal
from shipyard.studio.router import StudioRoute, _page, _server_url
from shipyard.tracking.schemas import RunPublic
from shipyard.tracking.service import TrackingService

router: APIRouter = APIRouter(route_class=StudioRoute, include_in_schema=False)

PAGE = 50
MAX_PAGE = 200
PROFILE_PREFIX = "profile/"
# Statuses as labels, by meaning (the label always carries the word too): waiting (grey),
# under way (blue, pulsing), completed (green), failed (red), stopped (grey).
STATUS_CLASS = {
    JobStatus.queued: "queued",
    JobStatus.starting: "running",
    JobStatus.running: "running",
    JobStatus.completed: "finished",
    JobStatus.failed: "failed",
    JobStatus.stopped: "killed",
}
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
# The resource charts: (id, title, unit, metric suffixes drawn on it, with their labels).
PROFILE_CHARTS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("cpu", "CPU", "%", [("cpu_percent", "CPU (% of one core)")]),
    ("memory", "Memory", "B", [("memory_rss_bytes", "resident memory")]),
    (
        "disk",
        "Disk I/O",
        "B/s",
        [("disk_read_bytes_per_s", "read"), ("disk_write_bytes_per_s", "write")],
    ),
    (
        "network",
        "Network I/O",
        "B/s",
        [("network_recv_bytes_per_s", "received"), ("network_sent_bytes_per_s", "sent")],
    ),
]


def _jobs(request: Request) -> JobService:
    return request.app.state.services.jobs  # type: ignore[no-any-return]


def _tracking(request: Request) -> TrackingService:
    return request.app.state.tracking  # type: ignore[no-any-return]


def jobs_url(project: str, job_id: str | None = None) -> str:
    out = f"/projects/{quote(project)}/jobs"
    return out if job_id is None else f"{out}/{quote(job_id)}"


def entry_of(spec: JobCreate) -> tuple[str, str]:
    """What a job runs, as (kind, text): ('script', 'train.py'), ('algorithm', 'xgboost')..."""
    if isinstance(spec.entry_point, str):
        return "script", spec.entry_point
    if isinstance(spec.entry_point, list):
        return "command", " ".join(spec.entry_point)
    if spec.function:
        return "function", spec.function
    if spec.function_pickle:
        return "function", "a pickled Python function"
    return "algorithm", spec.algorithm or ""


def fmt_seconds(s: float | None) -> str:
    """A duration for people: 0.8s, 42s, 3m 04s, 2h 05m."""
    if s is None:
        return "—"
    if s < 10:
        return f"{s:.1f}s"
    n = int(round(s))
    if n < 60:
        return f"{n}s"
    if n < 3600:
        return f"{n // 60}m {n % 60:02d}s"
    if n < 86400:
        return f"{n // 3600}h {n % 3600 // 60:02d}m"
    return f"{n // 86400}d {n % 86400 // 3600}h"


def can_edit(request: Request, principal: Principal, project: str) -> bool:
    if not auth_on(request):
        return True
    role = projects_of(request).role_in(principal, project)
    return principal.is_admin or role in (Role.editor, Role.admin)


def _common() -> dict[str, Any]:
    return {
        "status_class": STATUS_CLASS,
        "entry_of": entry_of,
        "seconds": fmt_seconds,
        "nav": "jobs",
    }


# -- the list ---------------------------------------------------------------------------------


@router.get("/projects/{project}/jobs")
def jobs_page(
    request: Request,
    project: str,
    status: str = "",
    tuning_job: str = "",
    page: int = 1,
    size: int = PAGE,
) -> Response:
    require_viewer(request, project)
    wanted = views.choice_param(status, JobStatus)
    page = max(1, page)
    size = min(MAX_PAGE, max(1, size))
    svc = _jobs(request)
    tuning_id = tuning_job or None
    found = svc.list(
        project,
        status=wanted,
        tuning_job_id=tuning_id,
        page_token=encode_page_token((page - 1) * size) if page > 1 else None,
        max_results=size,
    )
    # Each status with its count, for the filter's chips (one small query each).
    counts = {
        s.value: svc.list(project, status=s, tuning_job_id=tuning_id, max_results=1).count or 0
        for s in JobStatus
    }
    total = sum(counts.values())

    def url(**changes: Any) -> str:
        params = {"status": status, "tuning_job": tuning_job, "size": size, "page": page}
        params |= changes
        query = [
            (k, str(v))
            for k, v in params.items()
            if v and not (k == "size" and v == PAGE) and not (k == "page" and v == 1)
        ]
        return jobs_url(project) + (f"?{urlencode(query)}" if query else "")

    count = found.count or 0
    return _page(
        request,
        "jobs.html",
        project,
        items=found.data,
        count=count,
        total=total,
        counts=counts,
        current=wanted.value if wanted else "",
        tuning_job=tuning_job,
        page=page,
        pages=max(1, -(-count // size)),
        has_next=found.next_page_token is not None,
        url=url,
        page_url=lambda p: url(page=p),
        refresh=any(j.status in ACTIVE_STATUSES for j in found.data),
        server_url=_server_url(request),
        crumbs=[(project, f"/projects/{project}"), ("Jobs", None)],
        **_common(),
    )


# -- one job ----------------------------------------------------------------------------------


def _run_of(request: Request, project: str, job: Job) -> RunPublic | None:
    if not job.run_id:
        return None
    try:
        return _tracking(request).get_run(project, job.run_id)
    except NotFound:
        return None


def chart_data(request: Request, project: str, job: Job) -> dict[str, Any]:
    """The run's metric histories for the job page's charts: the user's metrics (each on its
    own chart) and the resource profile (``profile/...``, grouped by resource)."""
    run = _run_of(request, project, job)
    metrics: dict[str, Any] = {}
    profile: dict[str, Any] = {}
    if run is not None:
        svc = _tracking(request)
        for key in sorted(run.metrics):
            if key.startswith(views.SYSTEM_PREFIX):
                continue
            h = views.thin(svc.get_metric_history(project, run.id, key))
            if key.startswith(PROFILE_PREFIX):
                profile[key[len(PROFILE_PREFIX) :]] = h
            else:
                metrics[key] = h
    return {
        "status": job.status.value,
        "final": job.status.final,
        "attempt": job.attempt,
        "attempts": job.attempts,
        "runtime_s": job.runtime_s,
        "metrics": metrics,
        "profile": profile,
        "profile_charts": [
            {"id": cid, "title": title, "unit": unit, "series": [list(s) for s in series]}
            for cid, title, unit, series in PROFILE_CHARTS
        ],
        "color": views.PALETTE[0],
        "palette": views.PALETTE,
    }


def _findings(job: Job) -> list[dict[str, Any]]:
    report = job.report or {}
    found = [f for f in report.get("findings") or [] if isinstance(f, dict)]
    return sorted(found, key=lambda f: SEVERITY_ORDER.get(str(f.get("severity")), 3))


@router.get("/projects/{project}/jobs/{job_id}")
def job_page(request: Request, project: str, job_id: str) -> Response:
    principal = require_viewer(request, project)
    job = _jobs(request).get(project, job_id)
    run = _run_of(request, project, job)
    data = chart_data(request, project, job)
    summary = (job.report or {}).get("summary") or {}
    tuning_name = None
    if job.tuning_job_id:
        try:
            tuning_name = request.app.state.services.tuning.get(
                project, job.tuning_job_id, with_trials=False
            ).name
        except ShipyardError:
            tuning_name = None
    base = jobs_url(project, job.id)
    return _page(
        request,
        "job.html",
        project,
        job=job,
        run=run,
        findings=_findings(job),
        summary=summary if isinstance(summary, dict) else {},
        profile_summary=summary.get("profile") if isinstance(summary, dict) else None,
        metric_keys=sorted(data["metrics"]),
        profile_charts=[c for c in PROFILE_CHARTS if any(s[0] in data["profile"] for s in c[3])],
        chart_data=data,
        live={
            "log_url": f"{base}/log",
            "charts_url": f"{base}/charts",
            "status": job.status.value,
            "final": job.status.final,
            "ranks": job.spec.instance_count > 1,
        },
        can_edit=can_edit(request, principal, project),
        notice=request.query_params.get("done", ""),
        tuning_name=tuning_name,
        model_uri=f"runs:/{job.run_id}/{job.model_artifact_path}"
        if job.run_id and job.model_artifact_path
        else None,
        crumbs=[
            (project, f"/projects/{project}"),
            ("Jobs", jobs_url(project)),
            (job.name, None),
        ],
        **_common(),
    )


@router.get("/projects/{project}/jobs/{job_id}/log")
def job_log(
    request: Request,
    project: str,
    job_id: str,
    after_seq: int = Query(default=0, ge=0),
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> Response:
    """The job's log after ``after_seq``: the REST logs endpoint's answer, for the page."""
    require_viewer(request, project)
    logs = _jobs(request).logs(project, job_id, after_seq=after_seq, limit=limit)
    return JSONResponse(logs.model_dump(mode="json"), headers={"cache-control": "no-store"})


@router.get("/projects/{project}/jobs/{job_id}/charts")
def job_charts(request: Request, project: str, job_id: str) -> Response:
    """The charts' data, refreshed by the page while the job runs."""
    require_viewer(request, project)
    job = _jobs(request).get(project, job_id)
    return JSONResponse(chart_data(request, project, job), headers={"cache-control": "no-store"})


@router.post("/projects/{project}/jobs/{job_id}/stop")
async def post_stop(request: Request, project: str, job_id: str) -> Response:
    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc != request.headers.get("host"):
        raise PermissionDenied("stop jobs from this server's own pages")
    principal = studio_principal(request)
    projects = projects_of(request)
    if auth_on(request):
        projects.authorize(principal, project, Role.editor)
    else:
        projects.project_id(project)
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    reason = (form.get("reason") or [""])[0].strip() or f"stopped from Studio by {principal.name}"
    job = _jobs(request).stop(project, job_id, reason=reason[:1000])
    done = "Stopped" if job.status == JobStatus.stopped else "Stop requested"
    if job.status.final and job.status != JobStatus.stopped:
        done = f"The job had already {job.status.value}"
    return RedirectResponse(
        f"{jobs_url(project, job_id)}?{urlencode({'done': done})}", status_code=303
    )

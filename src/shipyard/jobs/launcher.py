"""What runs inside a job's process: ``run_job``, the executor task of one attempt of one rank.

The worker submits ``TaskSpec(target="shipyard.jobs.launcher:run_job", args={...})``; this
module lays out the job's folders, stages its input channels, sets the job contract's
environment, prints one line, runs the user's code (a script, a command, a function, a pickled
function or a built-in algorithm) under a resource profiler that enforces the memory limit,
then uploads ``model/`` and ``output/`` as run artifacts and writes ``report.json``.

Folders (``job_dir`` is ``<SHIPYARD_HOME>/jobs/<job id>``, shared by every attempt)::

    <job_dir>/attempt-<n>/rank-<r>/input/<channel>/   SHIPYARD_CHANNEL_<CHANNEL>
    <job_dir>/attempt-<n>/rank-<r>/model/             SHIPYARD_MODEL_DIR   -> run artifacts model/
    <job_dir>/attempt-<n>/rank-<r>/output/            SHIPYARD_OUTPUT_DIR  -> run artifacts output/
    <job_dir>/attempt-<n>/rank-<r>/hyperparameters.json   SHIPYARD_HYPERPARAMETERS
    <job_dir>/attempt-<n>/rank-<r>/report.json        also the run artifact report.json
    <job_dir>/checkpoints/rank-<r>/                   SHIPYARD_CHECKPOINT_DIR (kept across attempts)

Nothing is printed before the user's code starts but one line, ``shipyard: starting <entry>
(attempt n, rank r/world)``, and nothing slow happens before it either: this module imports
only the standard library at import time (it is preloaded by the executor's fork server), the
tracking client is made in the background, and heavy libraries load only for what needs them.
Its parts: ``channels`` (staging the inputs), ``run_tracking`` (the launcher's client and
metric buffer), ``model_dir`` (what ``model/`` holds, and its manifest).

The user's failure is reported as theirs (the error boundary): their exception is re-raised
with their traceback after the report is written; a script's ``sys.exit(n)`` or a command's
exit status becomes ``UserCodeFailed``; going over ``resources.memory_gb`` becomes
``MemoryLimitExceeded``. A stop or a timeout (SIGTERM from the executor) still writes the
report, within the executor's grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument
from shipyard.jobs.algorithms import ALGORITHMS  # names only: the module imports no library
from shipyard.jobs.channels import channel_env_name, stage_channel
from shipyard.jobs.handoff import MAX_ROWS as HANDOFF_MAX_ROWS
from shipyard.jobs.handoff import pack as pack_handoff
from shipyard.jobs.handoff import report_artifact, report_text
from shipyard.jobs.model_dir import ensure_manifest, folder_stats
from shipyard.jobs.run_tracking import JobTracking

# After the memory limit interrupts user code running in this process, how long it has to
# unwind before the process is killed outright.
MEMORY_KILL_GRACE_S = 5.0
DEFAULT_MASTER_PORT = 29500
# What an executor's fork server should import once so that a job's process starts with them:
# this module, the profiler, the in-process tracking backend and what its first statements
# import lazily (the SQLite driver, both dialects' INSERT ... ON CONFLICT).
PRELOAD = (
    "shipyard.jobs.launcher",
    "shipyard.jobs.profile",
    "shipyard.sdk.local",
    "sqlite3",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql",
    "statistics",
    "psutil",
)
_CHANNEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class UserCodeFailed(Exception):
    """The job's code failed without an exception of its own: a script's ``sys.exit(n)`` with
    n != 0, or a command's non-zero exit status."""


class MemoryLimitExceeded(UserCodeFailed):
    """The job's processes went over ``resources.memory_gb`` and were stopped."""


class JobFinishFailed(Exception):
    """The user's code succeeded but its results could not be kept (uploading ``model/`` or
    the report failed): the attempt fails, so that a retry can keep them."""


class _MemoryInterrupt(BaseException):
    """Raised in the main thread by the profiler's signal: not an ``Exception``, so a script's
    ``except Exception`` does not swallow it."""


class _Stopped(SystemExit):
    """SIGTERM from the executor (a stop request or ``max_runtime_s``)."""


# -- the spec -----------------------------------------------------------------------------------


@dataclass
class _Spec:
    kind: str  # script | command | function | pickle | algorithm
    entry: str  # what the "starting" line names
    script: str | None = None
    command: list[str] | None = None
    function: str | None = None
    function_pickle: str | None = None
    algorithm: str | None = None
    source_dir: Path | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    cpus: float = 1
    memory_gb: float | None = None
    gpus: int = 0
    # The worker logs metrics it parses from the log (metric_definitions): not this process.
    parsed_metrics: bool = False

    @classmethod
    def parse(cls, spec: dict[str, Any] | str) -> _Spec:
        d = json.loads(spec) if isinstance(spec, str) else dict(spec)
        if not isinstance(d, dict):
            raise InvalidArgument.for_field("spec", "expected the job's spec as a JSON object")
        src = d.get("source_dir")
        source_dir = Path(src).expanduser().resolve() if src else None
        hps = d.get("hyperparameters") or {}
        if not isinstance(hps, dict):
            raise InvalidArgument.for_field("hyperparameters", "expected an object")
        inputs = d.get("inputs") or {}
        if not isinstance(inputs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()
        ):
            raise InvalidArgument.for_field("inputs", "expected {channel name: path or URI}")
        for name in inputs:
            if not _CHANNEL_RE.match(name):
                raise InvalidArgument.for_field(
                    f"inputs.{name}",
                    "a channel name is 1 to 64 letters, digits, '_', '-' or '.', "
                    "starting with a letter or digit",
                )
        res = d.get("resources") or {}
        common: dict[str, Any] = {
            "source_dir": source_dir,
            "hyperparameters": dict(hps),
            "inputs": dict(inputs),
            "cpus": res.get("cpus") or 1,
            "memory_gb": res.get("memory_gb"),
            "gpus": res.get("gpus") or 0,
            "parsed_metrics": bool(d.get("metric_definitions")),
        }
        entry, fn, pickled, algo = (
            d.get("entry_point"),
            d.get("function"),
            d.get("function_pickle"),
            d.get("algorithm"),
        )
        given = [k for k, v in (("entry_point", entry), ("function", fn), ("algorithm", algo)) if v]
        if pickled and not fn:
            given.append("function_pickle")
        if len(given) != 1:
            raise InvalidArgument.for_field(
                "entry_point",
                "give exactly one of entry_point, function (or function_pickle) or algorithm",
                given=given,
            )
        if isinstance(entry, list):
            if not entry or not all(isinstance(a, str) for a in entry):
                raise InvalidArgument.for_field("entry_point", "expected a non-empty argv list")
            return cls("command", " ".join(entry), command=list(entry), **common)
        if isinstance(entry, str):
            return cls("script", entry, script=entry, **common)
        if pickled:
            name = fn if isinstance(fn, str) and fn else "<pickled function>"
            return cls("pickle", name, function_pickle=pickled, **common)
        if fn:
            return cls("function", fn, function=fn, **common)
        if algo not in ALGORITHMS:
            raise InvalidArgument.for_field(
                "algorithm", f"unknown algorithm {algo!r}; expected one of {', '.join(ALGORITHMS)}"
            )
        return cls("algorithm", f"algorithm {algo}", algorithm=algo, **common)


def cli_args(hyperparameters: dict[str, Any]) -> list[str]:
    """``["--key", "value", ...]``: strings as they are, anything else as JSON (``true``, ``3``)."""
    out: list[str] = []
    for k, v in hyperparameters.items():
        out += [f"--{k}", v if isinstance(v, str) else json.dumps(v)]
    return out


# -- killing ------------------------------------------------------------------------------------


def _kill_descendants() -> None:
    import psutil

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()


# -- run_job ------------------------------------------------------------------------------------


class _Launch:
    def __init__(
        self,
        *,
        job_id: str,
        run_id: str,
        project: str,
        attempt: int,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        spec: _Spec,
        job_dir: Path,
        handoff: bool = False,
    ) -> None:
        self.job_id = job_id
        self.run_id = run_id
        self.project = project
        self.attempt = attempt
        self.rank = rank
        self.world_size = world_size
        self.master_addr = master_addr
        self.master_port = master_port
        self.spec = spec
        self.job_dir = job_dir
        self.handoff = handoff
        self.rank_dir = job_dir / f"attempt-{attempt}" / f"rank-{rank}"
        self.input_dir = self.rank_dir / "input"
        self.model_dir = self.rank_dir / "model"
        self.output_dir = self.rank_dir / "output"
        self.checkpoint_dir = job_dir / "checkpoints" / f"rank-{rank}"
        self.hp_path = self.rank_dir / "hyperparameters.json"
        # The working directory: source_dir; else an absolute script's folder; else the rank's.
        if spec.source_dir is not None:
            self.workdir = spec.source_dir
        elif spec.script is not None and Path(spec.script).is_absolute():
            self.workdir = Path(spec.script).parent
        else:
            self.workdir = self.rank_dir
        self.channels: dict[str, Path] = {}
        self.tracking = JobTracking(project, run_id)
        self.profiler: Any = None
        self.memory_reason: str | None = None
        self.in_process = spec.kind != "command"
        self.user_running = False
        self.started_at = time.time()
        self.value: Any = None
        self.problems: list[str] = []

    # -- before the user's code ----------------------------------------------------------------

    def prepare(self) -> None:
        for d in (self.model_dir, self.output_dir):
            if d.exists():  # the same attempt launched again: start clean
                shutil.rmtree(d)
            d.mkdir(parents=True)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for name, src in self.spec.inputs.items():
            dest = self.input_dir / name
            stage_channel(name, src, dest, self.workdir)
            self.channels[name] = dest
        self.input_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.hp_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.spec.hyperparameters, indent=2), encoding="utf-8")
        os.replace(tmp, self.hp_path)
        os.environ.update(self.environment())

    def environment(self) -> dict[str, str]:
        """The job contract's environment variables, with the usual and SageMaker's aliases."""
        names = sorted(self.channels)
        env = {
            "SHIPYARD_JOB_ID": self.job_id,
            "SHIPYARD_RUN_ID": self.run_id,
            "SHIPYARD_PROJECT": self.project,
            "SHIPYARD_ATTEMPT": str(self.attempt),
            "SHIPYARD_RANK": str(self.rank),
            "SHIPYARD_WORLD_SIZE": str(self.world_size),
            "SHIPYARD_MASTER_ADDR": self.master_addr,
            "SHIPYARD_MASTER_PORT": str(self.master_port),
            "SHIPYARD_INPUT_DIR": str(self.input_dir),
            "SHIPYARD_CHANNELS": json.dumps(names),
            "SHIPYARD_MODEL_DIR": str(self.model_dir),
            "SHIPYARD_OUTPUT_DIR": str(self.output_dir),
            "SHIPYARD_CHECKPOINT_DIR": str(self.checkpoint_dir),
            "SHIPYARD_HYPERPARAMETERS": str(self.hp_path),
            # What torch.distributed's env:// rendezvous (and most launchers) read.
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            # SageMaker's training-toolkit names, so its scripts run unchanged.
            "SM_MODEL_DIR": str(self.model_dir),
            "SM_OUTPUT_DATA_DIR": str(self.output_dir),
            "SM_CHANNELS": json.dumps(names),
            "SM_HPS": json.dumps(self.spec.hyperparameters),
            "SM_NUM_CPUS": str(int(self.spec.cpus)),
            "SM_NUM_GPUS": str(int(self.spec.gpus)),
            "SM_CURRENT_HOST": f"algo-{self.rank + 1}",
            "SM_HOSTS": json.dumps([f"algo-{i + 1}" for i in range(self.world_size)]),
        }
        for name, path in self.channels.items():
            env[f"SHIPYARD_CHANNEL_{channel_env_name(name)}"] = str(path)
            env[f"SM_CHANNEL_{channel_env_name(name)}"] = str(path)
        return env

    def start_profiler(self) -> None:
        from shipyard.core.executors import rss_at_fork
        from shipyard.jobs.profile import METRIC_PREFIX, Profiler

        limit = self.spec.memory_gb
        prefix = METRIC_PREFIX if self.rank == 0 else f"{METRIC_PREFIX}rank-{self.rank}/"
        self.profiler = Profiler(
            memory_limit_bytes=int(limit * 2**30) if limit else None,
            on_sample=self.tracking.add_rows,
            on_memory_exceeded=self._on_memory_exceeded,
            metric_prefix=prefix,
            shared_at_start=rss_at_fork(),
        ).start()

    def _on_memory_exceeded(self, reason: str) -> None:
        """From the profiler's thread: stop the user's code, whichever way it runs."""
        self.memory_reason = reason
        print(f"shipyard: {reason}", file=sys.stderr, flush=True)
        _kill_descendants()
        if not self.in_process or not self.user_running:
            return
        main = threading.main_thread().ident
        if main is not None and signal.getsignal(signal.SIGUSR1) is _raise_memory_interrupt:
            signal.pthread_kill(main, signal.SIGUSR1)
        threading.Thread(target=self._kill_if_stuck, daemon=True).start()

    def _kill_if_stuck(self) -> None:
        time.sleep(MEMORY_KILL_GRACE_S)
        if not self.user_running:
            return
        # The user's code ignored the interrupt (or is stuck in native code): end the process,
        # leaving the report on disk for whoever looks.
        with contextlib.suppress(Exception):
            report = self.report("failed", MemoryLimitExceeded(self.memory_reason or ""), [])
            (self.rank_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
        print("shipyard: the job did not stop in time; killing it", file=sys.stderr, flush=True)
        os._exit(137)

    # -- the user's code -------------------------------------------------------------------------

    def run_user_code(self) -> None:
        kind = self.spec.kind
        os.chdir(self.workdir)
        src = str(self.workdir)
        if src not in sys.path:
            sys.path.insert(0, src)
        self.user_running = True
        try:
            if self.memory_reason is not None:  # over the limit before the code even started
                raise MemoryLimitExceeded(self.memory_reason)
            if kind == "script":
                self._run_script()
            elif kind == "command":
                self._run_command()
            elif kind == "function":
                self.value = self._resolve_function()(**self.spec.hyperparameters)
            elif kind == "pickle":
                self.value = self._unpickle()(**self.spec.hyperparameters)
            else:
                from shipyard.jobs import algorithms

                self.value = algorithms.train(
                    self.spec.algorithm or "",
                    self.spec.hyperparameters,
                    channels=self.channels,
                    model_dir=self.model_dir,
                    output_dir=self.output_dir,
                    log_metrics=self.tracking.log_metrics,
                    cpus=int(self.spec.cpus),
                )
        except _MemoryInterrupt:
            raise MemoryLimitExceeded(self.memory_reason or "memory limit exceeded") from None
        finally:
            self.user_running = False
            if signal.getsignal(signal.SIGUSR1) is _raise_memory_interrupt:
                # A late interrupt must not land in the launcher's own code.
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if self.memory_reason is not None:
            raise MemoryLimitExceeded(self.memory_reason)

    def _run_script(self) -> None:
        import runpy

        path = (self.workdir / (self.spec.script or "")).resolve()
        if not path.is_file():
            raise InvalidArgument.for_field(
                "entry_point", f"{self.spec.script!r} is not a file in {self.workdir}"
            )
        sys.argv = [str(path), *cli_args(self.spec.hyperparameters)]
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        try:
            runpy.run_path(str(path), run_name="__main__")
        except _Stopped:
            raise
        except SystemExit as exc:
            code = exc.code
            if code is None or code == 0:
                return
            if not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
            raise UserCodeFailed(f"{self.spec.script} exited with status {code}") from None

    def _run_command(self) -> None:
        import subprocess

        cmd = list(self.spec.command or [])
        if cmd[0] in ("python", "python3"):  # this environment's Python, where Shipyard is
            cmd[0] = sys.executable
        cmd += cli_args(self.spec.hyperparameters)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise InvalidArgument.for_field(
                "entry_point", f"cannot run {cmd[0]!r}: {exc.strerror or exc}"
            ) from None
        try:
            code = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        if self.memory_reason is not None:
            raise MemoryLimitExceeded(self.memory_reason)
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise UserCodeFailed(f"command {self.spec.command[0]!r} {how}")  # type: ignore[index]

    def _resolve_function(self) -> Callable[..., Any]:
        import importlib

        target = self.spec.function or ""
        module, sep, name = target.partition(":")
        if not sep or not module or not name:
            raise InvalidArgument.for_field(
                "function", f"expected 'package.module:function', got {target!r}"
            )
        fn: Any = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
        if not callable(fn):
            raise InvalidArgument.for_field("function", f"{target} is not callable")
        return fn  # type: ignore[no-any-return]

    def _unpickle(self) -> Callable[..., Any]:
        import base64

        import cloudpickle

        try:
            fn = cloudpickle.loads(base64.b64decode(self.spec.function_pickle or ""))
        except Exception as exc:
            raise InvalidArgument.for_field(
                "function_pickle", f"cannot unpickle the function: {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(fn):
            raise InvalidArgument.for_field("function_pickle", "the pickled object is not callable")
        return fn  # type: ignore[no-any-return]

    # -- after it ------------------------------------------------------------------------------

    def finish_user_runs(self, failed: bool) -> None:
        """Flush what the user's code logged in this process, and end the runs it left open
        (never the job's run: fluent only flushes that one)."""
        fluent = sys.modules.get("shipyard.sdk.fluent")
        if fluent is None:
            return
        from shipyard.tracking.schemas import RunStatus

        fluent._at_exit(RunStatus.FAILED if failed else RunStatus.FINISHED)

    def upload(
        self, folder: Path, artifact_path: str, stats: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        n, size = stats if stats is not None else folder_stats(folder)
        info: dict[str, Any] = {"files": n, "bytes": size, "artifact_path": None}
        if n == 0 or self.rank != 0:
            return info
        self.tracking.client().log_artifact(self.run_id, folder, artifact_path)
        info["artifact_path"] = artifact_path
        return info

    def report(
        self,
        status: str,
        error: BaseException | None,
        findings: list[dict[str, Any]],
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        ended = time.time()
        summary: dict[str, Any] = {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "rank": self.rank,
            "world_size": self.world_size,
            "kind": self.spec.kind,
            "entry": self.spec.entry,
            "status": status,
            "error": None,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(ended),
            "duration_s": round(ended - self.started_at, 3),
            "profile": self.profiler.summary(self.spec.cpus) if self.profiler else None,
            **(extra or {}),
        }
        if error is not None:
            tb = "".join(traceback.format_exception(error))
            summary["error"] = {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": tb[-4000:],
            }
        return {"findings": findings, "summary": summary}

    def finish(self, status: str, error: BaseException | None) -> dict[str, Any]:
        """Upload, check the rules, write the report; return ``run_job``'s result.

        Kept short, since every job pays it. With ``handoff`` (the job worker's), an attempt
        that completed hands its last metrics (the script's and the profile's, still buffered)
        and its report back with its result, for the worker to store with how the attempt
        ended: this process, new and with no statement of the store compiled yet, would spend
        tens of milliseconds on what the worker does in a few (``handoff``; a failed or stopped
        attempt, or one with more than ``HANDOFF_MAX_ROWS`` rows, sends them from here). The rule checks
        read the metrics this process sent or handed rather than the run's histories back
        from the store (unless some came from elsewhere: a command's process, the worker's
        log parsing), and an empty ``model/`` or ``output/`` costs nothing."""
        from shipyard.jobs.profile import check_rules, finding

        if self.profiler is not None:
            self.profiler.stop()  # its last sample is in the buffer now
        for d in (self.model_dir, self.output_dir):  # absent when preparing failed early
            d.mkdir(parents=True, exist_ok=True)
        problems: list[str] = []
        done = status == "completed"
        handoff = None
        if done and self.handoff:
            handoff = self.tracking.take_for_worker(HANDOFF_MAX_ROWS)
        # Otherwise the profile's rows join the script's in the fluent buffer: one batch.
        joined = handoff is not None or self.tracking.send_with_script_metrics()
        try:
            self.finish_user_runs(failed=not done)
        except Exception as exc:
            problems.append(f"flushing the script's metrics failed: {exc}")
        extra: dict[str, Any] = {}
        findings: list[dict[str, Any]] = []
        model_stats = folder_stats(self.model_dir)
        flavor = ensure_manifest(self.model_dir) if done and model_stats[0] else None
        try:
            if done:
                extra["model"] = self.upload(self.model_dir, "model", model_stats)
            else:
                # What a failed or stopped attempt left in model/ is not a model: it stays on
                # disk, and the next attempt's model/ is the one that is logged.
                n, size = model_stats
                extra["model"] = {"files": n, "bytes": size, "artifact_path": None}
            extra["model"]["flavor"] = flavor
            extra["output"] = self.upload(self.output_dir, "output")
        except Exception as exc:
            problems.append(f"uploading model/ and output/ failed: {exc}")
        if done and extra.get("model", {}).get("files") and flavor is None:
            findings.append(
                finding(
                    "model_not_registrable",
                    "warning",
                    "model/ holds files but no Shipyard model: save it with "
                    "sy.save_model(model, os.environ['SHIPYARD_MODEL_DIR']), "
                    "or write model.txt (LightGBM), model.json (XGBoost), model.onnx or "
                    "model.skops, so that it can be registered",
                )
            )
        if self.value is not None:
            try:
                json.dumps(self.value)
                extra["return_value"] = self.value
            except (TypeError, ValueError):
                extra["return_value"] = None
        notes: list[str] = []
        if handoff is not None and problems:
            # The attempt fails (``JobFinishFailed``), and its result with it: send them now.
            try:
                self.tracking.send(handoff)
            except Exception as exc:
                problems.append(f"sending the job's last metrics failed: {exc}")
            handoff = None
        elif handoff is not None:
            self.tracking.handed(handoff)
        try:
            if not joined:
                self.tracking.flush()
        except Exception as exc:  # the profile goes without: not a reason to fail the job
            notes.append(f"sending the job's profile metrics failed: {exc}")
        try:
            if self.in_process and not self.spec.parsed_metrics and self.tracking.logged_here():
                histories = self.tracking.sent_histories()
            else:
                histories = self.tracking.histories()
        except Exception as exc:  # the rules go without: not a reason to fail the job
            histories = {}
            notes.append(f"reading the run's metrics for the rule checks failed: {exc}")
        if notes:
            extra["notes"] = notes
        summary_profile = self.profiler.summary(self.spec.cpus) if self.profiler else {}
        findings = (
            check_rules(summary_profile, histories, memory_exceeded=self.memory_reason) + findings
        )
        report = self.report(status, error, findings, extra)
        if problems:
            report["summary"]["problems"] = problems
        (self.rank_dir / "report.json").write_text(report_text(report), encoding="utf-8")
        if handoff is None:
            try:
                self.tracking.client().log_artifact(
                    self.run_id, self.rank_dir / "report.json", report_artifact(self.rank)
                )
            except Exception as exc:
                problems.append(f"uploading report.json failed: {exc}")
        self.tracking.close()
        for f in findings:
            print(f"shipyard: {f['severity']}: {f['message']}", file=sys.stderr, flush=True)
        self.problems += problems
        model_path = extra.get("model", {}).get("artifact_path")
        result: dict[str, Any] = {"report": report, "model_artifact_path": model_path}
        if "return_value" in extra:
            result["value"] = extra["return_value"]
        if handoff is not None:  # for the worker to store (``handoff.store``)
            result["handoff"] = pack_handoff(handoff, self.rank)
        return result


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _raise_memory_interrupt(signum: int, frame: Any) -> None:
    raise _MemoryInterrupt()


def _raise_stopped(signum: int, frame: Any) -> None:
    raise _Stopped(143)


def run_job(
    *,
    job_id: str,
    run_id: str,
    project: str,
    spec: dict[str, Any] | str,
    job_dir: str,
    attempt: int = 1,
    rank: int = 0,
    world_size: int = 1,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    handoff: bool = False,
    **_ignored: Any,
) -> dict[str, Any]:
    """Run one attempt of one rank of a job, in this process: an executor task's own process,
    since it sets the environment, the working directory and signal handlers, and ends the
    runs the job's code left open.

    Returns ``{"report": {"findings": [...], "summary": {...}}, "model_artifact_path": "model" |
    None}`` (and ``"value"``, a function's JSON return value). With ``handoff`` (the job
    worker's choice, which stores it) a completed attempt's last metrics and its report come
    back under ``"handoff"`` rather than being sent from here (see ``_Launch.finish``). On a
    failure of the user's code the report is written first, then the error is raised: theirs
    as it was, a non-zero exit as ``UserCodeFailed``, the memory limit as
    ``MemoryLimitExceeded``.
    """
    launch = _Launch(
        job_id=job_id,
        run_id=run_id,
        project=project,
        attempt=int(attempt),
        rank=int(rank),
        world_size=int(world_size),
        master_addr=master_addr or "127.0.0.1",
        master_port=int(master_port or DEFAULT_MASTER_PORT),
        spec=_Spec.parse(spec),
        job_dir=Path(job_dir),
        handoff=bool(handoff),
    )
    on_main = threading.current_thread() is threading.main_thread()
    saved: dict[int, Any] = {}
    if on_main:
        saved[signal.SIGTERM] = signal.signal(signal.SIGTERM, _raise_stopped)
        saved[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, _raise_memory_interrupt)
    error: BaseException | None = None
    status = "completed"
    try:
        try:
            launch.prepare()
            launch.start_profiler()
            print(
                f"shipyard: starting {launch.spec.entry} (attempt {launch.attempt}, "
                f"rank {launch.rank}/{launch.world_size})",
                flush=True,
            )
            if launch.in_process:
                launch.tracking.share_with_script()
            launch.run_user_code()
        except _Stopped as exc:
            status, error = "stopped", exc
        except BaseException as exc:  # the error boundary: reported, then raised again below
            status, error = "failed", exc
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        if on_main:
            # A stop that comes now waits for the report and the uploads: the executor kills
            # the process anyway once its grace period is over.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        result = launch.finish(status, error)
    finally:
        for sig, handler in saved.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, handler)
    if error is not None:
        raise error
    if launch.problems:
        raise JobFinishFailed("; ".join(launch.problems))
    return result

"""A job's resource profile, its memory limit, and the rule checks that read it.

``Profiler`` samples the job's process tree (the task process and every process it started)
from a thread, every ``SAMPLE_INTERVAL_S``:

- CPU: the tree's CPU time over the interval, in percent of one CPU (200 = two busy CPUs);
- memory: the tree's private memory (what its processes alone hold: their own allocations, not
  the libraries they share with the executor's fork server or other processes), summed over
  its processes, from ``/proc/<pid>/smaps_rollup``; and its resident set size (RSS), which
  counts shared pages in every process. The memory limit applies to the private memory (to RSS
  where the kernel gives no ``smaps_rollup``);
- disk: bytes the tree read from and wrote to storage (``/proc/<pid>/io``);
- network: bytes sent and received by the whole machine (psutil cannot attribute sockets' bytes
  to a process; on a shared machine this counts the neighbours' traffic too);
- GPU, where present: each device's utilization and memory in use (pynvml when installed, else
  ``nvidia-smi``), for the device, not the job.

Each sample becomes run metrics named ``profile/...`` (see ``Profiler.rows``); the caller sends
them in batches. With a memory limit, the tree's RSS is checked every
``MEMORY_CHECK_INTERVAL_S`` and ``on_memory_exceeded`` is called once, with a sentence that says
what happened, when it goes over.

``check_rules`` turns a profile and the run's metric histories into findings for the job's report:
CPU mostly idle, memory close to its limit (or over it), a loss that does not decrease, a step
much slower than the others, GPUs mostly idle. Each threshold is a named constant below.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# -- sampling ---------------------------------------------------------------------------------

SAMPLE_INTERVAL_S = 1.0
# The memory limit is checked more often than a full sample is taken: a job that allocates fast
# can go far past its limit in a second.
MEMORY_CHECK_INTERVAL_S = 0.25
METRIC_PREFIX = "profile/"

# -- rule thresholds ----------------------------------------------------------------------------

# "CPU mostly idle": the tree used on average less than this share of the CPUs the job asked
# for, over a job long enough for the average to mean something.
CPU_IDLE_FRACTION = 0.10
CPU_IDLE_MIN_DURATION_S = 30.0
# "Memory close to its limit": the peak RSS reached this share of resources.memory_gb.
MEMORY_NEAR_LIMIT_FRACTION = 0.90
# "Loss not decreasing": a metric named like a loss, with at least this many points, whose last
# quarter is not at least LOSS_MIN_IMPROVEMENT (relative) below its first quarter.
LOSS_MIN_POINTS = 5
LOSS_MIN_IMPROVEMENT = 0.01
# "A step slower than the others": the steps' wall times come from when a per-step metric was
# logged; one step taking SLOW_STEP_FACTOR times the median step, and at least SLOW_STEP_MIN_S.
SLOW_STEP_MIN_STEPS = 5
SLOW_STEP_FACTOR = 3.0
SLOW_STEP_MIN_S = 1.0
# "GPUs mostly idle": mean utilization below this percent over CPU_IDLE_MIN_DURATION_S or more.
GPU_IDLE_PERCENT = 10.0

# Names that say "lower is better, and it should go down while training".
LOSS_NAME_PARTS = ("loss",)
LOSS_NAME_LAST_SEGMENTS = ("rmse", "mse", "mae", "l1", "l2")


@dataclass
class Sample:
    t: float  # seconds since the epoch
    cpu_percent: float  # of one CPU
    memory_bytes: int  # private (unique) memory of the tree
    rss_bytes: int
    disk_read_bytes: int  # cumulative since the profiler started
    disk_write_bytes: int
    net_sent_bytes: int  # cumulative, machine-wide
    net_recv_bytes: int
    processes: int
    gpus: list[tuple[float, float]] = field(default_factory=list)  # (util %, memory bytes)


def _gpu_reader() -> Callable[[], list[tuple[float, float]]] | None:
    """A function that reads every GPU's (utilization %, memory bytes), or None without GPUs."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

        def read_nvml() -> list[tuple[float, float]]:
            out = []
            for h in handles:
                util = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
                mem = pynvml.nvmlDeviceGetMemoryInfo(h).used
                out.append((float(util), float(mem)))
            return out

        read_nvml()
        return read_nvml if handles else None
    except Exception:
        pass
    if shutil.which("nvidia-smi") is None:
        return None

    def read_smi() -> list[tuple[float, float]]:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        rows = []
        for line in out.strip().splitlines():
            util, mem_mb = (float(x) for x in line.split(","))
            rows.append((util, mem_mb * 2**20))
        return rows

    try:
        return read_smi if read_smi() else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


class Profiler:
    """Samples the process tree rooted at ``pid`` (default: this process) from a thread.

    ``on_sample(rows)`` receives each sample's metric rows (called from the profiler's thread;
    keep it fast, e.g. append to a ``MetricBuffer``). ``on_memory_exceeded(reason)`` is called
    once, from the same thread, when the tree's RSS goes over ``memory_limit_bytes``.
    """

    def __init__(
        self,
        pid: int | None = None,
        *,
        interval_s: float = SAMPLE_INTERVAL_S,
        memory_limit_bytes: int | None = None,
        on_sample: Callable[[list[tuple[str, float | None, int, int]]], None] | None = None,
        on_memory_exceeded: Callable[[str], None] | None = None,
        metric_prefix: str = METRIC_PREFIX,
        gpus: bool = True,
        shared_at_start: int | None = None,
    ) -> None:
        self.pid = pid or os.getpid()
        # The root's resident bytes at start that it shares with the process it was forked
        # from (a fork server's image): with it, a job that ends before its first periodic
        # sample reads the root's memory as its RSS beyond that (pages copied on write not
        # counted), not from the kernel's walk of every page (about 5 ms at stop for a process
        # forked from a fork server holding pandas and scikit-learn).
        self.shared_at_start = shared_at_start
        self.interval_s = interval_s
        self.memory_limit_bytes = memory_limit_bytes
        self.on_sample = on_sample
        self.on_memory_exceeded = on_memory_exceeded
        self.prefix = metric_prefix
        self.samples: list[Sample] = []
        self.peak_memory_bytes = 0
        self.peak_rss_bytes = 0
        self.exceeded: str | None = None  # why the memory limit was enforced
        self.started_at = time.time()
        self.stopped_at: float | None = None
        self._want_gpus = gpus
        self._gpu: Callable[[], list[tuple[float, float]]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Per process (pid, create time): the last (cpu seconds, read bytes, write bytes) seen.
        self._last: dict[tuple[int, float], tuple[float, int, int]] = {}
        self._procs: list[Any] = []
        self._cum_read = 0
        self._cpu_seconds = 0.0
        self._cum_write = 0
        self._net0: tuple[int, int] | None = None
        self._last_t = 0.0
        self._errors = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Profiler:
        self._thread = threading.Thread(target=self._loop, name="shipyard-profile", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling, after one last sample (so even a short job has a profile)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 10)
        if self.stopped_at is None:
            self.stopped_at = time.time()

    def _loop(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        self._prime(root)
        tick = MEMORY_CHECK_INTERVAL_S if self.memory_limit_bytes else self.interval_s
        next_sample = time.monotonic() + self.interval_s
        while not self._stop.wait(tick):
            if time.monotonic() >= next_sample:
                next_sample += self.interval_s
                if self._want_gpus:
                    # Looked for at the first periodic sample, not at start: asking the driver
                    # can take a tenth of a second, which a job shorter than a sample (whose
                    # stop waits for this thread) should not pay.
                    self._want_gpus = False
                    self._gpu = _gpu_reader()
                self._sample_and_emit(root)
            elif self.memory_limit_bytes:
                self._check_memory(self._memory(root))
        self._sample_and_emit(root, last=True)  # the last one, at stop

    # -- reading the tree ------------------------------------------------------------------

    def _tree(self, root: Any) -> list[Any]:
        import psutil

        pids = _descendant_pids(root.pid)
        if pids is None:  # no /proc/<pid>/task/<tid>/children: psutil scans every process
            try:
                return [root, *root.children(recursive=True)]
            except psutil.Error:
                return []
        if not root.is_running():
            return []
        known = {p.pid: p for p in self._procs}
        out = [root]
        for pid in pids:
            proc = known.get(pid)
            if proc is None:
                try:
                    proc = psutil.Process(pid)
                except psutil.Error:
                    continue
            out.append(proc)
        return out

    def _memory(self, root: Any) -> int:
        """The tree's private memory, between full samples: over the processes the last
        sample found (listing a tree scans every process on the machine; a new child is
        counted from the next full sample on)."""
        import psutil

        total = 0
        for p in self._procs or [root]:
            with contextlib.suppress(psutil.Error):
                total += _private_bytes(p.pid, p.memory_info().rss)
        return total

    def _prime(self, root: Any) -> None:
        import psutil

        self._last_t = time.monotonic()
        net = psutil.net_io_counters()
        self._net0 = (net.bytes_sent, net.bytes_recv) if net is not None else (0, 0)
        for p in self._tree(root):
            self._read_proc(p, private=False)

    def _read_proc(self, p: Any, private: bool = True) -> tuple[float, int, int, int, int] | None:
        """(cpu seconds delta, read delta, write delta, rss, private memory) of one process
        since it was last seen. ``private=False`` (the counters' starting point, which needs
        no memory) skips the private memory: the kernel walks every page of the process for
        it, about 8 ms for a job forked from a fork server holding pandas and scikit-learn,
        which a job shorter than a sample pays when it stops (``stop`` waits for it)."""
        import psutil

        try:
            with p.oneshot():
                key = (p.pid, p.create_time())
                ct = p.cpu_times()
                cpu = ct.user + ct.system
                try:
                    io = p.io_counters()
                    rd, wr = int(io.read_bytes), int(io.write_bytes)
                except (psutil.AccessDenied, AttributeError, NotImplementedError):
                    rd, wr = 0, 0
                rss = int(p.memory_info().rss)
        except psutil.Error:
            return None
        mem = _private_bytes(p.pid, rss) if private else rss
        prev = self._last.get(key, (0.0, 0, 0))
        self._last[key] = (cpu, rd, wr)
        return max(0.0, cpu - prev[0]), max(0, rd - prev[1]), max(0, wr - prev[2]), rss, mem

    def sample(self, root: Any, last: bool = False) -> Sample:
        import psutil

        shared = self.shared_at_start if last and not self.samples else None
        now = time.monotonic()
        dt = max(1e-6, now - self._last_t)
        self._last_t = now
        cpu_s = 0.0
        rss = 0
        private = 0
        n = 0
        seen = set()
        self._procs = self._tree(root)
        for p in self._procs:
            quick = shared is not None and p.pid == root.pid
            got = self._read_proc(p, private=not quick)
            if got is None:
                continue
            if quick and shared is not None:
                got = (*got[:4], max(0, got[3] - shared))
            seen.add(p.pid)
            n += 1
            cpu_s += got[0]
            self._cum_read += got[1]
            self._cum_write += got[2]
            rss += got[3]
            private += got[4]
        self._cpu_seconds += cpu_s
        # Forget processes that are gone, so the table does not grow with every child started.
        self._last = {k: v for k, v in self._last.items() if k[0] in seen}
        net = psutil.net_io_counters()
        base = self._net0 or (0, 0)
        sent = max(0, net.bytes_sent - base[0]) if net is not None else 0
        recv = max(0, net.bytes_recv - base[1]) if net is not None else 0
        gpus: list[tuple[float, float]] = []
        if self._gpu is not None:
            try:
                gpus = self._gpu()
            except Exception:
                self._gpu = None  # a driver that went away: stop asking
        return Sample(
            t=time.time(),
            cpu_percent=100.0 * cpu_s / dt,
            memory_bytes=private,
            rss_bytes=rss,
            disk_read_bytes=self._cum_read,
            disk_write_bytes=self._cum_write,
            net_sent_bytes=sent,
            net_recv_bytes=recv,
            processes=n,
            gpus=gpus,
        )

    def _sample_and_emit(self, root: Any, last: bool = False) -> None:
        try:
            s = self.sample(root, last)
        except Exception:  # sampling must never take the job down
            self._errors += 1
            return
        with self._lock:
            prev = self.samples[-1] if self.samples else None
            self.samples.append(s)
            step = len(self.samples) - 1
        self.peak_rss_bytes = max(self.peak_rss_bytes, s.rss_bytes)
        self._check_memory(s.memory_bytes)
        if self.on_sample is not None:
            with contextlib.suppress(Exception):
                self.on_sample(self.rows(s, step, prev))

    def _check_memory(self, used: int) -> None:
        self.peak_memory_bytes = max(self.peak_memory_bytes, used)
        limit = self.memory_limit_bytes
        if limit is None or used <= limit or self.exceeded is not None:
            return
        self.exceeded = (
            f"memory limit exceeded: the job's processes used {_gb(used)} of memory, "
            f"above its limit of {_gb(limit)} (resources.memory_gb); the job was stopped"
        )
        if self.on_memory_exceeded is not None:
            self.on_memory_exceeded(self.exceeded)

    # -- output ----------------------------------------------------------------------------

    def rows(
        self, s: Sample, step: int, prev: Sample | None = None
    ) -> list[tuple[str, float | None, int, int]]:
        """The metric rows of one sample: (key, value, step, timestamp ms)."""
        ts = int(s.t * 1000)
        dt = max(1e-6, s.t - prev.t) if prev is not None else max(1e-6, s.t - self.started_at)
        p = self.prefix

        def rate(now: int, before: int | None) -> float:
            return max(0, now - (before or 0)) / dt

        values: list[tuple[str, float]] = [
            (f"{p}cpu_percent", s.cpu_percent),
            (f"{p}memory_bytes", float(s.memory_bytes)),
            (f"{p}memory_rss_bytes", float(s.rss_bytes)),
            (
                f"{p}disk_read_bytes_per_s",
                rate(s.disk_read_bytes, prev.disk_read_bytes if prev else None),
            ),
            (
                f"{p}disk_write_bytes_per_s",
                rate(s.disk_write_bytes, prev.disk_write_bytes if prev else None),
            ),
            (
                f"{p}network_sent_bytes_per_s",
                rate(s.net_sent_bytes, prev.net_sent_bytes if prev else None),
            ),
            (
                f"{p}network_recv_bytes_per_s",
                rate(s.net_recv_bytes, prev.net_recv_bytes if prev else None),
            ),
            (f"{p}processes", float(s.processes)),
        ]
        for i, (util, mem) in enumerate(s.gpus):
            values += [(f"{p}gpu_{i}_utilization_percent", util), (f"{p}gpu_{i}_memory_bytes", mem)]
        return [(k, float(v), step, ts) for k, v in values]

    def summary(self, cpus: float | None = None) -> dict[str, Any]:
        """Totals and means over the job's life, for the report."""
        with self._lock:
            samples = list(self.samples)
        end = self.stopped_at or time.time()
        out: dict[str, Any] = {
            "duration_s": round(end - self.started_at, 3),
            "samples": len(samples),
            "interval_s": self.interval_s,
            "cpus": cpus,
            "cpu_seconds": round(self._cpu_seconds, 3),
            "cpu_percent_mean": None,
            "cpu_percent_max": None,
            "memory_peak_bytes": self.peak_memory_bytes,
            "memory_rss_peak_bytes": self.peak_rss_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
            "disk_read_bytes": samples[-1].disk_read_bytes if samples else 0,
            "disk_write_bytes": samples[-1].disk_write_bytes if samples else 0,
            # Machine-wide: psutil cannot attribute network bytes to a process.
            "network_sent_bytes": samples[-1].net_sent_bytes if samples else 0,
            "network_recv_bytes": samples[-1].net_recv_bytes if samples else 0,
            "network_scope": "machine",
            "gpus": [],
        }
        if samples:
            cpu = [s.cpu_percent for s in samples]
            out["cpu_percent_mean"] = round(statistics.fmean(cpu), 2)
            out["cpu_percent_max"] = round(max(cpu), 2)
        n_gpus = max((len(s.gpus) for s in samples), default=0)
        for i in range(n_gpus):
            vals = [s.gpus[i] for s in samples if len(s.gpus) > i]
            out["gpus"].append(
                {
                    "index": i,
                    "utilization_percent_mean": round(statistics.fmean(v[0] for v in vals), 2),
                    "memory_peak_bytes": max(v[1] for v in vals),
                }
            )
        return out


def _descendant_pids(pid: int) -> list[int] | None:
    """Every descendant of ``pid``, from the kernel's per-thread ``children`` lists: a few
    file reads, where listing a tree through psutil reads every process on the machine. None
    where the kernel has no such lists (not Linux, or built without them)."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return None
    out: list[int] = []
    todo = [pid]
    seen = {pid}
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in seen:
                    seen.add(kid)
                    out.append(kid)
                    todo.append(kid)
    return out


_PRIVATE_FIELDS = (b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:")


def _private_bytes(pid: int, rss: int) -> int:
    """The process's private memory, from the kernel's one-read summary of its mappings (a
    millisecond, where psutil's ``memory_full_info`` parses every mapping); ``rss`` where
    there is no ``/proc/<pid>/smaps_rollup`` (not Linux, or a kernel before 4.14)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            data = f.read()
    except OSError:
        return rss
    total = 0
    for line in data.splitlines():
        if line.startswith(_PRIVATE_FIELDS):
            total += int(line.split()[1]) * 1024
    return total


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


# -- rule checks ------------------------------------------------------------------------------


@dataclass
class Thresholds:
    """The rules' thresholds (the module's constants unless told otherwise)."""

    cpu_idle_fraction: float = CPU_IDLE_FRACTION
    cpu_idle_min_duration_s: float = CPU_IDLE_MIN_DURATION_S
    memory_near_limit_fraction: float = MEMORY_NEAR_LIMIT_FRACTION
    loss_min_points: int = LOSS_MIN_POINTS
    loss_min_improvement: float = LOSS_MIN_IMPROVEMENT
    slow_step_min_steps: int = SLOW_STEP_MIN_STEPS
    slow_step_factor: float = SLOW_STEP_FACTOR
    slow_step_min_s: float = SLOW_STEP_MIN_S
    gpu_idle_percent: float = GPU_IDLE_PERCENT


@dataclass
class History:
    """One metric's points, in step order: steps, values and timestamps (ms)."""

    steps: list[int]
    values: list[float | None]
    timestamps: list[int]


def finding(rule: str, severity: str, message: str, **details: Any) -> dict[str, Any]:
    return {"rule": rule, "severity": severity, "message": message, "details": details}


def is_loss_name(key: str) -> bool:
    """A metric named like a loss: "loss", "train/loss", "val_logloss", "validation/rmse"."""
    k = key.lower()
    if k.startswith(METRIC_PREFIX):
        return False
    last = k.replace("-", "/").replace("_", "/").rsplit("/", 1)[-1]
    return any(part in k for part in LOSS_NAME_PARTS) or last in LOSS_NAME_LAST_SEGMENTS


def check_rules(
    summary: Mapping[str, Any],
    histories: Mapping[str, History],
    *,
    memory_exceeded: str | None = None,
    thresholds: Thresholds | None = None,
) -> list[dict[str, Any]]:
    """Findings for a job's report, from ``Profiler.summary`` and the run's metric histories."""
    th = thresholds or Thresholds()
    out: list[dict[str, Any]] = []
    out += _memory_rules(summary, memory_exceeded, th)
    out += _cpu_rule(summary, th)
    out += _gpu_rule(summary, th)
    for key in sorted(histories):
        if is_loss_name(key):
            out += _loss_rule(key, histories[key], th)
    out += _slow_step_rule(histories, th)
    return out


def _memory_rules(
    summary: Mapping[str, Any], exceeded: str | None, th: Thresholds
) -> list[dict[str, Any]]:
    limit = summary.get("memory_limit_bytes")
    peak = int(summary.get("memory_peak_bytes") or 0)
    if exceeded:
        return [
            finding(
                "memory_limit_exceeded",
                "error",
                exceeded,
                peak_bytes=peak,
                limit_bytes=limit,
            )
        ]
    if limit and peak >= th.memory_near_limit_fraction * limit:
        return [
            finding(
                "memory_near_limit",
                "warning",
                f"memory close to its limit: the job's peak memory was {_gb(peak)}, "
                f"{100 * peak / limit:.0f}% of its limit of {_gb(limit)}; raise "
                "resources.memory_gb before the data grows",
                peak_bytes=peak,
                limit_bytes=limit,
                fraction=round(peak / limit, 3),
                threshold=th.memory_near_limit_fraction,
            )
        ]
    return []


def _cpu_rule(summary: Mapping[str, Any], th: Thresholds) -> list[dict[str, Any]]:
    mean = summary.get("cpu_percent_mean")
    cpus = summary.get("cpus") or 1
    duration = float(summary.get("duration_s") or 0)
    if mean is None or duration < th.cpu_idle_min_duration_s:
        return []
    used = float(mean) / (100.0 * float(cpus))
    if used >= th.cpu_idle_fraction:
        return []
    return [
        finding(
            "cpu_idle",
            "warning",
            f"CPU mostly idle: the job used {used:.0%} of the {cpus:g} CPU(s) it asked for on "
            f"average over {duration:.0f} s; it may be waiting on I/O or the network, or it "
            "asked for more CPUs than it uses",
            cpu_percent_mean=mean,
            cpus=cpus,
            fraction=round(used, 4),
            threshold=th.cpu_idle_fraction,
        )
    ]


def _gpu_rule(summary: Mapping[str, Any], th: Thresholds) -> list[dict[str, Any]]:
    duration = float(summary.get("duration_s") or 0)
    if duration < th.cpu_idle_min_duration_s:
        return []
    out = []
    for g in summary.get("gpus") or []:
        util = float(g.get("utilization_percent_mean") or 0.0)
        if util < th.gpu_idle_percent:
            out.append(
                finding(
                    "gpu_idle",
                    "warning",
                    f"GPU {g.get('index')} mostly idle: {util:.0f}% utilization on average; "
                    "the job may be bound by data loading or run on the CPU",
                    index=g.get("index"),
                    utilization_percent_mean=util,
                    threshold=th.gpu_idle_percent,
                )
            )
    return out


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _loss_rule(key: str, h: History, th: Thresholds) -> list[dict[str, Any]]:
    values = _finite(h.values)
    if len(values) < th.loss_min_points:
        return []
    q = max(1, len(values) // 4)
    first = statistics.fmean(values[:q])
    last = statistics.fmean(values[-q:])
    if last <= first - th.loss_min_improvement * abs(first):
        return []
    return [
        finding(
            "loss_not_decreasing",
            "warning",
            f"loss not decreasing: {key!r} averaged {first:.4g} over its first {q} points and "
            f"{last:.4g} over its last {q}; check the learning rate, the labels and the data",
            metric=key,
            first_mean=first,
            last_mean=last,
            points=len(values),
            min_improvement=th.loss_min_improvement,
        )
    ]


def _slow_step_rule(histories: Mapping[str, History], th: Thresholds) -> list[dict[str, Any]]:
    # The step clock: the non-profile metric with the most distinct steps.
    best: tuple[int, str] | None = None
    for key, h in histories.items():
        if key.startswith(METRIC_PREFIX):
            continue
        n = len(set(h.steps))
        if n >= th.slow_step_min_steps + 1 and (best is None or (n, key) > best):
            best = (n, key)
    if best is None:
        return []
    key = best[1]
    h = histories[key]
    first_seen: dict[int, int] = {}
    for step, ts in zip(h.steps, h.timestamps, strict=False):
        first_seen.setdefault(step, ts)
    steps = sorted(first_seen)
    # Step i's duration: from when step i-1 was logged to when step i was.
    durations = [
        (steps[i], (first_seen[steps[i]] - first_seen[steps[i - 1]]) / 1000.0)
        for i in range(1, len(steps))
    ]
    if len(durations) < th.slow_step_min_steps:
        return []
    median = statistics.median(d for _, d in durations)
    step, worst = max(durations, key=lambda x: x[1])
    if worst < th.slow_step_min_s or worst < th.slow_step_factor * max(median, 1e-9):
        return []
    return [
        finding(
            "slow_step",
            "warning",
            f"a step slower than the others: step {step} took {worst:.2f} s against a median "
            f"of {median:.2f} s (timed from metric {key!r}); look for a stall such as a "
            "checkpoint, a data reload or another job on the machine",
            metric=key,
            step=step,
            duration_s=round(worst, 3),
            median_s=round(median, 3),
            factor=th.slow_step_factor,
        )
    ]

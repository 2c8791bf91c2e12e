"""The resource profiler and the rule checks.

The profiler watches real processes: a busy one shows its CPU, one that allocates shows its
memory (and trips a limit), one that writes shows its disk bytes. The rules are checked on
profiles and metric histories shaped as a job leaves them, with each threshold at work on both
sides; and, end to end, a job whose loss is flat and one of whose steps stalls gets both
findings in its report.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.core.executors import LocalExecutor, TaskState
from shipyard.jobs import profile
from shipyard.jobs.launcher import PRELOAD
from shipyard.jobs.profile import History, Profiler, Thresholds, check_rules, is_loss_name
from tests.jobs.runtime_helpers import JobHarness, make_job


def spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)])


def test_the_profile_shows_cpu_memory_and_disk_of_the_process_tree(tmp_path: Path) -> None:
    # A parent that starts a busy child: the child's work is the job's too.
    target = tmp_path / "blob.bin"
    spent = tmp_path / "spent.txt"
    busy = (
        "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass\n"
        f"open({str(spent)!r}, 'w').write(str(time.process_time()))\ntime.sleep(0.5)"
    )
    proc = spawn(
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {busy!r}])
        hold = b"x" * (120 * 2**20)
        with open({str(target)!r}, "wb") as f:
            f.write(os.urandom(16 * 2**20))
            f.flush()
            os.fsync(f.fileno())
        child.wait()
        time.sleep(0.3)
        """
    )
    rows: list[list[tuple[str, float | None, int, int]]] = []
    prof = Profiler(proc.pid, interval_s=0.25, on_sample=rows.append).start()
    proc.wait(timeout=30)
    prof.stop()

    summary = prof.summary(cpus=1)
    assert summary["samples"] >= 3
    # The child's CPU time is the job's too (the machine may be busy: compare CPU seconds).
    assert summary["cpu_seconds"] >= 0.9 * float(spent.read_text())
    assert summary["cpu_percent_max"] > 0
    assert summary["memory_peak_bytes"] > 100 * 2**20  # the parent's 120 MB are its own
    assert summary["memory_rss_peak_bytes"] >= summary["memory_peak_bytes"]
    assert summary["disk_write_bytes"] >= 16 * 2**20
    assert summary["network_scope"] == "machine"
    assert max(s.processes for s in prof.samples) == 2
    names = {r[0] for r in rows[0]}
    assert {
        "profile/cpu_percent",
        "profile/memory_bytes",
        "profile/memory_rss_bytes",
        "profile/disk_read_bytes_per_s",
        "profile/disk_write_bytes_per_s",
        "profile/network_sent_bytes_per_s",
        "profile/network_recv_bytes_per_s",
        "profile/processes",
    } <= names
    # One step per sample, in order, with wall-clock timestamps.
    assert [r[0][2] for r in rows] == list(range(len(rows)))
    assert rows[-1][0][3] >= rows[0][0][3]


def test_going_over_the_memory_limit_is_reported_once_with_a_reason() -> None:
    proc = spawn(
        """
        import time
        hog = []
        for _ in range(60):
            hog.append(b"x" * (16 * 2**20))
            time.sleep(0.02)
        time.sleep(30)
        """
    )
    reasons: list[str] = []
    tripped = threading.Event()

    def stop(reason: str) -> None:
        reasons.append(reason)
        proc.kill()
        tripped.set()

    prof = Profiler(proc.pid, memory_limit_bytes=200 * 2**20, on_memory_exceeded=stop).start()
    try:
        assert tripped.wait(20), "the memory limit was not enforced"
        proc.wait(timeout=10)
    finally:
        proc.kill()
        prof.stop()
    assert len(reasons) == 1 and prof.exceeded == reasons[0]
    assert reasons[0].startswith("memory limit exceeded: the job's processes used ")
    assert "above its limit of 0.20 GB (resources.memory_gb)" in reasons[0]
    # Checked between samples: stopped well before the 960 MB it would have reached.
    assert prof.peak_memory_bytes < 700 * 2**20


# -- rules ----------------------------------------------------------------------------------------


def summary(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "duration_s": 120.0,
        "cpus": 2,
        "cpu_percent_mean": 150.0,
        "memory_peak_bytes": 2**30,
        "memory_limit_bytes": None,
        "gpus": [],
    }
    return {**base, **kw}


def steps(values: list[float], seconds: list[float] | None = None) -> History:
    t = 1_700_000_000_000
    stamps = []
    for i in range(len(values)):
        t += int(1000 * (seconds[i] if seconds else 0.1))
        stamps.append(t)
    return History(list(range(len(values))), list(values), stamps)


def rules_of(findings: list[dict[str, object]]) -> list[object]:
    return [f["rule"] for f in findings]


def test_a_healthy_job_has_no_findings() -> None:
    falling = steps([1.0, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3, 0.28])
    assert check_rules(summary(), {"train/loss": falling, "accuracy": steps([0.5] * 8)}) == []


def test_cpu_mostly_idle() -> None:
    idle = summary(cpu_percent_mean=12.0)  # 6% of the 2 CPUs asked for
    (f,) = check_rules(idle, {})
    assert f["rule"] == "cpu_idle" and f["severity"] == "warning"
    assert "used 6% of the 2 CPU(s)" in str(f["message"])
    assert f["details"]["threshold"] == profile.CPU_IDLE_FRACTION  # type: ignore[index]
    # A short job's average says little: no finding.
    assert check_rules(summary(cpu_percent_mean=12.0, duration_s=5.0), {}) == []
    assert check_rules(summary(cpu_percent_mean=30.0), {}) == []


def test_memory_close_to_its_limit_and_over_it() -> None:
    near = summary(memory_peak_bytes=int(0.95 * 2**30), memory_limit_bytes=2**30)
    (f,) = check_rules(near, {})
    assert f["rule"] == "memory_near_limit" and "95% of its limit of 1.00 GB" in str(f["message"])
    assert check_rules(summary(memory_peak_bytes=2**29, memory_limit_bytes=2**30), {}) == []
    (over,) = check_rules(near, {}, memory_exceeded="memory limit exceeded: ...")
    assert over["rule"] == "memory_limit_exceeded" and over["severity"] == "error"


def test_loss_not_decreasing() -> None:
    flat = steps([0.69, 0.70, 0.69, 0.71, 0.70, 0.69, 0.70, 0.70])
    (f,) = check_rules(summary(), {"val_loss": flat})
    assert f["rule"] == "loss_not_decreasing" and "'val_loss'" in str(f["message"])
    rising = steps([0.3, 0.32, 0.35, 0.4, 0.5, 0.6])
    assert rules_of(check_rules(summary(), {"validation/rmse": rising})) == ["loss_not_decreasing"]
    # Too few points to judge, or a metric that is not a loss: nothing.
    assert check_rules(summary(), {"loss": steps([0.7, 0.7, 0.7])}) == []
    assert check_rules(summary(), {"accuracy": flat}) == []
    # The threshold: the last quarter must be 1% below the first.
    almost = steps([1.0, 1.0, 1.0, 1.0, 0.995, 0.995, 0.995, 0.995])
    assert rules_of(check_rules(summary(), {"loss": almost})) == ["loss_not_decreasing"]
    lenient = Thresholds(loss_min_improvement=0.001)
    assert check_rules(summary(), {"loss": almost}, thresholds=lenient) == []


def test_is_loss_name() -> None:
    for name in ("loss", "train/loss", "val_logloss", "validation/rmse", "valid-l2", "MAE"):
        assert is_loss_name(name), name
    for name in ("accuracy", "profile/loss", "auc", "step_time"):
        assert not is_loss_name(name), name


def test_a_step_slower_than_the_others() -> None:
    times = [0.5] * 10
    times[6] = 4.0
    (f,) = check_rules(summary(), {"acc": steps([0.5] * 10, times)})
    assert f["rule"] == "slow_step"
    assert f["details"]["step"] == 6 and f["details"]["duration_s"] == 4.0  # type: ignore[index]
    assert "step 6 took 4.00 s against a median of 0.50 s" in str(f["message"])
    # Fast steps with jitter, or a slow one under the absolute floor: nothing.
    jitter = [0.5, 0.6, 0.4, 0.7, 0.5, 0.9, 0.5, 0.6, 0.5, 0.5]
    assert check_rules(summary(), {"acc": steps([0.5] * 10, jitter)}) == []
    tiny = [0.01] * 10
    tiny[3] = 0.5
    assert check_rules(summary(), {"acc": steps([0.5] * 10, tiny)}) == []


# -- end to end -----------------------------------------------------------------------------------


@pytest.fixture
def db_url(sqlite_home: Path) -> str:
    return f"sqlite:///{sqlite_home / 'shipyard.db'}"


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalExecutor]:
    ex = LocalExecutor(tmp_path_factory.mktemp("tasks"), 2, preload=list(PRELOAD))
    yield ex
    ex.shutdown()


@pytest.fixture
def job(services, executor: LocalExecutor, project: str) -> JobHarness:  # type: ignore[no-untyped-def]
    return make_job(services, executor, project)


STALLING = """
    import time
    import shipyard as sy
    for step in range(8):
        time.sleep(1.3 if step == 5 else 0.05)
        sy.log_metric("train_loss", 0.69 + 0.001 * (step % 2), step=step)
"""


def test_a_jobs_report_flags_a_flat_loss_and_a_stalled_step(
    job: JobHarness, tmp_path: Path
) -> None:
    (tmp_path / "stall.py").write_text(textwrap.dedent(STALLING))
    a = job.run({"entry_point": "stall.py", "source_dir": str(tmp_path)})
    assert a.status.state == TaskState.SUCCEEDED, a.log
    findings = {f["rule"]: f for f in a.status.result["report"]["findings"]}
    assert set(findings) == {"loss_not_decreasing", "slow_step"}
    assert findings["slow_step"]["details"]["step"] == 5
    assert findings["loss_not_decreasing"]["details"]["metric"] == "train_loss"
    # The findings are in the run's report.json and in the job's log.
    assert job.artifact_json("report.json")["findings"] == a.status.result["report"]["findings"]
    assert "shipyard: warning: a step slower than the others: step 5" in a.log
    # The profile was logged as run metrics while the job ran (about a sample a second).
    assert len(job.history("profile/cpu_percent")) >= 2

"""System metrics: a thread that samples CPU, memory (and NVIDIA GPUs, when present) as metrics
named ``system/...`` every ``interval_s`` seconds while a run is active."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable

from shipyard.tracking.schemas import MetricRow


def _gpu_sample() -> list[tuple[str, float]]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
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
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for i, line in enumerate(out.strip().splitlines()):
        util, mem = (float(x) for x in line.split(","))
        rows += [(f"system/gpu_{i}_utilization_percent", util), (f"system/gpu_{i}_memory_mb", mem)]
    return rows


class SystemMetricsSampler:
    def __init__(self, emit: Callable[[list[MetricRow]], None], interval_s: float = 5.0) -> None:
        self.emit = emit
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shipyard-sysmetrics", daemon=True)
        self._step = 0

    def start(self) -> None:
        self._thread.start()

    def sample(self) -> list[MetricRow]:
        import psutil

        ts = time.time_ns() // 1_000_000
        vm = psutil.virtual_memory()
        proc = psutil.Process()
        values = [
            ("system/cpu_percent", psutil.cpu_percent(interval=None)),
            ("system/memory_used_mb", (vm.total - vm.available) / 2**20),
            ("system/memory_percent", vm.percent),
            ("system/process_rss_mb", proc.memory_info().rss / 2**20),
            *_gpu_sample(),
        ]
        rows: list[MetricRow] = [(k, float(v), self._step, ts) for k, v in values]
        self._step += 1
        return rows

    def _loop(self) -> None:
        import psutil

        psutil.cpu_percent(interval=None)  # the first reading is meaningless; prime it
        while not self._stop.wait(self.interval_s):
            self.emit(self.sample())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 1)

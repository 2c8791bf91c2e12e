"""One endpoint's model server as an operating-system process, seen from the control plane.

The process is ``python -m shipyard.serving.runtime --config <dir>/config.json``, started in a
session of its own (so a Ctrl-C meant for ``shipyard server`` does not cut it off mid-request;
the server stops it in order), its output appended to ``<dir>/runtime.log``. A process is only
ever signalled after checking that its command line names this endpoint's config file, so a
recycled pid can never make Shipyard kill someone else's process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # imported where used: an idle server need not hold it (5 MB)
    import httpx

CONFIG_NAME = "config.json"


class Cancelled(Exception):
    """Waiting was called off: the control plane that waited is shutting down."""


LOG_NAME = "runtime.log"
KEY_NAME = "invoke.key"


def ensure_invoke_key(endpoint_dir: Path) -> str:
    """The endpoint's invoke key (made once, readable by this user only): with auth on, the
    endpoint's own port asks for it as a bearer token."""
    path = endpoint_dir / KEY_NAME
    with contextlib.suppress(FileNotFoundError):
        key = path.read_text().strip()
        if key:
            return key
    import secrets

    endpoint_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{KEY_NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    os.replace(tmp, path)
    return key


def drop_invoke_key(endpoint_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (endpoint_dir / KEY_NAME).unlink()


def invoke_headers(endpoint_dir: Path) -> dict[str, str]:
    """What a call to the endpoint's own port carries: its key, when it has one."""
    try:
        key = (endpoint_dir / KEY_NAME).read_text().strip()
    except FileNotFoundError:
        return {}
    return {"authorization": f"Bearer {key}"} if key else {}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1", wait_s: float = 0.0) -> bool:
    """Can a server bind ``port`` (as uvicorn does, with SO_REUSEADDR, so connections of a
    process that just died, left in TIME_WAIT, do not count)? Waits up to ``wait_s`` for it."""
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                return True
            except OSError:
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write under a temporary name and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def log_tail(path: Path, start: int = 0, max_lines: int = 15, max_chars: int = 2000) -> str:
    """The last lines the process wrote since ``start`` (a byte offset in its log)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-max_lines:])[-max_chars:]


def _matches(pid: int, config_path: Path) -> bool:
    """Is ``pid`` a live runtime process serving this config file?"""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return str(config_path) in p.cmdline()
    except (psutil.Error, OSError):
        return False


@dataclass
class RuntimeProcess:
    """A runtime process this control plane started (``popen`` set) or found running (adopted)."""

    config_path: Path
    pid: int
    port: int
    popen: subprocess.Popen[bytes] | None = None
    log_offset: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.config_path.with_name(LOG_NAME)

    @classmethod
    def spawn(cls, config_path: Path, port: int) -> RuntimeProcess:
        log_path = config_path.with_name(LOG_NAME)
        offset = log_path.stat().st_size if log_path.exists() else 0
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "shipyard.serving.runtime", "--config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(config_path.parent),
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        return cls(config_path, popen.pid, port, popen, offset)

    @classmethod
    def adopt(cls, config_path: Path, pid: int | None, port: int | None) -> RuntimeProcess | None:
        """The process found running for this config, or None if there is none (or another
        program now has that pid)."""
        if pid is None or port is None or not _matches(pid, config_path):
            return None
        return cls(config_path, pid, port)

    def exit_code(self) -> int | None:
        """None while it runs; its exit code (or -1 for an adopted process) once it is gone."""
        if self.popen is not None:
            return self.popen.poll()
        return None if _matches(self.pid, self.config_path) else -1

    def alive(self) -> bool:
        return self.exit_code() is None

    def tail(self) -> str:
        return log_tail(self.log_path, self.log_offset)

    def wait_ready(
        self, http: httpx.Client, timeout_s: float, cancel: threading.Event | None = None
    ) -> None:
        """Return once ``/v2/health/ready`` answers 200; raise ``RuntimeError`` with the
        process's last words if it exits first, ``TimeoutError``, or ``Cancelled`` when
        ``cancel`` is set."""
        import httpx

        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            code = self.exit_code()
            if code is not None:
                raise RuntimeError(f"the model server exited with code {code}")
            try:
                r = http.get(f"{self.url}/v2/health/ready", timeout=2.0)
                if r.status_code == 200:
                    return
                # Up but not ready: still loading, or it gave up (a model it cannot load).
                stats = http.get(
                    f"{self.url}/shipyard/stats",
                    timeout=2.0,
                    headers=invoke_headers(self.config_path.parent),
                ).json()
                if isinstance(stats, dict) and stats.get("status") == "Failed":
                    raise RuntimeError(f"the model server failed to start: {stats.get('error')}")
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the model server was not ready after {timeout_s:.0f} s")
            if cancel is not None:
                cancel.wait(delay)
            else:
                time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM the process group (the server and its workers), SIGKILL after ``grace_s``."""
        if self.popen is None and not _matches(self.pid, self.config_path):
            return None
        if self.popen is not None and self.popen.poll() is not None:
            return self.popen.returncode
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                break
            time.sleep(0.02)
        else:
            self._signal(signal.SIGKILL)
            if self.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(5)
        # Workers that outlived their parent would keep the port; the group goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return self.popen.returncode if self.popen is not None else None

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)

    def _signal(self, sig: int) -> None:
        # The process leads its own session (start_new_session), so its group id is its pid.
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

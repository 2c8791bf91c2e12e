"""Data capture: a sampled fraction of requests and responses, as JSON lines, off the hot path.

The server only decides whether a request is sampled and puts a tuple on a queue; a thread
formats the lines and writes them. Files are partitioned by hour and rotated by size and age:

    <capture.dir>/YYYY/MM/DD/HH/<endpoint>-<YYYYmmddTHHMMSSZ>-<n>.jsonl

A file is written as ``*.jsonl.part`` and renamed to ``*.jsonl`` when it is rotated (every
``rotate_s`` seconds or ``max_file_bytes``) or the server stops, so whoever uploads or reads
``*.jsonl`` files only ever sees complete ones. One line per request:

    {"id", "endpoint", "variant", "model_name", "model_version", "shadow", "path", "status",
     "request_time", "response_time", "latency_ms", "request", "response"[, "agree"]}

``request``/``response`` hold the JSON body as it was sent, a CSV or other text body as a string,
and a binary body (tensors in Triton's binary form) as ``{"base64": ...}``. When the queue backs
up past ``max_pending`` records, new ones are counted as dropped rather than slowing requests.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shipyard.serving.runtime.config import CaptureConfig

_RAW = ("request_type", "response_type", "request_trusted", "response_trusted")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(raw: bytes, ctype: str, trusted_json: bool) -> Any:
    if trusted_json:
        return orjson.Fragment(raw)
    if "json" in ctype:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


class CaptureWriter:
    max_pending = 100_000

    def __init__(self, cfg: CaptureConfig, endpoint: str) -> None:
        self.cfg = cfg
        self.endpoint = endpoint
        self.rate = cfg.sample_rate
        self.root = Path(cfg.dir)
        self.captured = 0
        self.dropped = 0
        self.files = 0
        self.errors = 0
        self.last_error: str | None = None
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._seq = 0
        self._fh: Any = None
        self._part: Path | None = None
        self._opened = 0.0
        self._size = 0
        self._thread = threading.Thread(target=self._run, name="shipyard-capture", daemon=True)
        self._thread.start()

    def sampled(self) -> bool:
        return self.rate >= 1.0 or (self.rate > 0.0 and random.random() < self.rate)

    def put(self, record: dict[str, Any]) -> None:
        """``record`` holds plain values plus raw bodies: request/response bytes, content types."""
        if self._q.qsize() >= self.max_pending:
            self.dropped += 1
            return
        self._q.put(record)

    def close(self) -> None:
        self._stop.set()
        self._q.put(None)
        self._thread.join(timeout=10)

    def describe(self) -> dict[str, Any]:
        return {
            "sample_rate": self.rate,
            "dir": str(self.root),
            "captured": self.captured,
            "dropped": self.dropped,
            "files": self.files,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            timeout = self.cfg.rotate_s if self._fh is None else 0.2
            try:
                rec = self._q.get(timeout=timeout)
            except queue.Empty:
                rec = False
            lines: list[bytes] = []
            done = False
            while rec is not False:
                if rec is None:
                    done = True
                    break
                lines.append(self._line(rec))
                try:
                    rec = self._q.get_nowait()
                except queue.Empty:
                    rec = False
            try:
                if lines:
                    self._write(lines)
                if self._fh is not None and (
                    done
                    or self._size >= self.cfg.max_file_bytes
                    or time.time() - self._opened >= self.cfg.rotate_s
                ):
                    self._rotate()
            except OSError as e:
                self.errors += 1
                self.last_error = str(e)
            if done:
                return

    def _line(self, rec: dict[str, Any]) -> bytes:
        out = {k: v for k, v in rec.items() if k not in _RAW}
        req = (rec["request"], rec.get("request_type", ""), rec.get("request_trusted", False))
        resp = (rec["response"], rec.get("response_type", ""), rec.get("response_trusted", False))
        out["request"] = _body(*req)
        out["response"] = _body(*resp)
        out["request_time"] = iso(rec["request_time"])
        out["response_time"] = iso(rec["response_time"])
        try:
            return orjson.dumps(out) + b"\n"
        except (orjson.JSONEncodeError, TypeError):
            out["request"] = _body(req[0], req[1], False)
            out["response"] = _body(resp[0], resp[1], False)
            return orjson.dumps(out, default=str) + b"\n"

    def _write(self, lines: list[bytes]) -> None:
        if self._fh is None:
            now = time.time()
            t = datetime.fromtimestamp(now, UTC)
            folder = self.root / t.strftime("%Y/%m/%d/%H")
            folder.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            name = f"{self.endpoint}-{t.strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}-{self._seq}.jsonl"
            self._part = folder / (name + ".part")
            self._fh = open(self._part, "ab")  # noqa: SIM115 - kept open across writes
            self._opened = now
            self._size = 0
        data = b"".join(lines)
        self._fh.write(data)
        self._fh.flush()
        self._size += len(data)
        self.captured += len(lines)

    def _rotate(self) -> None:
        assert self._part is not None
        self._fh.close()
        self._fh = None
        os.replace(self._part, self._part.with_suffix(""))
        self._part = None
        self.files += 1

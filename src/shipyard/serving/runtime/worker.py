"""A model worker process: reads messages from the server over a socket, answers in order.

Frames are a 4-byte big-endian length and a pickle (the socket is a private socketpair between
the server and the worker it started, never a network port). Messages:

    ("load", req_id, key, path, name, version, trust_code) -> ("ok", req_id, info) | ("err", req_id, msg)
    ("unload", key)                                         -> nothing
    ("b", batch_id, key, items, want_preds)                 -> ("r", batch_id, results)
    ("stop",)                                               -> the process exits

The worker ignores SIGINT and SIGTERM: the server drains and then closes the socket, and the end
of the socket ends the worker, so a worker never outlives its server (even one killed by -9).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
import traceback
from typing import Any

_LEN = struct.Struct(">I")


def frame(msg: Any) -> bytes:
    data = pickle.dumps(msg, protocol=5)
    return _LEN.pack(len(data)) + data


def main(sock: socket.socket, worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from shipyard.serving.runtime.engine import Engine

    engine = Engine()
    sock.setblocking(True)
    rfile = sock.makefile("rb", buffering=1 << 16)
    send = sock.sendall
    try:
        while True:
            head = rfile.read(4)
            if len(head) < 4:
                break  # the server closed the socket (or died): so do we
            (n,) = _LEN.unpack(head)
            msg = pickle.loads(rfile.read(n))
            op = msg[0]
            if op == "b":
                _, bid, key, items, want = msg
                try:
                    results = engine.run_batch(key, items, want)
                except Exception as e:  # a bug here must not take every request down
                    from shipyard.serving.runtime.wire import JSON_CT, error_body

                    err = error_body(f"worker error: {type(e).__name__}: {e}")
                    results = [(500, err, JSON_CT, None, None) for _ in items]
                    traceback.print_exc()
                send(frame(("r", bid, results)))
            elif op == "load":
                _, rid, key, path, name, version, trust = msg
                try:
                    info = engine.load(key, path, name, version, trust)
                    send(frame(("ok", rid, info)))
                except Exception as e:
                    send(frame(("err", rid, f"{type(e).__name__}: {getattr(e, 'message', e)}")))
            elif op == "unload":
                engine.unload(msg[1])
            elif op == "stop":
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

"""Start the model server: read the config, then uvicorn (httptools, uvloop, TCP_NODELAY).

Exit codes: 0 after a clean stop (SIGTERM or SIGINT: requests in flight finish first), 1 when the
models cannot be loaded at start (the reason is the last line on stderr), 2 for a bad config.
"""

from __future__ import annotations

import argparse
import os
import sys

from shipyard.core.errors import InvalidArgument


def _limit_threads() -> None:
    # Parallelism comes from worker processes and batching: a library that spins up one thread
    # per core for every small batch (OpenMP in LightGBM, BLAS) only competes with the server.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shipyard.serving.runtime")
    parser.add_argument("--config", required=True, help="the endpoint's config JSON file")
    parser.add_argument("--host", help="override the config's host")
    parser.add_argument("--port", type=int, help="override the config's port")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    _limit_threads()

    import dataclasses

    from shipyard.serving.runtime.config import load_config

    try:
        cfg = load_config(args.config)
        if args.host or args.port is not None:
            cfg = dataclasses.replace(
                cfg,
                host=args.host or cfg.host,
                port=cfg.port if args.port is None else args.port,
            )
    except InvalidArgument as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2

    import uvicorn

    from shipyard.core.nodelay import nodelay_http_protocol
    from shipyard.serving.runtime.app import RuntimeApp
    from shipyard.serving.runtime.endpoint import EndpointRuntime

    rt = EndpointRuntime(cfg, os.path.abspath(args.config))
    app = RuntimeApp(rt)
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        http=nodelay_http_protocol(),
        loop="uvloop",
        # No WebSocket routes (and no import of the websockets package); the app is ASGI 3;
        # nothing reads the client's address, so no proxy-headers layer on every request.
        ws="none",
        interface="asgi3",
        proxy_headers=False,
        lifespan="on",
        access_log=False,
        log_level=args.log_level,
        timeout_keep_alive=30,
        backlog=2048,
        timeout_graceful_shutdown=15,
    )
    server = uvicorn.Server(config)

    def fatal() -> None:
        server.should_exit = True

    rt.on_fatal = fatal
    server.run()
    return 1 if rt.status == "Failed" else 0

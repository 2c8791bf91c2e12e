"""The HTTP surface of a model server: a raw ASGI app (no framework on the hot path).

Routes (Open Inference Protocol v2, the SageMaker container contract, and Shipyard's own):

    GET  /v2/health/live                                 {"live": true}
    GET  /v2/health/ready                                {"ready": bool} (503 when not ready)
    GET  /v2  (and /v2/)                                 server metadata
    GET  /v2/models/{name}[/versions/{v}]                model metadata (inputs from the signature)
    GET  /v2/models/{name}[/versions/{v}]/ready          {"name", "ready"}
    POST /v2/models/{name}[/versions/{v}]/infer          inference (JSON or binary tensors)
    GET  /ping                                           200 when ready, else 503
    POST /invocations                                    JSON records / split / instances, or CSV
    GET  /shipyard/stats                                 per-variant figures, workers, shadow, capture
    POST /shipyard/reload                                re-read the config file (zero downtime)

The port opens before the models are loaded: the probes say not ready until they are, and a
prediction sent meanwhile waits for them (up to ``request_timeout_s``) rather than getting a 503
to retry; the 503 comes only if the start fails, with its reason.

Errors are ``{"error": "<message>"}`` with a 4xx/5xx status, as the OIP specification says for
its routes; the message names the field (``f3: missing column ...``). Which variant answered is
in the ``x-shipyard-variant`` response header; a caller may pin one with the same header (or
SageMaker's ``X-Amzn-SageMaker-Target-Variant``). A multi-model endpoint takes the model from
the URL, or for ``/invocations`` from ``X-Amzn-SageMaker-Target-Model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from typing import Any

import orjson

from shipyard.core.errors import InvalidArgument, NotFound, ShipyardError
from shipyard.serving.runtime.endpoint import VERSION, EndpointRuntime
from shipyard.serving.runtime.state import Variant

JSON = b"application/json"
MAX_BODY = 256 * 1024 * 1024
_EXTENSIONS = ["binary_tensor_data"]


def _err(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def _send(
    send: Any,
    status: int,
    body: bytes,
    ctype: bytes = JSON,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_body(receive: Any) -> bytes:
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPError(413, f"body: larger than {MAX_BODY} bytes")
        parts.append(chunk)
    return b"".join(parts)


# Health probes answer without a token (load balancers and the control plane's liveness checks
# carry none); they tell nothing but up or ready.
_OPEN_PATHS = frozenset(("/ping", "/v2/health/live", "/v2/health/ready"))


class RuntimeApp:
    def __init__(self, rt: EndpointRuntime) -> None:
        self.rt = rt
        token = rt.cfg.auth_token
        self.auth = f"Bearer {token}".encode() if token else None
        self.boot_task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except HTTPError as e:
                await _send(send, e.status, _err(e.message))
            except Exception as e:  # a bug of ours: say so in the error contract's shape
                from shipyard.serving.runtime.endpoint import log

                log(f"error: {scope['method']} {scope['path']}: {type(e).__name__}: {e}")
                with contextlib.suppress(Exception):
                    await _send(send, 500, _err(f"internal error: {type(e).__name__}: {e}"))
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                # Load in the background: the port answers /v2/health/live at once, and
                # /v2/health/ready turns 200 when the models are loaded and warm.
                self.boot_task = asyncio.create_task(self.rt.boot())
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.boot_task is not None and not self.boot_task.done():
                    self.boot_task.cancel()
                await self.rt.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _authorized(self, scope: Any) -> bool:
        for k, v in scope["headers"]:
            if k == b"authorization":
                return hmac.compare_digest(v, self.auth or b"")
        return False

    async def _http(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if self.auth is not None and path not in _OPEN_PATHS and not self._authorized(scope):
            await _send(send, 401, _err("authorization: a valid bearer token is required"))
            return
        if path.startswith("/v2/models/"):
            parts = path[11:].split("/")
            name = parts[0]
            version = None
            if len(parts) >= 3 and parts[1] == "versions":
                version = parts[2]
                rest = parts[3:]
            else:
                rest = parts[1:]
            if not name or (version is not None and not version) or len(rest) > 1:
                raise HTTPError(404, f"no route {path}")
            action = rest[0] if rest else ""
            if action == "infer":
                self._method(method, "POST", path)
                await self._infer(scope, receive, send, "oip", name, version, path)
            elif action == "ready":
                self._method(method, "GET", path)
                await self._model_ready(send, name, version)
            elif action == "":
                self._method(method, "GET", path)
                await self._model_metadata(send, name, version)
            else:
                raise HTTPError(404, f"no route {path}")
            return
        if path == "/invocations":
            self._method(method, "POST", path)
            await self._infer(scope, receive, send, "inv", "", None, path)
        elif path == "/ping":
            self._method(method, "GET", path)
            ok = self.rt.ready
            await _send(send, 200 if ok else 503, b"{}" if ok else _err(self._why_not_ready()))
        elif path == "/v2/health/live":
            self._method(method, "GET", path)
            await _send(send, 200, b'{"live":true}')
        elif path == "/v2/health/ready":
            self._method(method, "GET", path)
            if self.rt.ready:
                await _send(send, 200, b'{"ready":true}')
            else:
                body = orjson.dumps({"ready": False, "error": self._why_not_ready()})
                await _send(send, 503, body)
        elif path in ("/v2", "/v2/"):
            self._method(method, "GET", path)
            body = orjson.dumps({"name": "shipyard", "version": VERSION, "extensions": _EXTENSIONS})
            await _send(send, 200, body)
        elif path == "/shipyard/stats":
            self._method(method, "GET", path)
            await _send(send, 200, orjson.dumps(self.rt.stats()))
        elif path == "/shipyard/reload":
            self._method(method, "POST", path)
            await self._reload(send)
        else:
            raise HTTPError(404, f"no route {path}")

    @staticmethod
    def _method(got: str, want: str, path: str) -> None:
        if got != want and not (want == "GET" and got == "HEAD"):
            raise HTTPError(405, f"{path} takes {want}, not {got}")

    def _why_not_ready(self) -> str:
        rt = self.rt
        if rt.status == "Failed":
            return f"the endpoint failed to start: {rt.error}"
        if not rt.booted:
            return "the models are still loading"
        if rt.pool.degraded:
            return "the model worker crashed and is being restarted"
        return "not ready"

    # -- models ------------------------------------------------------------------------------

    async def _resolve(self, name: str, version: str | None, target: str | None) -> Variant:
        routing = self.rt.routing
        if name in routing.names:
            if target is not None:
                v = routing.by_name.get(target)
                if v is None:
                    raise HTTPError(
                        400,
                        f"x-shipyard-variant: unknown variant {target!r} "
                        f"(variants: {', '.join(routing.by_name)})",
                    )
                return v
            if version is not None:
                v = routing.for_version(version)
                if v is None:
                    raise HTTPError(
                        404,
                        f"model {name!r} has no version {version!r} "
                        f"(versions: {', '.join(routing.versions)})",
                    )
                return v
            return routing.pinned(name) or routing.choose()
        multi = self.rt.multi
        if multi is None:
            raise HTTPError(404, f"unknown model {name!r} (this endpoint serves {self._names()})")
        try:
            entry = await multi.get(name, version)
        except NotFound as e:
            raise HTTPError(404, e.message) from None
        except InvalidArgument as e:
            raise HTTPError(400, e.message) from None
        except RuntimeError as e:
            raise HTTPError(500, str(e)) from None
        return entry.variant

    def _names(self) -> str:
        r = self.rt.routing
        return ", ".join(sorted({r.endpoint, *(v.spec.model_name for v in r.variants)}))

    async def _model_metadata(self, send: Any, name: str, version: str | None) -> None:
        routing = self.rt.routing
        if name in routing.names:
            v = routing.for_version(version) if version else routing.pinned(name)
            if version and v is None:
                raise HTTPError(404, f"model {name!r} has no version {version!r}")
            v = v or routing.variants[0]
            versions = [version] if version else routing.versions
            await _send(send, 200, orjson.dumps(v.meta.metadata(name, versions)))
            return
        multi = self.rt.multi
        if multi is None:
            raise HTTPError(404, f"unknown model {name!r} (this endpoint serves {self._names()})")
        try:
            entry, path, ver = multi.peek(name, version)
            from shipyard.serving.runtime.meta import ModelMeta

            meta = entry.variant.meta if entry else ModelMeta.read(path)
        except NotFound as e:
            raise HTTPError(404, e.message) from None
        except ShipyardError as e:
            raise HTTPError(400, e.message) from None
        await _send(send, 200, orjson.dumps(meta.metadata(name, [ver])))

    async def _model_ready(self, send: Any, name: str, version: str | None) -> None:
        routing = self.rt.routing
        if name in routing.names:
            if version is not None and routing.for_version(version) is None:
                raise HTTPError(404, f"model {name!r} has no version {version!r}")
            ready = self.rt.ready
        elif self.rt.multi is not None:
            try:
                entry, _, _ = self.rt.multi.peek(name, version)
            except NotFound as e:
                raise HTTPError(404, e.message) from None
            except ShipyardError as e:
                raise HTTPError(400, e.message) from None
            ready = (
                entry is not None and entry.ready.done() and entry.ready.exception() is None
            ) and self.rt.ready
        else:
            raise HTTPError(404, f"unknown model {name!r} (this endpoint serves {self._names()})")
        body = orjson.dumps({"name": name, "ready": ready})
        await _send(send, 200 if ready else 503, body)

    # -- inference ---------------------------------------------------------------------------

    async def _infer(
        self,
        scope: Any,
        receive: Any,
        send: Any,
        kind: str,
        name: str,
        version: str | None,
        path: str,
    ) -> None:
        t_start = time.time()
        t0 = time.perf_counter()
        ctype = ""
        accept = ""
        hlen = -1
        target: str | None = None
        mm_model: str | None = None
        rid: str | None = None
        for k, v in scope["headers"]:
            if k == b"content-type":
                ctype = v.decode("latin-1").lower()
            elif k == b"inference-header-content-length":
                try:
                    hlen = int(v)
                except ValueError:
                    raise HTTPError(
                        400, "Inference-Header-Content-Length: expected an integer"
                    ) from None
            elif k == b"x-shipyard-variant" or k == b"x-amzn-sagemaker-target-variant":
                target = v.decode("latin-1")
            elif k == b"accept":
                accept = v.decode("latin-1").lower()
            elif k == b"x-request-id":
                rid = v.decode("latin-1")[:128]
            elif k == b"x-amzn-sagemaker-target-model":
                mm_model = v.decode("latin-1")
        body = await _read_body(receive)
        rt = self.rt
        # A prediction sent while the models load waits for them (up to request_timeout_s), as
        # one sent to an endpoint scaled to zero waits for its worker: answered as soon as it
        # can be, instead of a 503 to retry. The probes (/ping, ready) still say not ready.
        if not rt.booted and not await rt.wait_booted(rt.cfg.request_timeout_s):
            raise HTTPError(503, self._why_not_ready())
        if kind == "inv":
            if mm_model is not None and rt.multi is not None:
                name = mm_model
            elif not rt.routing.variants:
                raise HTTPError(
                    400,
                    "X-Amzn-SageMaker-Target-Model: required by this multi-model endpoint "
                    "(the name of the model to call)",
                )
            else:
                name = rt.routing.endpoint
        variant = await self._resolve(name, version, target)
        item = (kind, body, ctype, hlen, name, accept)
        result = await rt.pool.submit(variant.key, item)
        status, rbody, rct, rheaders, _ = result
        rid = rid or rt.request_id()
        extra = [(b"x-shipyard-variant", variant.name_header), (b"x-request-id", rid.encode())]
        if rheaders:
            extra.extend(rheaders)
        await _send(send, status, rbody, rct, extra)
        variant.stats.record(status, time.perf_counter() - t0)
        if rt.capture is not None or rt.routing.shadow is not None:
            rt.after_response(variant, item, result, rid, path, t_start, time.time())

    async def _reload(self, send: Any) -> None:
        try:
            summary = await self.rt.reload()
        except ShipyardError as e:
            await _send(send, e.http_status if e.http_status < 500 else 500, _err(e.message))
            return
        except RuntimeError as e:
            await _send(send, 500, _err(str(e)))
            return
        await _send(send, 200, orjson.dumps(summary))

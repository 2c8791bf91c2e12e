"""The SDK's side of endpoints: waiting for one to serve, and ``Endpoint.predict``.

``client.endpoint("fraud").predict(df)`` posts to the endpoint's own server (its ``url``, on the
machine that runs it) when this process can reach it: one hop, no control plane in the way.
Otherwise (a remote Shipyard server) it goes through the server's pass-through route.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx
import orjson

from shipyard.core.errors import InvalidArgument, Unavailable, error_from_dict
from shipyard.core.settings import is_loopback
from shipyard.serving.schemas import EndpointPublic, EndpointStatus

if TYPE_CHECKING:
    from shipyard.sdk.client import Client

Progress = Callable[[EndpointPublic, float], None]
_SETTLING = (EndpointStatus.creating, EndpointStatus.updating)


def wait_until_serving(
    get: Callable[[], EndpointPublic],
    *,
    timeout_s: float,
    progress: Progress | None = None,
    interval_s: float = 0.1,
) -> EndpointPublic:
    """Poll until the endpoint leaves Creating/Updating. ``InService`` is returned; ``Failed``
    raises ``Unavailable`` with the server's last words; so does running out of time."""
    t0 = time.monotonic()
    while True:
        ep = get()
        elapsed = time.monotonic() - t0
        if progress is not None:
            progress(ep, elapsed)
        if ep.status not in _SETTLING:
            if ep.status == EndpointStatus.failed:
                raise Unavailable(
                    f"endpoint {ep.name!r} failed to start: {ep.last_error or 'no reason given'}",
                    {"field": "name", "status": ep.status.value},
                )
            return ep
        if elapsed > timeout_s:
            raise Unavailable(
                f"endpoint {ep.name!r} is still {ep.status.value} after {timeout_s:.0f} s",
                {"field": "name", "status": ep.status.value},
            )
        time.sleep(interval_s)


def encode_payload(data: Any) -> tuple[bytes, str]:
    """A request body for ``/invocations`` from a DataFrame, an array, records or a dict."""
    if isinstance(data, bytes | bytearray):
        return bytes(data), "application/json"
    if isinstance(data, str):
        text = data.lstrip()
        kind = "application/json" if text[:1] in "{[" else "text/csv"
        return data.encode(), kind
    if isinstance(data, dict):
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), "application/json"
    if isinstance(data, list):
        key = "dataframe_records" if data and isinstance(data[0], dict) else "instances"
        return orjson.dumps({key: data}, option=orjson.OPT_SERIALIZE_NUMPY), "application/json"
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a core dependency of the models
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        split = data.to_dict(orient="split")
        body = {
            "dataframe_split": {
                "columns": [str(c) for c in split["columns"]],
                "data": split["data"],
            }
        }
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), "application/json"
    if hasattr(data, "tolist"):
        return orjson.dumps({"instances": data.tolist()}), "application/json"
    raise InvalidArgument.for_field(
        "data", f"expected a DataFrame, an array, a list or a dict, got {type(data).__name__}"
    )


def decode_predictions(content: bytes) -> Any:
    """``{"predictions": [...]}`` (or a bare list) as a NumPy array; other answers as JSON."""
    body = orjson.loads(content)
    preds = body.get("predictions", body) if isinstance(body, dict) else body
    if isinstance(preds, list):
        import numpy as np

        return np.asarray(preds)
    return preds


class Endpoint:
    """A handle on one endpoint: ``predict``, ``invoke``, ``describe``."""

    def __init__(self, client: Client, name: str, *, direct: bool | None = None) -> None:
        self.client = client
        self.name = name
        self._direct = direct
        self._url: str | None = None
        self._http: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"Endpoint({self.name!r}, project={self.client.project!r})"

    def describe(self) -> EndpointPublic:
        return self.client.get_endpoint(self.name)

    @property
    def url(self) -> str | None:
        """The endpoint's own server (the fast path), or None while it does not serve."""
        return self.describe().url

    def _can_go_direct(self) -> bool:
        if self._direct is not None:
            return self._direct
        server = getattr(self.client.backend, "url", None)
        if server is None:  # in-process backend: the endpoint runs on this machine
            return True
        return is_loopback(urlparse(server).hostname or "")

    def invoke(self, body: bytes, content_type: str = "application/json") -> bytes:
        """Send a raw body to ``/invocations``; return the raw answer (errors raise)."""
        if self._can_go_direct():
            if self._url is None:
                self._url = self.url
            if self._url is not None:
                if self._http is None:
                    self._http = httpx.Client(timeout=120.0, trust_env=False)
                try:
                    r = self._http.post(
                        f"{self._url}/invocations",
                        content=body,
                        headers={"content-type": content_type},
                    )
                except httpx.TransportError:
                    self._url = None  # moved (restarted on another port) or gone: ask again
                else:
                    if r.status_code == 401:
                        # Auth is on: the endpoint's port wants its invoke key; the platform's
                        # route takes this client's own token.
                        self._direct = False
                    elif r.status_code >= 400:
                        raise error_from_response(r)
                    else:
                        return r.content
        return self.client.backend.invoke_endpoint(
            self.client._ready(), self.name, body, content_type
        )

    def predict(self, data: Any) -> Any:
        """Predictions for ``data`` (a DataFrame, an array, records, a dict in one of the
        request shapes, or CSV text): a NumPy array, one prediction per row."""
        body, content_type = encode_payload(data)
        return decode_predictions(self.invoke(body, content_type))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


# The endpoint's own servers answer errors as the Open Inference Protocol does,
# ``{"error": "<message>"}``: the status says which of Shipyard's errors it is.
_CODE_BY_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    422: "INVALID_ARGUMENT",
    503: "UNAVAILABLE",
}


def error_from_response(r: httpx.Response) -> Exception:
    """The Shipyard error for an endpoint's error answer, in either error shape."""
    try:
        data = r.json()
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return error_from_dict(data, r.status_code)  # Shipyard's own shape
    message = err if isinstance(err, str) else (r.text[:500] or f"HTTP {r.status_code}")
    code = _CODE_BY_STATUS.get(r.status_code, "INTERNAL")
    return error_from_dict({"error": {"code": code, "message": message}}, r.status_code)

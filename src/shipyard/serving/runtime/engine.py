"""The models a worker holds and how it runs a batch of requests through one of them.

The same code runs in a model worker process and, for a one-worker endpoint, in a thread of the
server process. A batch is a list of raw requests for one model: each is decoded and checked on
its own (a bad request gets its 400 and does not spoil the others), the good ones are stacked
into one frame, the model predicts once, and the answer is cut back into one response per
request. A model that raises on the stacked batch is retried request by request, so one row the
model cannot take fails only its own request.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from shipyard.serving.runtime import codec
from shipyard.serving.runtime.codec import BadRequest, Decoded, InputPlan
from shipyard.serving.runtime.wire import JSON_CT, error_body

# A request as the server hands it over: kind ("inv" or "oip"), body, content type, the
# Inference-Header-Content-Length (-1 when absent), the model name in the URL, Accept.
Item = tuple[str, bytes, str, int, str, str]
# A response: status, body, content type, extra headers, predictions (for shadow comparison).
Result = tuple[int, bytes, bytes, list[tuple[bytes, bytes]] | None, Any]


@dataclass
class Hosted:
    loaded: Any  # shipyard.models.format.LoadedModel
    plan: InputPlan
    out_names: list[str]
    name: str
    version: str
    columns: list[str] | None = None
    # Call the library with the float matrix itself (no DataFrame) where that is what the
    # flavor would do with the frame anyway: a tensor signature, a scikit-learn estimator, a
    # LightGBM or single-input ONNX model (``flavors.array_order``); its columns are put in the
    # model's own order (``order``) first. Either the manifest says that both ways gave the
    # same answer on the example when the model was saved (``array_input``; ``checked``), or
    # the load checks it on the stored example before choosing this way.
    direct: bool = False
    order: list[int] | None = None
    checked: bool = False
    info: dict[str, Any] = field(default_factory=dict)


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        import psutil

        return int(psutil.Process().memory_info().rss)


_LIBC: Any = None


def _release_free_memory() -> None:
    """Give the heap that loading left free back to the system.

    Reading a model builds a parse tree several times the model's size (skops' nodes, the
    zip's buffers); freed, those pages stay in glibc's heap and count in the process's RSS.
    Measured on the 100-tree forest: +32 MB after the load, +15 MB after ``malloc_trim``
    (pickle through joblib: +18 MB). No ``gc.collect()`` first: the parse tree is freed by
    reference counting, and a full collection of a process holding scikit-learn, SciPy and
    pandas costs about 0.08 CPU s.
    """
    global _LIBC
    if _LIBC is False or not sys.platform.startswith("linux"):
        return
    try:
        if _LIBC is None:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _LIBC = False


class Engine:
    def __init__(self) -> None:
        self.models: dict[str, Hosted] = {}

    # -- models --------------------------------------------------------------------------------

    def load(
        self, key: str, path: str, name: str, version: str, trust_code: bool
    ) -> dict[str, Any]:
        """Load (verifying every file's sha256) and warm the model; return facts about it."""
        from shipyard.models import flavors
        from shipyard.models.format import load_model
        from shipyard.serving.runtime.imports import allow_pandas

        flavors.LEAN_SKOPS = True  # this process is a model server (flavors.skops_io)

        if key in self.models:
            return self.models[key].info
        t0 = time.perf_counter()
        _release_free_memory()  # so that the RSS before and after count the model alone
        before = _rss()
        loaded = self._shared(path, trust_code) or load_model(path, trust_code=trust_code)
        sig = loaded.signature
        plan = InputPlan.of(sig)
        hosted = Hosted(
            loaded=loaded,
            plan=plan,
            out_names=[c.name for c in sig.outputs],
            name=name,
            version=version,
            columns=plan.names if plan.kind == "columns" else None,
        )
        arr = loaded.manifest.array_input
        if arr is not None and plan.kind == "columns" and plan.fast:
            hosted.direct, hosted.order, hosted.checked = True, arr["order"], True
            if loaded.flavor == "sklearn":
                flavors.quiet_feature_name_warning()
        elif plan.kind == "tensor" and loaded.flavor != "python_function":
            hosted.direct, hosted.checked = True, True
        else:
            allow_pandas(without_pyarrow=not trust_code)  # this one needs its frames
            hosted.direct, hosted.order = _direct(loaded, plan)
        self._warm(hosted)
        _release_free_memory()
        rss = max(_rss() - before, 0)
        disk = sum(
            os.path.getsize(os.path.join(path, f))
            for f in loaded.manifest.files
            if os.path.exists(os.path.join(path, f))
        )
        hosted.info = {
            "load_s": round(time.perf_counter() - t0, 4),
            "rss_bytes": rss,
            "disk_bytes": disk,
            "flavor": loaded.flavor,
            "pid": os.getpid(),
        }
        self.models[key] = hosted
        return hosted.info

    def _shared(self, path: str, trust_code: bool) -> Any:
        """The model another key of this worker already holds from the same folder, when the
        folder's files still hash to what was loaded (two variants, or a variant and the
        shadow, on one model version; a variant renamed by a reload): one copy in memory."""
        same = [h.loaded for h in self.models.values() if str(h.loaded.path) == str(path)]
        if not same:
            return None
        from shipyard.models.format import verify_files

        manifest, digest = verify_files(path)
        if manifest.flavor == "python_function" and not trust_code:
            return None  # load_model says why
        return next((lm for lm in same if lm.digest == digest), None)

    def _warm(self, h: Hosted) -> None:
        """Predict on the stored example, so the first request pays no lazy set-up; and check
        that the direct call (a bare matrix) answers exactly as the DataFrame call does, unless
        that was checked when the model was saved."""
        if h.checked:
            try:
                X = _example_matrix(h)
                if X is not None:
                    self._call(h, "predict", [Decoded(X, len(X))])
            except Exception:  # a model that cannot predict on its own example still serves
                pass
            return
        try:
            ex = h.loaded.input_example()
            if ex is None or len(ex) == 0:
                h.direct = h.direct and h.order is None and h.plan.kind == "tensor"
                return
            X = h.loaded.signature.validate(ex)
            want = np.asarray(h.loaded.predict(X, validate=False))
        except Exception:  # a model that cannot predict on its own example still serves
            h.direct = h.direct and h.plan.kind == "tensor"
            return
        if not h.direct or h.plan.kind == "tensor":
            return
        try:
            got = self._call(h, "predict", [Decoded(X.to_numpy(dtype=h.plan.fast_dtype), len(X))])
            h.direct = got.shape == want.shape and bool(np.all(got == want))
        except Exception:
            h.direct = False

    def unload(self, key: str) -> None:
        if self.models.pop(key, None) is not None:
            gc.collect()
            _release_free_memory()

    # -- batches -------------------------------------------------------------------------------

    def run_batch(self, key: str, items: list[Item], want_preds: bool) -> list[Result]:
        h = self.models.get(key)
        if h is None:
            err = error_body(f"model {key!r} is not loaded in this worker")
            return [(503, err, JSON_CT, None, None) for _ in items]
        results: list[Result | None] = [None] * len(items)
        groups: dict[str, list[tuple[int, Decoded]]] = {}
        sig = h.loaded.signature
        for i, (kind, body, ctype, hlen, _, _) in enumerate(items):
            try:
                if kind == "oip":
                    d = codec.decode_oip(h.plan, sig, body, hlen)
                else:
                    d = codec.decode_invocations(h.plan, sig, body, ctype)
                if d.method == "predict_proba" and not h.loaded.has_predict_proba:
                    raise BadRequest(
                        f"parameters.method: this {h.loaded.flavor} model has no predict_proba"
                    )
            except BadRequest as e:
                results[i] = (e.status, error_body(e.message), JSON_CT, None, None)
                continue
            except Exception as e:  # malformed beyond what the checks foresaw: still the caller's
                msg = f"body: could not be read: {type(e).__name__}: {e}"[:1000]
                results[i] = (400, error_body(msg), JSON_CT, None, None)
                continue
            groups.setdefault(d.method, []).append((i, d))
        for method, group in groups.items():
            self._predict_group(h, method, group, items, results, want_preds)
        return results  # type: ignore[return-value]

    def _predict_group(
        self,
        h: Hosted,
        method: str,
        group: list[tuple[int, Decoded]],
        items: list[Item],
        results: list[Result | None],
        want_preds: bool,
    ) -> None:
        try:
            preds = self._call(h, method, [d for _, d in group])
        except Exception as e:
            if len(group) > 1:  # find the request the model cannot take; serve the others
                for one in group:
                    self._predict_group(h, method, [one], items, results, want_preds)
                return
            results[group[0][0]] = _model_error(e)
            return
        start = 0
        for i, d in group:
            part = preds[start : start + d.n]
            start += d.n
            results[i] = self._encode(h, method, items[i], d, part, want_preds)

    def _call(self, h: Hosted, method: str, decoded: list[Decoded]) -> np.ndarray:
        parts = [d.X for d in decoded]
        if h.direct and all(isinstance(p, np.ndarray) for p in parts):
            from shipyard.models import flavors

            X = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            if h.order is not None:
                X = X[:, h.order]
            fl = flavors.predict_proba if method == "predict_proba" else flavors.predict
            lm = h.loaded
            preds = np.asarray(fl(lm.flavor, lm.model, X, lm.manifest.flavor_options))
        else:
            X = _stack(h, parts)
            fn = h.loaded.predict_proba if method == "predict_proba" else h.loaded.predict
            preds = np.asarray(fn(X, validate=False))
        total = sum(d.n for d in decoded)
        if preds.ndim == 0 or preds.shape[0] != total:
            raise RuntimeError(
                f"the model returned {preds.shape[0] if preds.ndim else 1} answers for {total} rows"
            )
        return preds

    def _encode(
        self, h: Hosted, method: str, item: Item, d: Decoded, part: np.ndarray, want: bool
    ) -> Result:
        kind, _, _, _, url_name, accept = item
        try:
            if kind == "oip":
                assert d.oip is not None
                body, ct, hlen = codec.encode_oip(
                    part, h.out_names, method, d.oip, url_name or h.name, h.version
                )
                headers = (
                    [(b"inference-header-content-length", str(hlen).encode())]
                    if hlen >= 0
                    else None
                )
            else:
                body, ct = codec.encode_invocations(part, accept)
                headers = None
        except BadRequest as e:
            return (e.status, error_body(e.message), JSON_CT, None, None)
        return (200, body, ct, headers, part.tolist() if want else None)


def _direct(loaded: Any, plan: InputPlan) -> tuple[bool, list[int] | None]:
    """Whether to call the library with a bare matrix, and in which column order (to be
    checked on the example)."""
    if plan.kind == "tensor":
        return loaded.flavor != "python_function", None
    if not plan.fast:
        return False, None
    from shipyard.models import flavors

    ok, order = flavors.array_order(loaded.flavor, loaded.model, plan.names)
    if ok and loaded.flavor == "sklearn":
        flavors.quiet_feature_name_warning()
    return ok, order


def _example_matrix(h: Hosted) -> np.ndarray | None:
    """The stored example as the model's float matrix, read without pandas."""
    lm = h.loaded
    if not lm.manifest.input_example:
        return None
    with open(os.path.join(lm.path, lm.manifest.input_example), "rb") as f:
        split = orjson.loads(f.read())["dataframe_split"]
    dtype = h.plan.fast_dtype if h.plan.kind == "columns" else h.plan.tensor_dtype
    X = np.asarray(split["data"], dtype=dtype)
    if X.ndim != 2:
        return None
    if h.plan.kind == "columns":
        cols = [str(c) for c in split["columns"]]
        X = X[:, [cols.index(n) for n in h.plan.names]]
    return X


def _stack(h: Hosted, parts: list[Any]) -> Any:
    """One input for the model from the requests' parts (arrays or validated frames)."""
    import pandas as pd

    if all(isinstance(p, np.ndarray) for p in parts):
        X = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        if h.columns is None:
            return pd.DataFrame(X) if X.ndim == 2 else X
        return pd.DataFrame(X, columns=h.columns, copy=False)
    frames = [
        p if isinstance(p, pd.DataFrame) else pd.DataFrame(p, columns=h.columns) for p in parts
    ]
    if h.plan.kind == "columns" and h.plan.fast:
        frames = [f.astype(h.plan.fast_dtype, copy=False) for f in frames]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _model_error(e: Exception) -> Result:
    from shipyard.core.errors import ShipyardError

    if isinstance(e, ShipyardError) and e.http_status == 400:
        return (400, error_body(e.message), JSON_CT, None, None)
    tb = traceback.format_exception_only(type(e), e)[-1].strip()
    msg = f"the model failed to predict: {tb}"
    return (500, error_body(msg[:2000]), JSON_CT, None, None)

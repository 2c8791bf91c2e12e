"""A scikit-learn model as data: its estimators' state in JSON, its arrays as ``.npy``, one zip.

Why not only skops: reading a 100-tree forest with ``skops.io`` took about 0.15 CPU s here (a
node object per attribute, 500 ``.npy`` headers each parsed with ``ast``, an audit pass), and
importing ``skops.io`` costs a model server another 0.1 s (it imports ``sklearn.cluster`` and
``sklearn.manifold``); joblib's pickle reads the same forest in 0.03 s, but a pickle is code.
This format holds no code either, and reads the forest in about as long as the pickle.

``model.npz`` (a zip, stored, not compressed)::

    state.json      {"format": "shipyard-sklearn-state", "version": 1, "root": VALUE}
    a<i>.npy        every array of one dtype, flattened and concatenated (numpy's .npy format,
                    read with ``allow_pickle=False``: an object array is refused)

where VALUE is JSON null, a bool, an int, a string, a finite float, a list of VALUEs, or one of::

    {"$f": "nan" | "inf" | "-inf"}              a float that JSON cannot hold
    {"$tuple": [VALUE, ...]}
    {"$dict": {"key": VALUE}}                     a dict with string keys
    {"$items": [[VALUE, VALUE], ...]}             any other dict
    {"$a": [i, offset, [shape], "C" | "F"]}      an array: a slice of ``a<i>.npy``
    {"$oa": [[shape], [VALUE, ...]]}              an object array (its elements, flat)
    {"$s": [dtype, VALUE]}                        a numpy scalar
    {"$obj": "sklearn.module.Class", "id": n, "state": VALUE}
    {"$cy": "sklearn.module.Class", "id": n, "state": VALUE}   a Cython class, see below
    {"$new": "sklearn.module.Class", "id": n, "args": [number, ...]}
    {"$tree": n, "args": VALUE, "state": VALUE}   ``sklearn.tree._tree.Tree(*args)``, set to state
    {"$rng": n, "state": VALUE}                   a numpy ``RandomState`` (MT19937)
    {"$ref": n}                                   the object with that id again (shared)

Rebuilding runs no code from the file: a class is looked up only under ``sklearn.`` (the
same allow-list as the skops path) and rebuilt through pickle's own protocol, ``cls.__new__``
and then ``__setstate__`` (``__setstate_cython__`` for a Cython class), with values that are
data. The trees are checked before they are handed to scikit-learn, which trusts them: every
child index inside its tree and after its parent (so a walk ends), every node but the root
reached once, split features inside the tree's width, depth within ``max_depth``, and each
tree as wide as the estimator that calls it. Anything else is ``BadState``.

Writing refuses (``Unsupported``) any value it cannot hold as data (a function, a class from
another package, a sparse matrix, ...): the caller then uses skops.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

FORMAT = "shipyard-sklearn-state"
VERSION = 1
STATE_NAME = "state.json"
_TREE = "sklearn.tree._tree.Tree"
# Cython classes rebuilt from their state: only the loss functions that gradient boosting keeps
# (plain numbers). Other Cython classes size their own buffers, which a state could contradict.
_CYTHON_MODULES = ("sklearn._loss.",)


class Unsupported(Exception):
    """The model holds a value this format cannot hold as data."""


class BadState(Exception):
    """The file is not a valid model state (malformed, or a class outside the allow-list)."""


# -- write -----------------------------------------------------------------------------------


class _Encoder:
    def __init__(self) -> None:
        self.groups: dict[np.dtype[Any], list[np.ndarray]] = {}
        self.sizes: dict[np.dtype[Any], int] = {}
        self.order: list[np.dtype[Any]] = []
        self.memo: dict[int, int] = {}
        self.keep: list[Any] = []  # the encoded objects stay alive, so ids are not reused

    def array(self, a: np.ndarray) -> Any:
        if a.dtype.hasobject:
            if a.dtype != np.dtype(object):
                raise Unsupported(f"an array of dtype {a.dtype}")
            return {"$oa": [list(a.shape), [self.value(v) for v in a.reshape(-1)]]}
        if a.dtype.kind not in "biufcUSV" or (a.dtype.kind == "V" and a.dtype.names is None):
            raise Unsupported(f"an array of dtype {a.dtype}")
        order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
        flat = a.reshape(-1, order=order)  # type: ignore[call-overload]
        dt = a.dtype
        if dt not in self.groups:
            self.groups[dt], self.sizes[dt] = [], 0
            self.order.append(dt)
        offset = self.sizes[dt]
        self.groups[dt].append(flat)
        self.sizes[dt] += flat.size
        return {"$a": [self.order.index(dt), offset, list(a.shape), order]}

    def value(self, v: Any) -> Any:
        t = type(v)
        if v is None or t is bool or t is int or t is str:
            return v
        if t is float:
            return v if math.isfinite(v) else {"$f": repr(v)}
        if t is list:
            return [self.value(x) for x in v]
        if t is tuple:
            return {"$tuple": [self.value(x) for x in v]}
        if t is dict:
            if all(type(k) is str for k in v):
                return {"$dict": {k: self.value(x) for k, x in v.items()}}
            return {"$items": [[self.value(k), self.value(x)] for k, x in v.items()]}
        if t is np.ndarray:
            return self.array(v)
        if isinstance(v, np.generic) and t.__module__ == "numpy":
            if v.dtype.kind not in "biuf":
                raise Unsupported(f"a numpy scalar of dtype {v.dtype}")
            return {"$s": [v.dtype.str, self.value(v.item())]}
        return self.obj(v)

    def obj(self, v: Any) -> Any:
        if id(v) in self.memo:
            return {"$ref": self.memo[id(v)]}
        t = type(v)
        name = f"{t.__module__}.{t.__qualname__}"
        n = len(self.memo)
        if t is np.random.RandomState:
            self.memo[id(v)] = n
            self.keep.append(v)
            state = v.get_state(legacy=False)
            if state.get("bit_generator") != "MT19937":
                raise Unsupported("a RandomState that is not MT19937")
            return {"$rng": n, "state": self.value(state)}
        if not t.__module__.startswith("sklearn.") or isinstance(v, type):
            raise Unsupported(f"a {name}")
        self.memo[id(v)] = n
        self.keep.append(v)
        reduced = v.__reduce_ex__(2)
        if name == _TREE:
            cls, args, state = reduced[:3]
            if cls is not t:
                raise Unsupported(f"a {name} that reduces to {cls!r}")
            return {"$tree": n, "args": self.value(tuple(args)), "state": self.value(state)}
        cython_ok = t.__module__.startswith(_CYTHON_MODULES)
        if (
            cython_ok
            and isinstance(reduced, tuple)
            and reduced[0] is t
            and all(x is None for x in reduced[2:])
            and all(type(a) in (int, float) for a in reduced[1])
        ):
            return {"$new": name, "id": n, "args": list(reduced[1])}
        if not isinstance(reduced, tuple) or len(reduced) < 2:
            raise Unsupported(f"a {name} that pickles as {type(reduced).__name__}")
        fn, args, state = (*reduced[:3], None)[:3]
        if any(x is not None for x in reduced[3:]):
            raise Unsupported(f"a {name} with list or dict items")
        fn_name = getattr(fn, "__name__", "")
        if fn_name == "__newobj__" and tuple(args) == (t,):
            if state is not None and not isinstance(state, dict):
                raise Unsupported(f"a {name} whose state is a {type(state).__name__}")
            return {"$obj": name, "id": n, "state": self.value(state)}
        if fn_name.startswith("__pyx_unpickle_") and len(args) == 3 and args[0] is t and cython_ok:
            if not hasattr(t, "__setstate_cython__"):
                raise Unsupported(f"a {name} without __setstate_cython__")
            return {"$cy": name, "id": n, "state": self.value(args[2])}
        raise Unsupported(f"a {name} that pickles through {fn_name or fn!r}")


def encode(model: Any) -> tuple[bytes, list[np.ndarray]]:
    """The JSON state of ``model`` and its arrays (one per dtype); raises ``Unsupported``."""
    enc = _Encoder()
    root = enc.value(model)
    doc = {"format": FORMAT, "version": VERSION, "root": root}
    state = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    blobs = []
    for dt in enc.order:
        # Not np.concatenate: NumPy 2 promotes a structured dtype to its packed form, which drops
        # the padding that scikit-learn's node dtype has (and then refuses it).
        blob = np.zeros(enc.sizes[dt], dtype=dt)  # zeros: the padding of a structured dtype
        at = 0
        for part in enc.groups[dt]:
            blob[at : at + part.size] = part
            at += part.size
        blobs.append(blob)
    return state, blobs


def dumps(model: Any) -> bytes:
    """``model`` as the bytes of a ``model.npz`` (see the module's docstring)."""
    state, blobs = encode(model)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(STATE_NAME, state)
        for i, blob in enumerate(blobs):
            with zf.open(f"a{i}.npy", "w", force_zip64=blob.nbytes > 2**30) as f:
                np.lib.format.write_array(f, blob, allow_pickle=False)
    return buf.getvalue()


def same_state(a: Any, b: Any) -> bool:
    """Whether two models encode to the same state and arrays, value for value."""
    state_a, blobs_a = encode(a)
    state_b, blobs_b = encode(b)
    return (
        state_a == state_b
        and len(blobs_a) == len(blobs_b)
        and all(_same_array(x, y) for x, y in zip(blobs_a, blobs_b, strict=True))
    )


def _same_array(x: np.ndarray, y: np.ndarray) -> bool:
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.names is None:
        return x.tobytes() == y.tobytes()  # bit for bit: NaN equals NaN, -0.0 is not 0.0
    return all(_same_array(x[name], y[name]) for name in x.dtype.names)  # not the padding


# -- read ------------------------------------------------------------------------------------


_SCALARS = {
    np.dtype(t).str for t in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
}


class _Decoder:
    def __init__(self, blobs: list[np.ndarray]) -> None:
        self.blobs = blobs
        self.memo: dict[int, Any] = {}
        self.trees: list[tuple[Any, dict[str, Any], int, int]] = []
        self.objects: list[Any] = []

    def new_id(self, n: Any, obj: Any) -> None:
        if type(n) is not int or n in self.memo:
            raise BadState(f"object id {n!r} is not a new integer")
        self.memo[n] = obj

    def value(self, v: Any, view: bool = False) -> Any:
        t = type(v)
        if v is None or t is bool or t is int or t is str or t is float:
            return v
        if t is list:
            return [self.value(x) for x in v]
        if t is not dict or len(v) == 0:
            raise BadState(f"unexpected value {str(v)[:80]!r}")
        tag = next(iter(v))
        body = v[tag]
        if tag == "$a":
            return self.array(body, view)
        if tag == "$dict" and type(body) is dict:
            return {k: self.value(x, view) for k, x in body.items()}
        if tag == "$tuple" and type(body) is list:
            return tuple(self.value(x) for x in body)
        if tag == "$items" and type(body) is list:
            if not all(type(kv) is list and len(kv) == 2 for kv in body):
                raise BadState("$items: expected [key, value] pairs")
            return {self.value(k): self.value(x) for k, x in body}
        if tag == "$f" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "$s":
            x = self.value(body[1]) if type(body) is list and len(body) == 2 else None
            if type(x) not in (bool, int, float) or body[0] not in _SCALARS:
                raise BadState(f"$s: {str(body)[:80]} is not a numpy number")
            return np.dtype(body[0]).type(x)
        if tag == "$oa" and type(body) is list and len(body) == 2:
            shape = self.shape(body[0])
            items = body[1]
            if type(items) is not list or len(items) != math.prod(shape):
                raise BadState("$oa: the elements do not fill its shape")
            out = np.empty(len(items), dtype=object)
            for i, x in enumerate(items):
                out[i] = self.value(x)
            return out.reshape(shape)
        if tag == "$ref":
            if type(body) is not int or body not in self.memo:
                raise BadState(f"$ref: no object {body!r} before it")
            return self.memo[body]
        if tag == "$obj":
            return self.obj(v)
        if tag == "$cy":
            return self.cython(v)
        if tag == "$new":
            return self.new(v)
        if tag == "$tree":
            return self.tree(v)
        if tag == "$rng":
            return self.rng(v)
        raise BadState(f"unknown tag {tag!r}")

    @staticmethod
    def shape(raw: Any) -> tuple[int, ...]:
        if type(raw) is not list or not all(type(d) is int and d >= 0 for d in raw):
            raise BadState(f"invalid shape {str(raw)[:80]}")
        return tuple(raw)

    def array(self, body: Any, view: bool) -> np.ndarray:
        if type(body) is not list or len(body) != 4:
            raise BadState("$a: expected [blob, offset, shape, order]")
        i, offset, raw_shape, order = body
        shape = self.shape(raw_shape)
        n = math.prod(shape)
        if (
            type(i) is not int
            or not 0 <= i < len(self.blobs)
            or type(offset) is not int
            or offset < 0
            or offset + n > self.blobs[i].size
            or order not in ("C", "F")
        ):
            raise BadState(f"$a: {str(body)[:80]} is outside the arrays")
        out = self.blobs[i][offset : offset + n].reshape(shape, order=order)
        return out if view else out.copy(order="K")

    def cls(self, name: Any) -> Any:
        if type(name) is not str or not name.startswith("sklearn."):
            raise BadState(f"refusing class {str(name)[:200]!r}: only classes under sklearn.")
        module, _, qual = name.rpartition(".")
        try:
            obj: Any = importlib.import_module(module)
        except ImportError as e:
            raise BadState(f"class {name}: {e}") from None
        obj = getattr(obj, qual, None)
        if not isinstance(obj, type) or f"{obj.__module__}.{obj.__qualname__}" != name:
            raise BadState(f"refusing {name!r}: not a scikit-learn class")
        return obj

    def obj(self, v: dict[str, Any]) -> Any:
        cls = self.cls(v.get("$obj"))
        if cls is np.random.RandomState or cls.__qualname__ == "Tree":
            raise BadState(f"{cls.__qualname__} under $obj")
        inst = cls.__new__(cls)
        self.new_id(v.get("id"), inst)
        state = self.value(v.get("state"))
        if state is None:  # an object with nothing in its __dict__
            self.objects.append(inst)
            return inst
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise BadState(f"{v['$obj']}: its state must be a dict with string keys")
        setstate = getattr(inst, "__setstate__", None)
        if setstate is not None:
            setstate(state)
        else:
            inst.__dict__.update(state)
        self.objects.append(inst)
        return inst

    def new(self, v: dict[str, Any]) -> Any:
        cls = self.cls(v.get("$new"))
        args = v.get("args")
        if not cls.__module__.startswith(_CYTHON_MODULES) or not (
            type(args) is list and all(type(a) in (int, float) for a in args)
        ):
            raise BadState(f"refusing {v['$new']!r} built from {str(args)[:80]}")
        inst = cls(*args)
        self.new_id(v.get("id"), inst)
        return inst

    def cython(self, v: dict[str, Any]) -> Any:
        cls = self.cls(v.get("$cy"))
        if not cls.__module__.startswith(_CYTHON_MODULES):
            raise BadState(f"refusing {v['$cy']!r}: not a Cython class this format rebuilds")
        setstate = getattr(cls, "__setstate_cython__", None)
        if setstate is None:
            raise BadState(f"{v['$cy']} has no __setstate_cython__")
        inst = cls.__new__(cls)
        self.new_id(v.get("id"), inst)
        state = self.value(v.get("state"))
        try:
            setstate(inst, state)
        except (TypeError, ValueError, IndexError) as e:
            raise BadState(f"{v['$cy']}: {e}") from None
        return inst

    def rng(self, v: dict[str, Any]) -> Any:
        rs = np.random.RandomState()
        self.new_id(v.get("$rng"), rs)
        state = self.value(v.get("state"))
        if type(state) is not dict or state.get("bit_generator") != "MT19937":
            raise BadState("$rng: expected an MT19937 state")
        try:
            rs.set_state(state)
        except (TypeError, ValueError, KeyError) as e:
            raise BadState(f"$rng: {e}") from None
        return rs

    def tree(self, v: dict[str, Any]) -> Any:
        from sklearn.tree._tree import Tree

        args = self.value(v.get("args"))
        if not (
            type(args) is tuple
            and len(args) == 3
            and type(args[0]) is int
            and args[0] > 0
            and type(args[2]) is int
            and args[2] > 0
            and isinstance(args[1], np.ndarray)
            and args[1].shape == (args[2],)
            and args[1].dtype.kind in "iu"
            and bool(np.all(args[1] > 0))
        ):
            raise BadState("a tree's (n_features, n_classes, n_outputs) are invalid")
        tree = Tree(args[0], args[1].astype(np.intp), args[2])
        self.new_id(v.get("$tree"), tree)
        state = self.value(v.get("state"), view=True)
        if type(state) is not dict:
            raise BadState("a tree's state must be a dict")
        # Set once every tree is checked (``finish``).
        self.trees.append((tree, state, args[0], int(args[1].max())))
        return tree

    def finish(self) -> None:
        _check_trees(self.trees)
        for tree, state, _, _ in self.trees:
            try:
                tree.__setstate__(state)
            except (TypeError, ValueError, KeyError) as e:
                raise BadState(f"a tree's state: {e}") from None
        for obj in self.objects:
            _check_widths(obj)


def _check_trees(trees: list[tuple[Any, dict[str, Any], int, int]]) -> None:
    """Every tree's nodes form a tree that scikit-learn's Cython code can walk safely (see the
    module's docstring); checked for all trees at once."""
    if not trees:
        return
    from sklearn.tree._tree import NODE_DTYPE

    nodes_list = []
    for tree, state, _, max_classes in trees:
        nodes, values = state.get("nodes"), state.get("values")
        count, depth = state.get("node_count"), state.get("max_depth")
        if not (
            isinstance(nodes, np.ndarray)
            and nodes.dtype == NODE_DTYPE
            and nodes.ndim == 1
            and type(count) is int
            and count == nodes.shape[0]
            and count > 0
            and type(depth) is int
            and 0 <= depth < count
            and isinstance(values, np.ndarray)
            and values.dtype == np.float64
            and values.shape == (count, tree.n_outputs, max_classes)
        ):
            raise BadState("a tree's nodes, values, node_count or max_depth are invalid")
        nodes_list.append(nodes)
    counts = np.array([len(n) for n in nodes_list], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    total = int(counts.sum())
    # Whole-forest arrays (no boolean indexing where it can be helped: it is the slow part).
    left = np.concatenate([n["left_child"] for n in nodes_list])
    right = np.concatenate([n["right_child"] for n in nodes_list])
    feature = np.concatenate([n["feature"] for n in nodes_list])
    base = np.repeat(starts, counts)
    count = np.repeat(counts, counts)
    width = np.repeat(np.array([t[2] for t in trees], dtype=np.int64), counts)
    local = np.arange(total, dtype=np.int64) - base
    leaf = left == -1
    inner_ok = (left > local) & (right > local) & (left < count) & (right < count)
    inner_ok &= (feature >= 0) & (feature < width)
    if not bool(np.all(np.where(leaf, right == -1, inner_ok))):
        raise BadState("a tree's nodes point outside the tree or split on no feature")
    inner = np.flatnonzero(~leaf)
    left_g = left[inner] + base[inner]
    right_g = right[inner] + base[inner]
    parents = np.bincount(left_g, minlength=total) + np.bincount(right_g, minlength=total)
    expected = np.ones(total, dtype=parents.dtype)
    expected[starts] = 0
    if not np.array_equal(parents, expected):
        raise BadState("a tree's nodes do not form a tree")
    # Depth, level by level from the roots (children come after their parents, so it ends).
    children_of = np.full((total, 2), -1, dtype=np.int64)
    children_of[inner, 0] = left_g
    children_of[inner, 1] = right_g
    level = np.zeros(total, dtype=np.int64)
    frontier = starts
    deepest_declared = max(t[1]["max_depth"] for t in trees)
    d = 0
    while frontier.size:
        if d > deepest_declared:
            raise BadState("a tree is deeper than its max_depth")
        level[frontier] = d
        frontier = children_of[frontier].reshape(-1)
        frontier = frontier[frontier >= 0]
        d += 1
    deepest = np.maximum.reduceat(level, starts)
    declared = np.array([t[1]["max_depth"] for t in trees], dtype=np.int64)
    if np.any(deepest > declared):
        raise BadState("a tree is deeper than its max_depth")


def _check_widths(obj: Any) -> None:
    """A tree, or an ensemble's trees, exactly as wide as the estimator that checks the input
    and calls them (scikit-learn's Cython reads ``X[i, feature]`` without bounds checks)."""
    d = obj.__dict__
    width = d.get("n_features_in_")
    trees = [d["tree_"]] if "tree_" in d else []
    subs = d.get("estimators_")
    if isinstance(subs, np.ndarray) and subs.dtype == object:
        k = d.get("n_trees_per_iteration_")
        if subs.ndim != 2 or (k is not None and subs.shape[1] != k):
            raise BadState(f"a {type(obj).__name__}'s estimators_ has shape {subs.shape}")
        subs = list(subs.reshape(-1))
    if isinstance(subs, list):
        trees += [s.__dict__["tree_"] for s in subs if "tree_" in getattr(s, "__dict__", {})]
    for tree in trees:
        if width is None or getattr(tree, "n_features", width) != width:
            raise BadState(f"a {type(obj).__name__}'s trees are not {width} features wide")


def _member_array(zf: zipfile.ZipFile, name: str, raw: bytes) -> np.ndarray:
    """A flat ``.npy`` member, as a read-only view of the file's bytes where it is stored.

    Through ``zf.open`` the reading costs about 0.03 CPU s for the bench's forest (13 MB): a
    copy per 256 kB chunk and the zip's CRC, which protects nothing here (the file's sha256 was
    checked against its manifest, and anyone who could change it could fix a CRC). The
    decoder copies what it keeps; trees copy their nodes into their own memory.
    """
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        with zf.open(name) as f:
            arr = np.lib.format.read_array(f, allow_pickle=False)
    else:
        local = raw[info.header_offset : info.header_offset + 30]
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise BadState(f"{name}: no local header")
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little")
        start += int.from_bytes(local[28:30], "little")
        end = start + info.file_size
        if end > len(raw):
            raise BadState(f"{name} ends past the end of the file")
        header = io.BytesIO(raw[start : min(end, start + 65_536 + 12)])
        version = np.lib.format.read_magic(header)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(header)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(header)
        else:
            raise BadState(f"{name}: unsupported .npy version {version}")
        if dtype.hasobject:
            raise BadState(f"{name}: object arrays are refused (they hold pickles)")
        count = math.prod(shape)
        offset = start + header.tell()
        if len(shape) != 1 or offset + count * dtype.itemsize > end:
            raise BadState(f"{name}: not a flat array inside its member")
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    if arr.ndim != 1:
        raise BadState(f"{name} is not flat")
    return arr


def read(source: Path | IO[bytes]) -> Any:
    """The model in a ``model.npz`` (a path or an open binary file); raises ``BadState`` for
    a file that is not one."""
    raw = source.read_bytes() if isinstance(source, Path) else source.read()
    try:
        with zipfile.ZipFile(io.BytesIO(raw), "r") as zf:
            names = zf.namelist()
            if STATE_NAME not in names:
                raise BadState(f"no {STATE_NAME} in the file")
            doc = json.loads(zf.read(STATE_NAME))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise BadState(f"{STATE_NAME} is not a {FORMAT} document")
            if doc.get("version") != VERSION:
                raise BadState(f"unsupported state version {doc.get('version')!r}")
            blobs = []
            i = 0
            while f"a{i}.npy" in names:
                blobs.append(_member_array(zf, f"a{i}.npy", raw))
                i += 1
            if len(names) != i + 1:
                raise BadState("unexpected members in the file")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise BadState(f"{type(e).__name__}: {e}") from None
    dec = _Decoder(blobs)
    try:
        model = dec.value(doc.get("root"))
        dec.finish()
    except RecursionError:
        raise BadState("nested too deeply") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        # A well-formed document whose values scikit-learn refuses.
        raise BadState(f"{type(e).__name__}: {e}") from None
    return model

"""The artifact store, on a local folder and on S3 (a real ``moto_server`` over HTTP).

What a user relies on: identical content is stored once, a blob is either complete and verified
or absent, corruption is detected on read, a failed download leaves nothing behind, and a
purged run's bytes really leave the bucket.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shipyard.core.artifacts import ArtifactStore, clean_relpath
from shipyard.core.errors import Internal, InvalidArgument, NotFound, PayloadTooLarge
from tests.conftest import free_port

BUCKET = "shipyard-test"


@pytest.fixture(scope="module")
def moto() -> Iterator[dict]:
    """A real S3 API on 127.0.0.1; yields the fsspec storage options that reach it."""
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    # The region goes in the environment: in client_kwargs it breaks bucket creation.
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto_server did not start")
                time.sleep(0.1)
        opts = {"endpoint_url": endpoint, "key": "test", "secret": "test"}
        fs = s3fs(opts)
        fs.mkdir(BUCKET)
        yield opts
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3fs(opts: dict):  # type: ignore[no-untyped-def]
    """A fresh S3 filesystem with no listing cache: it sees the bucket as it is now."""
    import s3fs as _s3fs

    return _s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **opts)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "artifacts"))
    opts = request.getfixturevalue("moto")
    return ArtifactStore(f"s3://{BUCKET}/{uuid.uuid4().hex}", opts)


def blobs(store: ArtifactStore) -> list[str]:
    """Every blob under the store's root, read from the storage itself."""
    if store.is_local:
        return sorted(str(p) for p in Path(store.root, "blobs").rglob("*") if p.is_file())
    fs = s3fs(store.fs.storage_options)
    try:
        return sorted(fs.find(f"{store.root}/blobs"))
    except FileNotFoundError:
        return []


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def corrupt(store: ArtifactStore, digest: str) -> None:
    """Flip bytes of a stored blob in place, as a bad disk or a meddling hand would."""
    path = store._blob(digest)
    if store.is_local:
        data = bytearray(Path(path).read_bytes())
        data[0] ^= 0xFF
        Path(path).write_bytes(bytes(data))
    else:
        fs = s3fs(store.fs.storage_options)
        data = bytearray(fs.cat_file(path))
        data[0] ^= 0xFF
        fs.pipe_file(path, bytes(data))


# -- writes -------------------------------------------------------------------------------------


def test_put_file_dedups_by_sha256(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"weights " + os.urandom(3000)
    digest = hashlib.sha256(data).hexdigest()
    a = write(tmp_path / "a.bin", data)
    b = write(tmp_path / "b.bin", data)
    assert store.put_file(a) == (digest, len(data))
    assert store.put_file(b) == (digest, len(data))
    assert store.put_stream(iter([data[:10], data[10:]])) == (digest, len(data))
    assert store.put_bytes(data) == (digest, len(data))
    assert len(blobs(store)) == 1
    assert store.exists(digest)
    assert store.read_bytes(digest) == data
    other = store.put_bytes(b"something else")
    assert other[0] != digest and len(blobs(store)) == 2


def test_put_stream_of_many_chunks(store: ArtifactStore) -> None:
    chunks = [os.urandom(100_000) for _ in range(30)]  # 3 MB, spans several read chunks
    digest, size = store.put_stream(iter(chunks))
    whole = b"".join(chunks)
    assert (digest, size) == (hashlib.sha256(whole).hexdigest(), len(whole))
    assert b"".join(store.iter_verified(digest)) == whole


def test_declared_digest_mismatch_stores_nothing(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"the real content"
    wrong = hashlib.sha256(b"what the client claimed").hexdigest()
    with pytest.raises(InvalidArgument) as exc:
        store.put_file(write(tmp_path / "f", data), expected=wrong)
    assert exc.value.details["field"] == "digest"
    with pytest.raises(InvalidArgument):
        store.put_stream(iter([data]), expected=wrong)
    assert blobs(store) == []
    assert not store.exists(hashlib.sha256(data).hexdigest())
    if store.is_local:
        assert list(Path(store.root, "tmp").iterdir()) == []
    # The right declared digest is accepted.
    right = hashlib.sha256(data).hexdigest()
    assert store.put_stream(iter([data]), expected=right)[0] == right


def test_put_stream_over_the_limit_stores_nothing(store: ArtifactStore) -> None:
    with pytest.raises(PayloadTooLarge):
        store.put_stream(iter([b"x" * 600, b"y" * 600]), max_bytes=1000)
    assert blobs(store) == []


def test_bad_digest_is_refused(store: ArtifactStore) -> None:
    for bad in ["", "abc", "A" * 64, "../" + "a" * 61, "g" * 64]:
        with pytest.raises(InvalidArgument):
            store.exists(bad)


# -- reads ----------------------------------------------------------------------------------------


def test_iter_verified_raises_on_a_corrupted_blob(store: ArtifactStore) -> None:
    data = b"model bytes " + os.urandom(5000)
    digest, _ = store.put_bytes(data)
    corrupt(store, digest)
    with pytest.raises(Internal, match="corrupt"):
        b"".join(store.iter_verified(digest))
    with pytest.raises(Internal):
        store.read_bytes(digest)


def test_get_file_leaves_no_partial_file_on_failure(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)  # several chunks: part of it is written before the check
    digest, _ = store.put_bytes(data)
    dest_dir = tmp_path / "out"
    good = dest_dir / "sub" / "good.bin"
    store.get_file(digest, good)
    assert good.read_bytes() == data

    corrupt(store, digest)
    bad = dest_dir / "sub" / "bad.bin"
    with pytest.raises(Internal):
        store.get_file(digest, bad)
    assert not bad.exists()
    # An existing file is not replaced by corrupt content.
    with pytest.raises(Internal):
        store.get_file(digest, good)
    assert good.read_bytes() == data

    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(NotFound):
        store.get_file(missing, dest_dir / "sub" / "missing.bin")
    assert sorted(p.name for p in (dest_dir / "sub").iterdir()) == ["good.bin"]


def test_open_a_missing_blob_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(NotFound):
        store.read_bytes(hashlib.sha256(b"absent").hexdigest())


# -- delete ---------------------------------------------------------------------------------------


def test_delete_returns_bytes_freed(store: ArtifactStore) -> None:
    data = os.urandom(12345)
    digest, _ = store.put_bytes(data)
    assert store.delete(digest) == 12345
    assert not store.exists(digest)
    assert blobs(store) == []
    assert store.delete(digest) == 0


# -- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a.txt", "a.txt"),
        ("dir/a.txt", "dir/a.txt"),
        ("./dir//a.txt", "dir/a.txt"),
        ("dir/./sub/", "dir/sub"),
        ("..hidden/x..y", "..hidden/x..y"),
        ("é/ü.txt", "é/ü.txt"),
    ],
)
def test_clean_relpath_normalises(given: str, expected: str) -> None:
    assert clean_relpath(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "./",
        "..",
        "../x",
        "a/../../x",
        "a/..",
        "/abs",
        "/etc/passwd",
        "//server/share",
        "a\\..\\x",
        "a\\b",
        "a\x00b",
        "x" * 1025,
    ],
)
def test_clean_relpath_refuses(bad: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        clean_relpath(bad, "artifact_path")
    assert exc.value.details["field"] == "artifact_path"
    assert "artifact_path" in exc.value.message


def test_clean_relpath_refuses_non_strings() -> None:
    with pytest.raises(InvalidArgument):
        clean_relpath(None)  # type: ignore[arg-type]


# -- a full tracking round trip on S3 --------------------------------------------------------------


def test_tracking_round_trip_on_s3(moto: dict, tmp_path: Path, db_url: str) -> None:
    from shipyard.core.settings import Settings
    from shipyard.projects.schemas import ProjectCreate
    from shipyard.server.context import Services
    from shipyard.tracking.schemas import ExperimentCreate, RunCreate

    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        home=tmp_path / "home",
        database_url=db_url,
        artifact_root=f"s3://{BUCKET}/{prefix}",
        artifact_storage_options=moto,
        auto_migrate=True,
    )
    s = Services.from_settings(settings)
    try:
        project = f"s3-{uuid.uuid4().hex[:8]}"
        s.projects.create_project(ProjectCreate(name=project))
        exp = s.tracking.create_experiment(project, ExperimentCreate(name="e"))
        run = s.tracking.create_run(project, RunCreate(experiment_id=exp.id))
        keep = s.tracking.create_run(project, RunCreate(experiment_id=exp.id))

        folder = tmp_path / "model"
        (folder / "sub").mkdir(parents=True)
        shared = b"shared by both runs " + os.urandom(100)
        own = b"only in the purged run " + os.urandom(100)
        (folder / "shared.bin").write_bytes(shared)
        (folder / "sub" / "own.bin").write_bytes(own)
        logged = s.tracking.log_artifact(project, run.id, folder, "model")
        assert sorted(a.path for a in logged) == ["model/shared.bin", "model/sub/own.bin"]
        s.tracking.log_artifact(project, keep.id, folder / "shared.bin", "shared.bin")

        listing = s.tracking.list_artifacts(project, run.id, "model")
        assert [(a.path, a.is_dir) for a in listing.files] == [
            ("model/shared.bin", False),
            ("model/sub", True),
        ]
        out = s.tracking.download_artifacts(project, run.id, "model", tmp_path / "dl")
        assert (out / "shared.bin").read_bytes() == shared
        assert (out / "sub" / "own.bin").read_bytes() == own

        fs = s3fs(moto)
        own_key = f"{BUCKET}/{prefix}/blobs/" + _blob_suffix(own)
        shared_key = f"{BUCKET}/{prefix}/blobs/" + _blob_suffix(shared)
        assert fs.exists(own_key) and fs.exists(shared_key)

        s.tracking.delete_run(project, run.id)
        report = s.tracking.purge(project, run_ids=[run.id])
        assert report.runs_purged == 1
        assert report.blobs_deleted == 1
        assert report.bytes_freed == len(own)
        fs = s3fs(moto)
        assert not fs.exists(own_key)
        # Content another run still refers to stays, and still downloads.
        assert fs.exists(shared_key)
        got = s.tracking.download_artifacts(project, keep.id, "shared.bin", tmp_path / "dl2")
        assert got.read_bytes() == shared
        with pytest.raises(NotFound):
            s.tracking.get_run(project, run.id)
    finally:
        s.close()


def _blob_suffix(data: bytes) -> str:
    d = hashlib.sha256(data).hexdigest()
    return f"{d[:2]}/{d[2:4]}/{d}"


def test_named_files_are_stored_by_path_listed_and_kept_out_of_the_blobs(
    store: ArtifactStore, tmp_path: Path
) -> None:
    src = write(tmp_path / "a.jsonl", b'{"x": 1}\n')
    store.put_named("capture/p/e/2026/11/24/00/a.jsonl", src)
    store.put_named("capture/p/e/2026/11/24/01/b.jsonl", write(tmp_path / "b", b"{}\n"))
    store.put_named("capture/p/other/c.jsonl", src)
    assert store.list_named("capture/p/e") == [
        "capture/p/e/2026/11/24/00/a.jsonl",
        "capture/p/e/2026/11/24/01/b.jsonl",
    ]
    assert store.read_named("capture/p/e/2026/11/24/00/a.jsonl") == b'{"x": 1}\n'
    assert store.list_named("capture/nothing-here") == []
    assert blobs(store) == []  # not content-addressed: the blob area is untouched
    for bad in ("../escape.jsonl", "/abs.jsonl", "blobs/ab/cd/x", "tmp/x"):
        with pytest.raises(InvalidArgument) as err:
            store.put_named(bad, src)
        assert err.value.details["field"] == "key"
    with pytest.raises(NotFound):
        store.read_named("capture/p/e/missing.jsonl")

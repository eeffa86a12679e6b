"""semcolor.core.storage: round trips on local paths, file://, memory:// and a real S3 endpoint (moto)."""

from __future__ import annotations

import os
import uuid

import pyarrow.fs as pafs
import pytest

from semcolor.core import storage


@pytest.fixture(params=["path", "file", "memory"])
def root(request, tmp_path) -> str:
    """A fresh folder URL of each non-S3 kind."""
    if request.param == "path":
        return str(tmp_path / "root")
    if request.param == "file":
        return f"file://{tmp_path}/root"
    return f"memory://semcolor-{uuid.uuid4().hex[:8]}/root"


def _round_trip(root: str) -> None:
    files = {"a.png": b"A", "sub/b.JPG": b"BB", "sub/deep/c.txt": b"C", "sub/.hidden.png": b"H"}
    for rel, data in files.items():
        storage.write_bytes(storage.join(root, rel), data)
    assert storage.read_bytes(storage.join(root, "sub/b.JPG")) == b"BB"
    assert storage.exists(storage.join(root, "a.png"))
    assert not storage.exists(storage.join(root, "nope.png"))
    listed = storage.list_files(root)
    assert listed == sorted(storage.join(root, r) for r in ("a.png", "sub/b.JPG", "sub/deep/c.txt"))
    images = storage.list_files(root + "/", {".png", "jpg"})
    assert [storage.relative_key(u, root) for u in images] == ["a", "sub/b"]
    storage.write_bytes(storage.join(root, "a.png"), b"replaced")
    assert storage.read_bytes(storage.join(root, "a.png")) == b"replaced"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "missing.png"))


def test_round_trip(root: str) -> None:
    _round_trip(root)


@pytest.mark.s3
def test_round_trip_s3(s3_prefix: str) -> None:
    _round_trip(s3_prefix)
    fs, path = storage.resolve(s3_prefix)
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == s3_prefix[len("s3://"):]


@pytest.mark.s3
def test_s3_endpoint_explicit_beats_env(s3_server: dict, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    url = f"s3://{s3_server['bucket']}/explicit/x.bin"
    fs, path = storage.resolve(url, endpoint=s3_server["endpoint"])
    with fs.open_output_stream(path) as f:
        f.write(b"ok")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint"])
    assert storage.read_bytes(url) == b"ok"


@pytest.mark.s3
def test_s3_write_is_one_put_and_a_read_a_head_and_a_get(s3_request_log: str, s3_prefix: str) -> None:
    """Each request is a round trip to the store: a body that fits one part goes up in one PUT, not a multipart
    upload's three requests, and comes back in one GET after the HEAD that sizes it, not in 256 kB ranges."""
    from semcolor.benchmarks._latency_proxy import read_request_log

    url = storage.join(s3_prefix, "x.png")
    data = os.urandom(3_000_000)  # a scan's size: more than one 256 kB range
    storage.write_bytes(url, data)
    key = "/" + url[len("s3://"):]
    assert [(m, p) for _, m, p in read_request_log(s3_request_log)] == [("PUT", key)]
    assert storage.read_bytes(url) == data
    assert [(m, p) for _, m, p in read_request_log(s3_request_log)][1:] == [("HEAD", key), ("GET", key)]


@pytest.mark.s3
def test_s3_write_to_a_missing_bucket_fails_on_close(s3_request_log: str) -> None:
    """With delayed open the stream sends nothing before it closes: the error comes then, still from write_bytes."""
    with pytest.raises(OSError, match="no-such-bucket-semcolor"):
        storage.write_bytes("s3://no-such-bucket-semcolor/x.png", b"data")


def test_local_paths_are_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage.write_bytes("rel/x.png", b"1")
    assert storage.list_files("rel") == [str(tmp_path / "rel" / "x.png")]
    assert storage.relative_key(str(tmp_path / "rel" / "x.png"), "rel") == "x"


def test_atomic_write_leaves_no_temp_files(tmp_path) -> None:
    target = tmp_path / "out" / "f.bin"
    for i in range(3):
        storage.write_bytes(str(target), bytes([i]) * 100)
    assert os.listdir(tmp_path / "out") == ["f.bin"]
    assert target.read_bytes() == bytes([2]) * 100


def test_failed_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch) -> None:
    target = tmp_path / "f.bin"
    storage.write_bytes(str(target), b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes(str(target), b"new")
    assert os.listdir(tmp_path) == ["f.bin"]
    assert target.read_bytes() == b"old"


def test_written_files_get_the_umask_mode_like_open(tmp_path) -> None:
    """Atomic writes go through a 0600 temp file; the result has the mode a plain open() gives (0644 under 022)."""
    import os
    import stat

    storage.write_bytes(str(tmp_path / "a" / "out.png"), b"x")
    with open(tmp_path / "plain", "wb") as f:
        f.write(b"x")
    mode = stat.S_IMODE(os.stat(tmp_path / "a" / "out.png").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == storage.FILE_MODE
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # e.g. 0644 under 022: readable by others unless the umask says no


def test_write_needs_bytes(tmp_path) -> None:
    with pytest.raises(TypeError, match="encode first"):
        storage.write_bytes(str(tmp_path / "x"), "text")  # type: ignore[arg-type]


def test_read_retries_transient_errors(monkeypatch) -> None:
    calls = []
    real_resolve = storage.resolve

    def flaky(url, **kw):
        calls.append(url)
        if len(calls) < 3:
            raise OSError("connection reset")
        return real_resolve(url, **kw)

    storage.write_bytes("memory://retry/x", b"data")
    monkeypatch.setattr(storage, "resolve", flaky)
    assert storage.read_bytes("memory://retry/x", retries=3, backoff_s=0.001) == b"data"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(OSError, match="connection reset"):
        storage.read_bytes("memory://retry/x", retries=1, backoff_s=0.001)
    assert len(calls) == 2


def test_missing_file_is_not_retried(tmp_path, monkeypatch) -> None:
    calls = []
    real_resolve = storage.resolve
    monkeypatch.setattr(storage, "resolve", lambda url, **kw: calls.append(url) or real_resolve(url, **kw))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(str(tmp_path / "nope"), retries=3)
    assert len(calls) == 1


def test_bad_urls() -> None:
    with pytest.raises(ValueError, match="empty URL"):
        storage.resolve("")
    with pytest.raises(ValueError, match="no bucket"):
        storage.resolve("s3://")
    with pytest.raises(ValueError, match="no filesystem for scheme"):
        storage.resolve("nosuchscheme://x/y")
    with pytest.raises(ValueError, match="not under prefix"):
        storage.relative_key("s3://b/other/x.png", "s3://b/images")


def test_join_and_scheme() -> None:
    assert storage.join("s3://b/data/", "/images/", "a.png") == "s3://b/data/images/a.png"
    assert storage.join("/tmp", "x") == "/tmp/x"
    assert storage.scheme_of("S3://b/x") == "s3"
    assert storage.is_local("file:///x") and storage.is_local("x/y") and not storage.is_local("memory://x")


def test_filesystems_are_cached(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    a, _ = storage.resolve("s3://bucket-a/x")
    b, _ = storage.resolve("s3://bucket-b/y")
    assert a is b
    c, _ = storage.resolve("s3://bucket-a/x", endpoint="http://127.0.0.1:10")
    assert c is not a
    assert storage.resolve("memory://a/x")[0] is storage.resolve("memory://b/y")[0]


def test_makedirs(root: str) -> None:
    storage.makedirs(storage.join(root, "a", "b"))
    assert storage.exists(storage.join(root, "a", "b"))
    storage.makedirs(storage.join(root, "a", "b"))  # idempotent


@pytest.mark.s3
def test_explicit_s3_options_without_environment(s3_server: dict, monkeypatch) -> None:
    """What a Ray worker started before AWS_* were set sees: no env, settings passed explicitly."""
    opts = storage.S3Options.from_env()
    assert opts.endpoint == s3_server["endpoint"] and opts.access_key == "testing"
    assert "testing" not in repr(opts).replace("access_key='testing'", "")  # secrets stay out of logs
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    url = f"s3://{s3_server['bucket']}/opts/x.bin"
    storage.write_bytes(url, b"explicit", s3=opts)
    assert storage.read_bytes(url, s3=opts) == b"explicit"


def test_read_bytes_returns_raw_bytes_of_compressed_names(tmp_path) -> None:
    import gzip

    blob = gzip.compress(b"payload")
    storage.write_bytes(str(tmp_path / "x.csv.gz"), blob)
    assert storage.read_bytes(str(tmp_path / "x.csv.gz")) == blob  # no transparent decompression

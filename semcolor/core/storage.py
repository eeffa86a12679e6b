"""URL -> filesystem: local paths, ``file://``, ``s3://`` (pyarrow) and any other fsspec scheme.

Every function takes a URL string and resolves it on each call, so URLs (not filesystem
objects) are what travels to Ray workers; each process builds and caches its own filesystems.

- Local: ``/data/x.png``, ``data/x.png`` (made absolute) or ``file:///data/x.png``.
- S3: ``s3://bucket/key`` through :class:`pyarrow.fs.S3FileSystem`. pyarrow itself ignores
  ``AWS_ENDPOINT_URL``; here the endpoint comes from the ``endpoint`` argument of :func:`resolve`,
  else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``. Region from ``AWS_REGION`` /
  ``AWS_DEFAULT_REGION``; credentials from the standard AWS chain (environment, ~/.aws, instance role).
  :class:`S3Options` captures these settings in one process (``S3Options.from_env()``) so they can be
  handed to Ray tasks whose workers were started with another environment.
- Anything else fsspec knows (``memory://``, ``gs://``, ``az://`` ...): the fsspec filesystem wrapped
  in :class:`pyarrow.fs.PyFileSystem`. ``memory://`` lives in one process only.

Writes are atomic: a local file is written to a temp file in the same folder and renamed into place;
an object store gets the whole body in one PUT (encode first, then call :func:`write_bytes`).
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import pyarrow.fs as pafs

log = logging.getLogger(__name__)

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
"""OSErrors that retrying cannot fix; :func:`read_bytes` re-raises them at once."""


def _process_umask() -> int:
    """This process's umask, read without changing it where Linux tells it (/proc), else by setting it back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_process_umask()
"""Mode of files written here (0644 under umask 022), as ``open()`` would give them; a temp file starts at 0600."""


def scheme_of(url: str) -> str:
    """The URL scheme, lower case: ``""`` for a plain local path, else ``file``, ``s3``, ``memory`` ..."""
    if "://" not in url:
        return ""
    return url.split("://", 1)[0].lower()


def is_local(url: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return scheme_of(url) in ("", "file")


def s3_endpoint_from_env() -> str | None:
    """The S3 endpoint users configure for the AWS SDKs: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@dataclass(frozen=True)
class S3Options:
    """S3 settings; None fields fall back to pyarrow's defaults (credentials: the standard AWS chain)."""

    endpoint: str | None = None
    """e.g. ``http://127.0.0.1:9000``; None: AWS itself."""
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> "S3Options":
        """This process's settings: endpoint (see :func:`s3_endpoint_from_env`), region, and static
        credentials when ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` are set (else None: the chain)."""
        env = os.environ.get
        return cls(endpoint=s3_endpoint_from_env(), region=env("AWS_REGION") or env("AWS_DEFAULT_REGION") or None,
                   access_key=env("AWS_ACCESS_KEY_ID") or None, secret_key=env("AWS_SECRET_ACCESS_KEY") or None,
                   session_token=env("AWS_SESSION_TOKEN") or None)


def s3_options_for(urls: Iterable[str]) -> S3Options | None:
    """The driver's S3 settings (:meth:`S3Options.from_env`) when any URL is s3://, else None: what Ray tasks
    get as an argument, since workers may have started before the settings were made."""
    return S3Options.from_env() if any(scheme_of(u) in ("s3", "s3a") for u in urls) else None


@functools.lru_cache(maxsize=16)
def _s3_filesystem(options: S3Options) -> pafs.S3FileSystem:
    """One S3FileSystem per distinct settings in this process.

    ``allow_delayed_open``: an output stream sends nothing until it is written or closed, so a body that fits one
    part goes up in one PUT (three requests otherwise: start, part, complete, each a round trip to the store);
    an error such as a missing bucket is then raised when the stream closes, which every writer here waits for.
    """
    kwargs: dict[str, object] = {"allow_delayed_open": True}
    if options.endpoint:
        endpoint = options.endpoint
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parts.netloc:
            raise ValueError(f"S3 endpoint {endpoint!r} has no host; expected e.g. http://127.0.0.1:9000")
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme
    if options.region:
        kwargs["region"] = options.region
    if options.access_key and options.secret_key:
        kwargs.update(access_key=options.access_key, secret_key=options.secret_key,
                      session_token=options.session_token)
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=16)
def _fsspec_filesystem(protocol: str) -> pafs.PyFileSystem:
    """One fsspec filesystem per protocol, wrapped for pyarrow."""
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    try:
        fs = fsspec.filesystem(protocol)
    except (ValueError, ImportError) as exc:
        raise ValueError(
            f"no filesystem for scheme {protocol!r}: {exc}. Supported: local paths, file://, s3://, "
            "and fsspec schemes whose package is installed (memory://, gs:// with gcsfs, ...)"
        ) from exc
    return PyFileSystem(FSSpecHandler(fs))


def resolve(url: str, *, endpoint: str | None = None, s3: S3Options | None = None) -> tuple[pafs.FileSystem, str]:
    """URL -> (pyarrow filesystem, path on it).

    For s3:// URLs: ``s3`` gives all settings (default: :meth:`S3Options.from_env`); ``endpoint``
    overrides the endpoint of either.

    Local paths come back absolute; S3 paths are ``bucket/key``; fsspec paths are what the
    fsspec filesystem expects (its ``_strip_protocol``).
    """
    if not url:
        raise ValueError("empty URL; expected a local path, file://, s3://bucket/key or another fsspec URL")
    scheme = scheme_of(url)
    if scheme == "":
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(url))
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL {url!r} names host {parts.netloc!r}; use file:///absolute/path")
        return pafs.LocalFileSystem(), os.path.abspath(parts.path)
    if scheme in ("s3", "s3a"):
        path = url.split("://", 1)[1].strip("/")
        if not path:
            raise ValueError(f"S3 URL {url!r} has no bucket; expected s3://bucket/key")
        options = s3 if s3 is not None else S3Options.from_env()
        if endpoint:
            options = replace(options, endpoint=endpoint)
        return _s3_filesystem(options), path
    fs = _fsspec_filesystem(scheme)
    return fs, fs.handler.fs._strip_protocol(url)


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL with ``/``: ``join("s3://b/data", "images", "a.png")``."""
    out = url.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def _normalize_ext(extensions: set[str] | frozenset[str] | None) -> frozenset[str] | None:
    if extensions is None:
        return None
    return frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def list_files(url: str, extensions: set[str] | frozenset[str] | None = None) -> list[str]:
    """All files below ``url``, recursively, as full URLs in the same form as ``url``, sorted.

    ``extensions``: keep only these (case-insensitive, with or without the dot), e.g. ``{".png", "jpg"}``.
    Hidden files (a path part starting with ``.``) are skipped. Raises FileNotFoundError when
    ``url`` does not exist. Use :func:`relative_key` to get each file's key under ``url``.
    """
    fs, root = resolve(url)
    exts = _normalize_ext(extensions)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=False))
    base = url.rstrip("/")
    if scheme_of(url) == "":
        base = os.path.abspath(os.path.expanduser(url))
    root = root.rstrip("/")
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root):].lstrip("/") if info.path.startswith(root) else info.path
        if any(p.startswith(".") for p in rel.split("/")):
            continue
        if exts is not None and posixpath.splitext(rel)[1].lower() not in exts:
            continue
        out.append(f"{base}/{rel}")
    return sorted(out)


def relative_key(url: str, prefix: str) -> str:
    """The path of ``url`` under ``prefix`` without its extension: ``(".../images/a/b.jpg", ".../images") -> "a/b"``."""
    base = prefix.rstrip("/") + "/"
    if scheme_of(prefix) == "" and scheme_of(url) == "":
        base = os.path.abspath(os.path.expanduser(prefix)).rstrip("/") + "/"
        url = os.path.abspath(os.path.expanduser(url))
    if not url.startswith(base):
        raise ValueError(f"{url!r} is not under prefix {prefix!r}")
    return posixpath.splitext(url[len(base):])[0]


def read_bytes(url: str, retries: int = 3, backoff_s: float = 0.2, *, s3: S3Options | None = None) -> bytes:
    """The whole content of ``url``. Transient OSErrors are retried ``retries`` times with
    exponential backoff (``backoff_s``, x2 each try); :data:`PERMANENT_ERRORS` (e.g. a missing file) are not.
    ``s3``: settings for s3:// URLs (default: this process's environment).
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    for attempt in range(retries + 1):
        try:
            fs, path = resolve(url, s3=s3)
            # a random-access file, read whole: raw bytes (never decompressed, even for .gz), and on S3 one HEAD
            # and one GET; an input stream's read() GETs 256 kB ranges one after another (12 round trips for 3 MB)
            with fs.open_input_file(path) as f:
                return f.read()
        except PERMANENT_ERRORS:
            raise
        except OSError as exc:
            if attempt == retries:
                raise
            delay = backoff_s * (2**attempt)
            log.warning("read %s failed (%s); retry %d/%d in %.1fs", url, exc, attempt + 1, retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # the loop always returns or raises


def read_bytes_or_error(url: str, *, s3: S3Options | None = None) -> bytes | Exception:
    """:func:`read_bytes`, with the failure returned instead of raised: for stages that record it against the
    input's key (and fetch many inputs in threads)."""
    try:
        return read_bytes(url, s3=s3)
    except Exception as exc:  # returned, not raised: the caller records it
        return exc


def write_bytes(url: str, data: bytes, *, s3: S3Options | None = None) -> None:
    """Write ``data`` to ``url`` atomically; parent folders are created where they exist (local, memory).

    Local: a temp file beside the target, then ``os.replace`` (readers see the old or the new file,
    never a partial one). Object stores: one upload of the complete body.
    ``s3``: settings for s3:// URLs (default: this process's environment).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_bytes needs bytes, got {type(data).__name__}; encode first")
    fs, path = resolve(url, s3=s3)
    if isinstance(fs, pafs.LocalFileSystem):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), FILE_MODE)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    if not isinstance(fs, pafs.S3FileSystem):
        fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def read_text(url: str) -> str:
    """The content of ``url`` decoded as UTF-8."""
    return read_bytes(url).decode("utf-8")


def write_text(url: str, text: str) -> None:
    """Write ``text`` as UTF-8 to ``url``, atomically (see :func:`write_bytes`)."""
    write_bytes(url, text.encode("utf-8"))


def exists(url: str) -> bool:
    """True when ``url`` is an existing file or folder (an S3 prefix with objects under it counts)."""
    fs, path = resolve(url)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(url: str) -> None:
    """Create the folder ``url`` and its parents; a no-op on S3, where folders are implicit."""
    fs, path = resolve(url)
    if isinstance(fs, pafs.S3FileSystem):
        return
    fs.create_dir(path, recursive=True)

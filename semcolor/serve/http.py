"""HTTP plumbing of the Serve app, free of Ray: body limits, multipart, output format, error statuses.

Everything a bad request can trip over is turned into a :class:`RequestError` (or a
:class:`semcolor.core.decode.DataError` from decoding), each mapped to a 4xx status with a JSON
``{"detail": reason}`` by the app's exception handlers. Only server faults become 500s.
"""

from __future__ import annotations

from typing import Literal

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message

from semcolor.core.decode import DataError

OutputFormat = Literal["png", "jpeg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg"}
FORMAT_ALIASES: dict[str, OutputFormat] = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg"}

# DataError.kind -> HTTP status. Unknown kinds are 422 (the body was understood but cannot be processed).
DATA_ERROR_STATUS: dict[str, int] = {
    "empty": 400,
    "not_image": 415,
    "unsupported": 415,
    "corrupt": 422,
    "too_large": 413,
}


class RequestError(Exception):
    """A client error with its HTTP status and a reason that says what to do."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def status_for(error: DataError) -> int:
    """HTTP status of a decoding failure: 400 empty, 413 too many pixels, 415 not an image, 422 corrupt."""
    return DATA_ERROR_STATUS.get(error.kind, 422)


def check_content_length(header: str | None, max_bytes: int) -> None:
    """Refuse a declared body larger than ``max_bytes`` (413) before reading any of it."""
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        raise RequestError(400, f"invalid Content-Length header {header!r}") from None
    if declared > max_bytes:
        raise RequestError(413, f"body of {declared} bytes exceeds the limit of {max_bytes} bytes "
                                "(max_body_mb); send a smaller image")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, counting the bytes actually received (chunked bodies carry no Content-Length).

    Raises RequestError 413 as soon as the declared or received size passes ``max_bytes``.
    """
    check_content_length(request.headers.get("content-length"), max_bytes)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise RequestError(413, f"body exceeds the limit of {max_bytes} bytes (max_body_mb); "
                                    "send a smaller image")
        chunks.append(chunk)
    return b"".join(chunks)


async def file_from_multipart(request: Request, body: bytes) -> tuple[bytes, str]:
    """The first file part of a multipart/form-data ``body`` (already read) -> (bytes, filename)."""

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    form_request = Request(request.scope, replay)
    try:
        form = await form_request.form(max_files=4, max_fields=16)
    except HTTPException as exc:  # starlette turns MultiPartException into a 400 HTTPException
        raise RequestError(400, f"malformed multipart body: {exc.detail}") from exc
    except MultiPartException as exc:
        raise RequestError(400, f"malformed multipart body: {exc.message}") from exc
    except ValueError as exc:  # e.g. a missing boundary
        raise RequestError(400, f"malformed multipart body: {exc}") from exc
    try:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                return await value.read(), value.filename or "image"
    finally:
        await form.close()
    raise RequestError(400, "multipart body has no file part; send the image as a form field named 'file'")


async def read_image_bytes(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The image of a request -> (bytes, filename): the raw body, or the file of a multipart upload.

    Raises RequestError 413 (too large) or 400 (empty body, malformed or file-less multipart).
    """
    body = await read_body(request, max_bytes)
    filename = "image"
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        body, filename = await file_from_multipart(request, body)
    if not body:
        raise RequestError(400, "empty body; send the image bytes as the request body "
                                "or as a multipart/form-data field named 'file'")
    return body, filename


def _accept_quality(accept: str, media_type: str) -> float:
    """q value that an Accept header gives ``media_type`` (exact or ``image/*`` / ``*/*``); 0 when absent."""
    best = 0.0
    best_specificity = -1
    major = media_type.split("/")[0]
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        rng = fields[0].lower()
        specificity = {media_type: 2, f"{major}/*": 1, "*/*": 0}.get(rng, -1)
        if specificity <= best_specificity:
            continue
        q = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        best, best_specificity = q, specificity
    return best


def choose_format(query: str | None, accept: str | None) -> OutputFormat:
    """Output format of a colorized image: ``?format=`` wins, else the Accept header, else PNG.

    Accept picks JPEG only when it rates ``image/jpeg`` above ``image/png``; an Accept naming neither
    (e.g. ``*/*`` or ``text/html``) gets PNG. An unknown ``format`` value is a 422.
    """
    if query is not None:
        fmt = FORMAT_ALIASES.get(query.lower())
        if fmt is None:
            raise RequestError(422, f"unknown format {query!r}; choose one of png, jpeg")
        return fmt
    if accept and _accept_quality(accept, "image/jpeg") > _accept_quality(accept, "image/png"):
        return "jpeg"
    return "png"

"""Turning an HTTP request into image bytes, or into one clear 4xx line saying what is wrong with it.

Accepted bodies, for every prediction endpoint:
  multipart/form-data        field ``file`` (batch: repeated ``files``), the way browsers and ``curl -F`` upload;
  application/json           ``{"image": "<base64>"}`` (batch: ``{"images": ["<base64>", ...]}``), data URLs too;
  image/* or octet-stream    the raw image bytes as the whole body (single-image endpoints only).
Decoding the image itself is the prediction pipeline's job; this module only finds the bytes.
"""

from __future__ import annotations

import base64
import binascii
import re

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request

SINGLE_FIELD = "file"
BATCH_FIELD = "files"
ACCEPTED = "multipart/form-data (field 'file'), application/json ({\"image\": \"<base64>\"}) or raw image/* bytes"
ACCEPTED_BATCH = "multipart/form-data (repeated field 'files') or application/json ({\"images\": [\"<base64>\", ...]})"
_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.IGNORECASE)
_MAX_NAME = 200  # client-supplied file names are echoed back; keep them to a sane length


class RequestError(Exception):
    """A request the server will not process: ``status`` is the HTTP code, the message one line for a person."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def single_image(request: Request) -> tuple[bytes, str]:
    """(image bytes, name) from a /v1/predict-style request."""
    body = await _body(request)
    kind = media_type(request)
    if kind == "multipart/form-data":
        files = await _form_files(request, SINGLE_FIELD, max_files=8)
        if len(files) > 1:
            raise RequestError(422, f"expected one file in field '{SINGLE_FIELD}', got {len(files)} "
                                    f"(send several to /v1/predict/batch as field '{BATCH_FIELD}')")
        return files[0]
    if kind == "application/json":
        document = _json_object(body)
        if "image" not in document:
            raise RequestError(422, f"JSON body has no \"image\" field (got: {_keys(document)})")
        name = document.get("name") if isinstance(document.get("name"), str) else "image"
        return _decode_base64(document["image"], "image"), _clip(name)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return body, "body"
    raise RequestError(415, f"unsupported media type {kind or '(none)'!r}; send {ACCEPTED}")


async def many_images(request: Request, max_files: int) -> list[tuple[bytes, str]]:
    """[(image bytes, name), ...] from a /v1/predict/batch request, in the order they were sent."""
    body = await _body(request)
    kind = media_type(request)
    if kind == "multipart/form-data":
        return await _form_files(request, BATCH_FIELD, max_files=max_files)
    if kind == "application/json":
        images = _json_object(body).get("images")
        if not isinstance(images, list) or not images:
            raise RequestError(422, "JSON body needs \"images\": a non-empty list of base64 strings")
        _check_count(len(images), max_files)
        return [(_decode_base64(text, f"images[{i}]"), f"images[{i}]") for i, text in enumerate(images)]
    raise RequestError(415, f"unsupported media type {kind or '(none)'!r}; send {ACCEPTED_BATCH}")


async def _body(request: Request) -> bytes:
    body = await request.body()  # the size limit is enforced while this is read (see app.BodySizeLimit)
    if not body:
        raise RequestError(422, "the request body is empty; send an image")
    return body


async def _form_files(request: Request, field: str, max_files: int) -> list[tuple[bytes, str]]:
    # Starlette answers a malformed multipart body (no boundary, broken headers) with a 400 of its own.
    # Its file count limit is left loose so that too many files gets our clearer 413; the body size limit
    # already bounds what a form can hold.
    form = await request.form(max_files=10_000, max_fields=10_000)
    parts = form.getlist(field)
    if not parts:
        raise RequestError(422, f"no multipart field named '{field}' (got: {_keys(form)})")
    _check_count(len(parts), max_files)
    files = []
    for part in parts:
        if not isinstance(part, UploadFile):
            raise RequestError(422, f"field '{field}' must be a file upload, not a text value")
        data = await part.read()
        name = _clip(part.filename or field)
        if not data:
            raise RequestError(422, f"{name}: the uploaded file is empty")
        files.append((data, name))
    return files


def _json_object(body: bytes) -> dict:
    # orjson bounds what a document may cost: nesting over 1024 levels and numbers beyond a double are
    # errors, not a RecursionError or a 5,000-digit int (the standard json module allows both).
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"the body is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                f"{_json_problem(exc.msg)})") from None
    if not isinstance(document, dict):
        raise RequestError(422, f"the JSON body must be an object, not {type(document).__name__}")
    return document


def _json_problem(message: str) -> str:
    for known, words in (("depth limit", "nested too deeply"), ("infinity", "number too large")):
        if known in message:
            return words
    return "unexpected content"


def _decode_base64(text, field: str) -> bytes:
    if not isinstance(text, str):
        raise RequestError(422, f"field '{field}' must be a base64 string, not {type(text).__name__}")
    text = _DATA_URL.sub("", text.strip(), count=1)
    text = re.sub(r"\s+", "", text)
    try:
        data = base64.b64decode(text, altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, f"field '{field}' is not valid base64") from None
    if not data:
        raise RequestError(422, f"field '{field}' is empty")
    return data


def _check_count(count: int, max_files: int) -> None:
    if count > max_files:
        raise RequestError(413, f"too many images in one request: {count} (the limit is {max_files})")


def _keys(mapping) -> str:
    keys = sorted({str(k)[:40] for k in mapping.keys()})  # the client's own names, kept short when echoed
    return ", ".join(repr(k) for k in keys[:10]) if keys else "nothing"


def _clip(name: str) -> str:
    return name if len(name) <= _MAX_NAME else name[:_MAX_NAME - 3] + "..."

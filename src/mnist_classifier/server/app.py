"""The HTTP face of the classifier: a FastAPI app with the REST API, the drawing page and offline API docs.

    mnist-classifier serve                                       # or, with the same connection guards:
    uvicorn --factory mnist_classifier.server.app:create_app --http mnist_classifier.server.protocol:GuardedHttpTools

The app holds no image logic of its own: bytes go to the prediction pipeline (``predict.Predictor``), whose
rows come back as JSON. What the app adds is HTTP: parsing uploads, limits, status codes, concurrency.

Limits, from the outside in (``serve`` adds the connection-level ones of ``protocol``):
  Host header       one of ``allowed_hosts`` (localhost by default), else 400: no DNS-rebinding page reaches it
  admission         at most ``max_pending`` requests with a body in progress, holding at most
                    ``max_pending_bytes`` of bodies; beyond that 503 with Retry-After, before the body is read
  body              at most ``max_request_bytes``, enforced while it streams in (413)
  images            by pixel count, read from the header before decoding: small ones micro-batched on the
                    inference thread, large ones in a bounded lane of their own, over the budget 413 (``lanes``)
  a client that disconnects while its image waits has it taken out of the queue, unread
Every answer carries security headers (a Content-Security-Policy that allows this server's own files only,
nosniff, no framing, no referrer), and every error body is one line of JSON without exception text.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..engines import DEFAULT_ENGINE
from . import inputs, schemas
from .batching import MicroBatcher
from .inputs import RequestError
from .lanes import Lanes, too_large
from .limits import (DEFAULT_ALLOWED_HOSTS, DEFAULT_MAX_BATCH_FILES, DEFAULT_MAX_IMAGE_PIXELS,
                     DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_REQUEST_BYTES,
                     RETRY_AFTER_SECONDS)

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = [
    # The page and the docs load only this server's own scripts and styles (no inline code), draw on
    # canvases (blob:/data: images) and talk to this server alone; nobody may frame them.
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                 b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
log = logging.getLogger("mnist_classifier.server")
_WARM_UP_DIGIT = np.zeros((28, 28), np.uint8)
_WARM_UP_DIGIT[4:24, 13:16] = 255  # a "1": a blank image would stop at "no digit" and never reach the model


def create_app(model=None, *, device: str = "auto", max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
               max_batch_files: int = DEFAULT_MAX_BATCH_FILES, max_pending: int = DEFAULT_MAX_PENDING,
               max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, allowed_hosts=DEFAULT_ALLOWED_HOSTS,
               log_requests: bool = False, torch_threads: int | None = None,
               engine: str = DEFAULT_ENGINE) -> FastAPI:
    """Build the app around one model, loaded (and warmed up) here, once.

    ``model``: a model file path, a ``LoadedModel``, a ready ``Predictor``, or None for the shipped model.
    ``allowed_hosts``: the names clients may use to reach the server (Host header); ``["*"]``: any.
    ``log_requests``: log one line per request (method, path, status, milliseconds) on this module's logger.
    ``torch_threads``: the engine's intra-op threads for this process (None: the engine's default). The server's
    forward passes are small, so extra threads gain little, and on a busy machine a parallel region
    waits for its slowest thread, which another process may be holding off its core.
    ``engine``: what runs the model, a name from ``engines.ENGINES`` (a ready ``Predictor`` brings its own).
    """
    service = Service(_predictor(model, device, engine, torch_threads), max_request_bytes=max_request_bytes,
                      max_batch_files=max_batch_files, max_pending=max_pending,
                      lanes=Lanes(max_image_pixels))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Everything loaded so far (torch, the model, the app) lives as long as the server: keep it out of
        # the garbage collector's full passes, which would otherwise walk it all, again and again under
        # load, and stall every request in flight while they do.
        gc.freeze()
        yield
        service.close()  # after uvicorn has finished the last request

    app = FastAPI(title="mnist-classifier", version=__version__, lifespan=lifespan,
                  description="Read handwritten digits from images. The drawing page is at `/`.",
                  docs_url=None, redoc_url=None)  # /docs is served from local files below, no CDN
    app.state.service = service
    _add_api_routes(app, service)
    _add_page_routes(app)
    _add_error_handlers(app)
    # Added innermost first: the request log sees every answer, each of which gets the security headers.
    app.add_middleware(Admission, max_body_bytes=max_request_bytes, max_pending=max_pending,
                       max_pending_bytes=max_pending_bytes)
    app.add_middleware(HostCheck, allowed_hosts=list(allowed_hosts))
    app.add_middleware(SecurityHeaders)
    if log_requests:
        app.add_middleware(RequestLog)
    return app


def _predictor(model, device: str, engine: str, threads: int | None):
    from ..engines import open_engine
    from ..predict import Predictor

    if isinstance(model, Predictor):
        return model
    # workers=1: the server's batches are small and arrive many times a second; decoding them in-process
    # beats shipping them to worker processes (and forking a threaded server is best avoided).
    return Predictor(open_engine(engine, model, device=device, threads=threads), workers=1)


class Service:
    """The one model and the one thread that runs it, shared by all requests, and the heavy lane beside it."""

    def __init__(self, predictor, max_request_bytes: int, max_batch_files: int, max_pending: int, lanes: Lanes):
        self.predictor = predictor
        self.max_request_bytes = max_request_bytes
        self.max_batch_files = max_batch_files
        self.max_pending = max_pending
        self.lanes = lanes
        # One thread runs the small images' batches, so concurrent requests share forward passes; the heavy
        # lane's thread may read a large image at the same time (a Predictor is safe to share).
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mnist-inference")
        self.batcher = MicroBatcher(self.predict_rows, self.executor)
        self.executor.submit(self.predictor.predict, _WARM_UP_DIGIT).result()  # first pass allocates; not a user's
        self.ready = True

    # ---- the lanes: every image is routed by its pixel count before anything decodes it

    async def predict_one(self, data: bytes, name: str) -> dict:
        lane, pixels = self.lanes.classify(data)
        if lane == "refuse":
            raise RequestError(413, too_large(name, pixels, self.lanes.max_image_pixels))
        if lane == "light":
            return await self.batcher.submit((data, name))
        return await self._heavy(self.heavy_row, data, name)

    async def predict_many(self, items, include_image: bool) -> list[dict]:
        """One row per item, in order; a refused image costs its own row, as an undecodable one does."""
        lanes = [self.lanes.classify(data) for data, _ in items]
        rows: list = [None] * len(items)
        for i, ((_, name), (lane, pixels)) in enumerate(zip(items, lanes)):
            if lane == "refuse":
                rows[i] = self.error_row(too_large(name, pixels, self.lanes.max_image_pixels), name, include_image)
        by_lane = {lane: [i for i, (kind, _) in enumerate(lanes) if kind == lane] for lane in ("light", "heavy")}
        work = {}
        if by_lane["heavy"]:
            heavy = [items[i] for i in by_lane["heavy"]]
            work["heavy"] = self._heavy(self.heavy_rows, heavy, include_image)
        if by_lane["light"]:
            work["light"] = self.run(self.predict_rows, [items[i] for i in by_lane["light"]], include_image)
        for lane, answers in zip(work, await asyncio.gather(*work.values())):
            for i, row in zip(by_lane[lane], answers):
                rows[i] = row
        return rows

    async def read_number(self, data: bytes, name: str) -> dict:
        lane, pixels = self.lanes.classify(data)
        if lane == "refuse":
            raise RequestError(413, too_large(name, pixels, self.lanes.max_image_pixels))
        if lane == "light":
            return await self.run(self.number_row, data, name)
        return await self._heavy(self.heavy_number_row, data, name)

    def _heavy(self, function, *args):
        work = self.lanes.submit(function, *args)
        if work is None:
            raise RequestError(503, "server busy with large images; retry shortly",
                               headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return work

    # ---- what runs on the threads

    def predict_rows(self, items, include_image: bool = True) -> list[dict]:
        """[(bytes, name), ...] -> contract rows; runs on the inference thread."""
        predictions = self.predictor.predict_many([data for data, _ in items], names=[name for _, name in items])
        return [prediction.to_dict(include_image=include_image) for prediction in predictions]

    def number_row(self, data: bytes, name: str) -> dict:
        return self.predictor.read_number(data, name=name).to_dict()

    # In the heavy lane the budget is checked again on the whole file (the first bytes held no header).

    def within_budget(self, data: bytes, name: str) -> None:
        pixels = self.lanes.over_budget(data)
        if pixels:
            raise RequestError(413, too_large(name, pixels, self.lanes.max_image_pixels))

    def heavy_row(self, data: bytes, name: str) -> dict:
        self.within_budget(data, name)
        return self.predict_rows([(data, name)])[0]

    def heavy_number_row(self, data: bytes, name: str) -> dict:
        self.within_budget(data, name)
        return self.number_row(data, name)

    def heavy_rows(self, items, include_image: bool) -> list[dict]:
        rows = []
        for data, name in items:
            try:
                self.within_budget(data, name)
            except RequestError as refused:
                rows.append(self.error_row(refused.message, name, include_image))
                continue
            rows += self.predict_rows([(data, name)], include_image)
        return rows

    @staticmethod
    def error_row(message: str, name: str, include_image: bool) -> dict:
        from ..predict import Prediction

        return Prediction(path=name, error=message).to_dict(include_image=include_image)

    async def run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def model_info(self) -> dict:
        return jsonable_encoder({**self.predictor.metadata,
                                 "server": {"engine": self.predictor.engine.name,
                                            "max_request_bytes": self.max_request_bytes,
                                            "max_batch_files": self.max_batch_files,
                                            "max_pending": self.max_pending,
                                            "max_image_pixels": self.lanes.max_image_pixels,
                                            "batching": self.batcher.stats()}})

    def close(self) -> None:
        self.ready = False
        self.executor.shutdown(wait=True)
        self.lanes.close()


# ---------------------------------------------------------------- API

def _add_api_routes(app: FastAPI, service: Service) -> None:
    errors = {413: {"model": schemas.ErrorBody, "description": "request body or file count over the limit"},
              415: {"model": schemas.ErrorBody, "description": "unsupported Content-Type"},
              422: {"model": schemas.ErrorBody, "description": "no image, or one that cannot be decoded"}}

    @app.post("/v1/predict", tags=["predict"], summary="Read the digit in one image",
              responses={200: {"model": schemas.Prediction}, **errors}, openapi_extra=schemas.SINGLE_BODY)
    async def predict(request: Request):
        """One image in, one prediction row out (the same object as one `predict --json` row), plus
        `image`: the 28×28 grid (ink 1.0 on a 0.0 background) the model actually saw. `digit` is null when
        the image holds no digit (`reason` says why)."""
        data, name = await inputs.single_image(request)
        row = await unless_disconnected(request, service.predict_one(data, name))
        if row.get("error"):
            raise RequestError(422, row["error"])
        return _json(row)

    @app.post("/v1/predict/batch", tags=["predict"], summary="Read the digit in each of several images",
              responses={200: {"model": list[schemas.Prediction]}, **errors}, openapi_extra=schemas.BATCH_BODY)
    async def predict_batch(request: Request, include_image: bool = False):
        """Several images in, one row per image out, in order (like `predict --json`). A file that cannot
        be decoded gets a row with `error` set; the others are still read."""
        items = await inputs.many_images(request, service.max_batch_files)
        rows = await unless_disconnected(request, service.predict_many(items, include_image))
        return _json(rows)

    @app.post("/v1/predict/number", tags=["predict"], summary="Read a multi-digit number from one image",
              responses={200: {"model": schemas.NumberResult}, **errors}, openapi_extra=schemas.SINGLE_BODY)
    async def predict_number(request: Request):
        """Finds the digits left to right and reads each; `number` is their concatenation (null when no
        digit is found)."""
        data, name = await inputs.single_image(request)
        result = await unless_disconnected(request, service.read_number(data, name))
        if result.get("error"):
            raise RequestError(422, result["error"])
        return _json(result)

    @app.get("/v1/model", tags=["model"], summary="The model being served: metadata and test metrics",
             responses={200: {"model": schemas.ModelInfo}})
    async def model_info():
        return service.model_info()

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers",
             responses={200: {"model": schemas.Health}})
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: the model is loaded and accepting work",
             responses={200: {"model": schemas.Ready}, 503: {"model": schemas.ErrorBody}})
    async def readyz():
        if not service.ready:
            return JSONResponse({"status": "not ready", "detail": "the model is shutting down"}, status_code=503)
        return {"status": "ready", "architecture": service.predictor.metadata.get("architecture")}


async def unless_disconnected(request: Request, work):
    """Await ``work``; if the client disconnects first, cancel it, which takes its images out of the
    queues they wait in (nobody would read the answer), and raise ClientDisconnect."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise ClientDisconnect()
    return task.result()


async def _disconnected(request: Request) -> None:
    # Once the body is read, the server's next message for this request is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _json(content) -> Response:
    # The rows are already plain JSON types: FastAPI's generic encoder would walk every value to convert
    # it for nothing, and orjson writes a row, 784-number image included, in native code as it stands.
    return Response(orjson.dumps(content), media_type="application/json")


# ---------------------------------------------------------------- page and docs

def _add_page_routes(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC / "docs.html")


# ---------------------------------------------------------------- errors

def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        # Nobody is there to read an answer; 499 (as nginx logs it) only names the case in the request log.
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return JSONResponse({"detail": f"invalid {where or 'request'}: {first.get('msg', 'invalid value')}"},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # A bug, not a bad upload: log it in full, answer one generic line (the log has the details; an
        # exception's text may hold paths or data that are nobody else's business), keep serving.
        log.error("%s %s failed:\n%s", request.method, request.url.path, traceback.format_exc())
        return JSONResponse({"detail": "internal error (the server's log has the details)"}, status_code=500)


# ---------------------------------------------------------------- middleware (plain ASGI: no per-request task)

class Admission:
    """Bounds the work in progress, before any of it is read.

    A request with a body (POST and the like) is admitted while fewer than ``max_pending`` are in progress
    and their bodies (as declared, or as received when sent chunked) hold at most ``max_pending_bytes``;
    otherwise 503 with Retry-After. A body over ``max_body_bytes`` is a 413: at once when Content-Length
    says so, else as soon as the streamed body passes the limit, so an oversized upload is never held in
    memory. (FastAPI's own ``max_body_size`` answers in plain text; this keeps every error the same
    one-line JSON and names the limit.)
    """

    def __init__(self, app, max_body_bytes: int, max_pending: int, max_pending_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.pending = 0  # requests admitted and not finished, and the body bytes they hold
        self.pending_bytes = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            return await _send_json(send, 400, f"invalid Content-Length {declared[:40]!r}")
        if declared is not None and int(declared) > self.max_body_bytes:
            return await _send_json(send, 413, self._too_large())
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and not declared:
            return await self.app(scope, receive, send)
        reserved = int(declared or 0)
        if self.pending >= self.max_pending or self.pending_bytes + reserved > self.max_pending_bytes:
            return await _send_json(send, 503, _BUSY, retry_after=True)
        self.pending += 1
        self.pending_bytes += reserved
        received = 0

        async def limited_receive():
            nonlocal received, reserved
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:  # a chunked body with no Content-Length
                    raise RequestError(413, self._too_large())
                if received > reserved:  # ... which reserves its bytes as they come
                    if self.pending_bytes + received - reserved > self.max_pending_bytes:
                        raise RequestError(503, _BUSY, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
                    self.pending_bytes += received - reserved
                    reserved = received
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.pending -= 1
            self.pending_bytes -= reserved

    def _too_large(self) -> str:
        return f"request body too large (the limit is {self.max_body_bytes / 2**20:g} MiB)"


_BUSY = "server busy (too many requests in progress); retry shortly"


class HostCheck:
    """Answer only requests whose Host header names this server (``allowed_hosts``; "*.example.org" takes
    its subdomains, "*" any name), so that a page of another site cannot reach it by DNS rebinding. A
    refusal is JSON with a ``detail``, as every other error, and says how to allow the name."""

    def __init__(self, app, allowed_hosts):
        self.app = app
        self.any = "*" in allowed_hosts
        self.names = {h.lower() for h in allowed_hosts if not h.startswith("*")}
        self.suffixes = tuple(h[1:].lower() for h in allowed_hosts if h.startswith("*."))

    async def __call__(self, scope, receive, send):
        if self.any or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
        host = host_name(header)
        if host in self.names or (self.suffixes and host.endswith(self.suffixes)):
            return await self.app(scope, receive, send)
        shown = header[:80] or "(none)"
        detail = (f"this server does not answer to the Host {shown!r} (start it with --allowed-host "
                  f"{host or 'NAME'} to allow that name)")
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)


def host_name(header: str) -> str:
    """The name in a Host header, without the port: "localhost:8000" -> "localhost", "[::1]:8000" -> "::1"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecurityHeaders:
    """SECURITY_HEADERS on every answer: pages, API, errors (those of the other middleware included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestLog:
    """One line per request: client, method, path, status, milliseconds."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_recording_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info('%s "%s %s" %d %.1f ms', client[0], scope["method"], scope["path"], status,
                     (time.perf_counter() - start) * 1000)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1").strip()
    return None


async def _send_json(send, status: int, detail: str, retry_after: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    # Connection: close, because the unread body is still on its way and cannot be reused as the next request.
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if retry_after:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The HTTP face of the classifier: a FastAPI app with the REST API, the drawing page and offline API docs.

    uvicorn --factory mnist_classifier.server.app:create_app     # or: mnist-classifier serve

The app holds no image logic of its own: bytes go to the prediction pipeline (``predict.Predictor``), whose
rows come back as JSON. What the app adds is HTTP: parsing uploads, limits, status codes, concurrency.
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

from .. import __version__
from . import inputs, schemas
from .batching import MicroBatcher
from .inputs import RequestError

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024  # a 12-megapixel phone JPEG fits; a 20 MB upload does not
DEFAULT_MAX_BATCH_FILES = 64  # keeps one batch request from holding the model for long
log = logging.getLogger("mnist_classifier.server")
_WARM_UP_DIGIT = np.zeros((28, 28), np.uint8)
_WARM_UP_DIGIT[4:24, 13:16] = 255  # a "1": a blank image would stop at "no digit" and never reach the model


def create_app(model=None, *, device: str = "auto", max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
               max_batch_files: int = DEFAULT_MAX_BATCH_FILES, log_requests: bool = False,
               torch_threads: int | None = None, engine: str = "torch") -> FastAPI:
    """Build the app around one model, loaded (and warmed up) here, once.

    ``model``: a model file path, a ``LoadedModel``, a ready ``Predictor``, or None for the shipped model.
    ``log_requests``: log one line per request (method, path, status, milliseconds) on this module's logger.
    ``torch_threads``: the engine's intra-op threads for this process (None: the engine's default). The server's
    forward passes are small, so extra threads gain little, and on a busy machine a parallel region
    waits for its slowest thread: on 2 shared cores, 1 thread was 4-40x faster per image than 2.
    ``engine``: what runs the model, a name from ``engines.ENGINES`` (a ready ``Predictor`` brings its own).
    """
    service = Service(_predictor(model, device, engine, torch_threads), max_request_bytes=max_request_bytes,
                      max_batch_files=max_batch_files)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Everything loaded so far (torch, the model, the app) lives as long as the server: keep it out of
        # the garbage collector's full passes, which would otherwise walk it all and stall every request
        # in flight for about 100 ms a few times a minute under load.
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
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
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
    """The one model and the one thread that runs it, shared by all requests."""

    def __init__(self, predictor, max_request_bytes: int, max_batch_files: int):
        self.predictor = predictor
        self.max_request_bytes = max_request_bytes
        self.max_batch_files = max_batch_files
        # One thread owns the model: requests never run it concurrently, and batching makes that cheap.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mnist-inference")
        self.batcher = MicroBatcher(self.predict_rows, self.executor)
        self.executor.submit(self.predictor.predict, _WARM_UP_DIGIT).result()  # first pass allocates; not a user's
        self.ready = True

    def predict_rows(self, items, include_image: bool = True) -> list[dict]:
        """[(bytes, name), ...] -> contract rows; runs on the inference thread."""
        predictions = self.predictor.predict_many([data for data, _ in items], names=[name for _, name in items])
        return [prediction.to_dict(include_image=include_image) for prediction in predictions]

    def read_number(self, data: bytes, name: str) -> dict:
        return self.predictor.read_number(data, name=name).to_dict()

    async def run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def model_info(self) -> dict:
        return jsonable_encoder({**self.predictor.metadata,
                                 "server": {"engine": self.predictor.engine.name,
                                            "max_request_bytes": self.max_request_bytes,
                                            "max_batch_files": self.max_batch_files,
                                            "batching": self.batcher.stats()}})

    def close(self) -> None:
        self.ready = False
        self.executor.shutdown(wait=True)


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
        row = await service.batcher.submit((data, name))
        if row.get("error"):
            raise RequestError(422, row["error"])
        return _json(row)

    @app.post("/v1/predict/batch", tags=["predict"], summary="Read the digit in each of several images",
              responses={200: {"model": list[schemas.Prediction]}, **errors}, openapi_extra=schemas.BATCH_BODY)
    async def predict_batch(request: Request, include_image: bool = False):
        """Several images in, one row per image out, in order (like `predict --json`). A file that cannot
        be decoded gets a row with `error` set; the others are still read."""
        items = await inputs.many_images(request, service.max_batch_files)
        rows = await service.run(service.predict_rows, items, include_image)
        return _json(rows)

    @app.post("/v1/predict/number", tags=["predict"], summary="Read a multi-digit number from one image",
              responses={200: {"model": schemas.NumberResult}, **errors}, openapi_extra=schemas.SINGLE_BODY)
    async def predict_number(request: Request):
        """Finds the digits left to right and reads each; `number` is their concatenation (null when no
        digit is found)."""
        data, name = await inputs.single_image(request)
        result = await service.run(service.read_number, data, name)
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


def _json(content) -> Response:
    # The rows are already plain JSON types: orjson writes one, with its 784-number image, in ~7 us where
    # json.dumps takes ~90 us and FastAPI's generic encoder more; at hundreds of requests/s that counts.
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
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

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
        # A bug, not a bad upload: log it in full, answer one line, keep serving.
        log.error("%s %s failed:\n%s", request.method, request.url.path, traceback.format_exc())
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {first_line}"}, status_code=500)


# ---------------------------------------------------------------- middleware (plain ASGI: no per-request task)

class BodySizeLimit:
    """413 for a body over ``max_bytes``: at once when Content-Length says so, else as soon as the streamed
    body passes the limit, so an oversized upload is never held in memory. (FastAPI's own ``max_body_size``
    answers in plain text; this keeps every error the same one-line JSON and names the limit.)"""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            return await _send_json(send, 400, f"invalid Content-Length {declared[:40]!r}")
        if declared is not None and int(declared) > self.max_bytes:
            return await _send_json(send, 413, self._too_large())
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body with no Content-Length
                    raise RequestError(413, self._too_large())
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> str:
        return f"request body too large (the limit is {self.max_bytes / 2**20:g} MiB)"

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


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    # Connection: close, because the unread body is still on its way and cannot be reused as the next request.
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

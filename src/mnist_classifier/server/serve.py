"""Running the app with uvicorn: what ``mnist-classifier serve`` calls.

One process is the default: it loads the model once and answers concurrent requests through one
micro-batching inference thread. ``workers > 1`` starts that many processes on the same port (uvicorn's
own supervisor), each with its own copy of the model: image decoding is Python that holds the GIL, so a
second process is how a second core helps.

uvicorn runs with the connection guards of ``protocol`` (request-head and body timeouts, a head size
limit), closes idle keep-alive connections after ``limits.KEEP_ALIVE_TIMEOUT`` seconds and, past
``limits.MAX_CONNECTIONS`` open connections or requests in progress, answers 503 itself.
"""

from __future__ import annotations

import errno
import json
import os
import socket

from ..errors import ConfigError
from . import limits as limit

_SETTINGS_ENV = "MNIST_CLASSIFIER_SERVE"  # how worker processes learn the settings (uvicorn gives them no arguments)
LOG_FORMAT = "%(asctime)s %(message)s"


def serve(model=None, host: str = limit.DEFAULT_HOST, port: int = limit.DEFAULT_PORT, device: str = "auto",
          workers: int = 1, log_requests: bool = True, allowed_hosts=None, engine: str = "torch", **limits) -> None:
    """Serve until interrupted. A bad model file fails here, with one line, before the port is opened.

    ``allowed_hosts``: Host header values to answer (None: localhost, plus ``host`` when it names one
    interface). ``limits``: create_app's (max_pending, max_image_pixels, ...).
    """
    import uvicorn

    from ..engines import open_engine
    from .app import create_app

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    for name, value in limits.items():
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    check_port_free(host, port)
    settings = {"allowed_hosts": allowed_hosts or default_hosts(host),
                **{name: value for name, value in limits.items() if value is not None}}
    options = uvicorn_options(host, port)
    if workers == 1:
        app = create_app(model, device=device, log_requests=log_requests, torch_threads=torch_threads(1),
                         engine=engine, **settings)
        uvicorn.run(app, **options)
        return
    # A bad model file: one clear line now, not one per worker (and an onnx export lands in the cache once).
    open_engine(engine, model, device=device)
    os.environ[_SETTINGS_ENV] = json.dumps({"model": None if model is None else str(model), "device": device,
                                            "log_requests": log_requests, "workers": workers, "engine": engine,
                                            **settings})
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)


def check_port_free(host: str, port: int) -> None:
    """One clear line for a port that is taken or an address this machine does not have, instead of
    uvicorn's log lines and a bare exit once the model is loaded."""
    if port == 0:  # any free port
        return
    try:
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is free
            probe.bind((host, port))
    except OSError as exc:
        hint = "; is another server running there? choose another --port" if exc.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}{hint}") from None


def uvicorn_options(host: str, port: int) -> dict:
    """How uvicorn runs the app: the connection guards and limits, the log, a bounded graceful shutdown."""
    from .protocol import PROTOCOL

    return dict(host=host, port=port, http=PROTOCOL, timeout_keep_alive=limit.KEEP_ALIVE_TIMEOUT,
                limit_concurrency=limit.MAX_CONNECTIONS, timeout_graceful_shutdown=5,
                access_log=False, log_config=_log_config())  # our own request log line carries the latency


def default_hosts(host: str) -> list[str]:
    """localhost, and the address served on when it is one interface's (a wildcard says nothing)."""
    wildcard = host in ("", "0.0.0.0", "::")
    return list(limit.DEFAULT_ALLOWED_HOSTS) + ([] if wildcard or host in limit.DEFAULT_ALLOWED_HOSTS else [host])


def app_from_environment():
    """The app factory each worker process calls (settings come from the parent through the environment)."""
    from .app import create_app

    settings = json.loads(os.environ.get(_SETTINGS_ENV, "{}"))
    workers = settings.pop("workers", 1)
    return create_app(settings.pop("model", None), device=settings.pop("device", "auto"),
                      log_requests=settings.pop("log_requests", True), torch_threads=torch_threads(workers),
                      engine=settings.pop("engine", "torch"),
                      **settings)


def torch_threads(workers: int) -> int:
    """Per process: its share of the cores, less one for the event loop (HTTP, uploads, JSON), at least 1."""
    return max(1, (os.cpu_count() or 1) // max(1, workers) - 1)


def _log_config() -> dict:
    """uvicorn's startup lines plus one line per request from our logger, all on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT, "datefmt": "%Y-%m-%d %H:%M:%S"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "mnist_classifier.server": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }

"""Running the app with uvicorn: what ``mnist-classifier serve`` calls.

One process is the default: it loads the model once and answers concurrent requests through one
micro-batching inference thread. ``workers > 1`` starts that many processes on the same port (uvicorn's
own supervisor), each with its own copy of the model: image decoding is Python that holds the GIL, so a
second process is how a second core helps.
"""

from __future__ import annotations

import json
import os

from ..errors import ConfigError

_SETTINGS_ENV = "MNIST_CLASSIFIER_SERVE"  # how worker processes learn the settings (uvicorn gives them no arguments)
LOG_FORMAT = "%(asctime)s %(message)s"


def serve(model=None, host: str = "127.0.0.1", port: int = 8000, device: str = "auto", workers: int = 1,
          log_requests: bool = True, engine: str = "torch") -> None:
    """Serve until interrupted. A bad model file fails here, with one line, before the port is opened."""
    import uvicorn

    from ..engines import open_engine
    from .app import create_app

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    options = dict(host=host, port=port, access_log=False,  # our own request log line carries the latency
                   log_config=_log_config(), timeout_graceful_shutdown=5)
    if workers == 1:
        app = create_app(model, device=device, log_requests=log_requests, torch_threads=torch_threads(1),
                         engine=engine)
        uvicorn.run(app, **options)
        return
    # A bad model file: one clear line now, not one per worker (and an onnx export lands in the cache once).
    open_engine(engine, model, device=device)
    os.environ[_SETTINGS_ENV] = json.dumps({"model": None if model is None else str(model), "device": device,
                                            "log_requests": log_requests, "workers": workers, "engine": engine})
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)


def app_from_environment():
    """The app factory each worker process calls (settings come from the parent through the environment)."""
    from .app import create_app

    settings = json.loads(os.environ.get(_SETTINGS_ENV, "{}"))
    return create_app(settings.get("model"), device=settings.get("device", "auto"),
                      log_requests=settings.get("log_requests", True),
                      torch_threads=torch_threads(settings.get("workers", 1)), engine=settings.get("engine", "torch"))


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

"""REST API and drawing page: ``create_app()`` builds the FastAPI app; ``mnist-classifier serve`` runs it."""

__all__ = ["create_app"]


def __getattr__(name):
    # Loaded on first use, so that `limits` (read by the CLI's --help) comes without FastAPI and torch.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""REST API and drawing page: ``create_app()`` builds the FastAPI app; ``mnist-classifier serve`` runs it."""

from .app import create_app

__all__ = ["create_app"]

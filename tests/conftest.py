"""Shared fixtures: the real MNIST files from ../shared/mnist, the shipped model, a headless Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and pages the browser tests leave for a person to look at


# Made absolute once: MNIST_DATA may be relative (../shared/mnist), and some tests and the commands they
# start run in another working directory.
if os.environ.get("MNIST_DATA"):
    os.environ["MNIST_DATA"] = str(Path(os.environ["MNIST_DATA"]).resolve())


def _mnist_dir() -> Path:
    return Path(os.environ.get("MNIST_DATA") or ROOT.parent / "shared" / "mnist")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    folder = _mnist_dir()
    assert (folder / "t10k-images-idx3-ubyte.gz").is_file(), f"MNIST files expected in {folder} (set MNIST_DATA)"
    return folder


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from mnist_classifier.data import load_mnist

    return load_mnist(mnist_dir, progress=False)


@pytest.fixture(scope="session")
def typical_digits(mnist) -> dict:
    """The 5 most typical test digits of each class (closest to the class mean): model-independent picks."""
    import numpy as np

    x = mnist.test_images.reshape(len(mnist.test_images), -1).astype(np.float32)
    out = {}
    for digit in range(10):
        idx = np.flatnonzero(mnist.test_labels == digit)
        order = np.argsort(((x[idx] - x[idx].mean(0)) ** 2).sum(1))
        out[digit] = [mnist.test_images[i] for i in idx[order[:5]]]
    return out


@pytest.fixture(scope="session")
def pretrained_path() -> Path:
    from mnist_classifier.persist import pretrained_path

    path = pretrained_path()
    assert path.is_file(), f"the shipped model is missing: {path}"
    return path


@pytest.fixture(scope="session")
def pretrained(pretrained_path):
    from mnist_classifier.persist import load_model

    return load_model(pretrained_path)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is needed for the browser tests (apt-get install chromium)"
    return path


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright; Playwright never downloads a browser of its own here.

    Module scope: Playwright's sync API keeps an event loop running in this thread while it is open,
    which would break later tests that start their own loop with asyncio.run().
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()

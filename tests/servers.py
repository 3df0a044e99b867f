"""Helpers for tests that start `mnist-classifier serve` as a real process on 127.0.0.1."""

from __future__ import annotations

import socket
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(url, process, log_path, seconds=120):
    """Until GET /readyz answers 200; fails with the server's log if it exits or is not ready in time."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, f"the server exited early:\n{log_path.read_text()}"
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"the server was not ready in {seconds} s:\n{log_path.read_text()}")

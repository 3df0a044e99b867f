"""Load benchmark for `mnist-classifier serve`: predictions/s and latency at 1, 8 and 32 concurrent clients.

    .venv/bin/python benchmarks/bench_server.py                 # -> benchmarks/results/server.json
    .venv/bin/python benchmarks/bench_server.py --workers 1 --requests 2000 --no-browser

Starts the real server (the CLI, as a user would) on 127.0.0.1 on a free port, then drives it with a lean
keep-alive HTTP/1.1 client (raw asyncio streams: a heavyweight client would steal the CPU it measures).
Each client sends a multipart PNG upload of a real MNIST test digit, waits for the answer, sends the next
(closed loop: the most the server can do); every answer is checked (HTTP 200 and the right digit). Then
the same clients offer a fixed 500 requests/s (the target rate) and latency is counted from when each
request was due. Each level also records the server's CPU milliseconds per request, a figure that a busy
machine distorts far less than wall-clock ones. Bounded: at most --requests per level and --seconds per
level, loopback only. With Chromium present it also measures, in a real browser, page
load to interactive and pen lift to prediction on screen. Prints a table; saves JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_classifier.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "server.json"
TARGETS = {"predictions_per_s_at_32": 500, "p99_ms_at_32": 50, "page_interactive_ms": 1000,
           "pen_lift_to_prediction_ms": 150}
BOUNDARY = "mnistbench"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts (default: 1,8,32)")
    p.add_argument("--requests", type=int, default=3000, help="at most this many requests per level")
    p.add_argument("--seconds", type=float, default=10.0, help="at most this long per level")
    p.add_argument("--warmup", type=int, default=300, help="requests sent (and not counted) before measuring")
    p.add_argument("--rate", type=float, default=TARGETS["predictions_per_s_at_32"],
                   help="also offer this fixed rate (requests/s) from the largest client count; 0: skip "
                        "(default: the 500/s target)")
    p.add_argument("--workers", default="1,2",
                   help="comma-separated server process counts to measure, each a fresh server (default: 1,2)")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure page load and pen-lift latency in headless Chromium")
    p.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    return p.parse_args()


# ---------------------------------------------------------------- server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int, model: str | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "mnist_classifier.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers)] + (["--model", model] if model else [])
    # The request log is written as in real use, to a file nobody reads during the run.
    log = open(tempfile.gettempdir() + f"/bench_server_{port}.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not become ready within 60 s")


# ---------------------------------------------------------------- payloads

def payloads(count: int = 200) -> list[tuple[bytes, int]]:
    """(HTTP request bytes, expected digit) for real MNIST test digits, PNG-encoded as users would upload."""
    sys.path.insert(0, str(ROOT / "src"))
    from mnist_classifier.data import load_mnist

    data = load_mnist(os.environ.get("MNIST_DATA") or ROOT.parent / "shared" / "mnist", progress=False)
    requests = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(255 - data.test_images[i]).save(buffer, "PNG")  # dark ink on white, like a scan
        requests.append((http_request(buffer.getvalue(), f"digit{i}.png"), int(data.test_labels[i])))
    return requests


def http_request(png: bytes, name: str) -> bytes:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


# ---------------------------------------------------------------- load

class Level:
    """One measured run: its clients share a request budget, a deadline and (optionally) a send schedule."""

    def __init__(self, clients, max_requests, seconds, rate=None):
        self.clients, self.budget, self.rate = clients, max_requests, rate
        self.start = time.perf_counter()
        self.stop_at = self.start + seconds
        self.sent = 0
        self.latencies, self.failures = [], []
        self.misread = 0  # answered fine, but not the digit's label: the model's error, not the server's

    def next_send_time(self):
        """None when the run is over; else when the next request is due (now, for a closed loop)."""
        if self.budget <= 0 or time.perf_counter() >= self.stop_at:
            return None
        self.budget -= 1
        self.sent += 1
        # Fixed rate: request k is due at start + k/rate, and its latency counts from then, so a server
        # that falls behind is charged for the queue it causes (no coordinated omission).
        return self.start + (self.sent - 1) / self.rate if self.rate else time.perf_counter()


async def one_client(port, requests, level, offset):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while (due := level.next_send_time()) is not None:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            request, digit = requests[i % len(requests)]
            i += 1
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            level.latencies.append(time.perf_counter() - due)
            if not head.startswith(b"HTTP/1.1 200"):
                level.failures.append(head.split(b"\r\n")[0].decode() + " " + body[:120].decode(errors="replace"))
            elif json.loads(body)["digit"] != digit:
                level.misread += 1
    finally:
        writer.close()


async def load_level(port, requests, clients, max_requests, seconds, rate=None, server_pid=None):
    level = Level(clients, max_requests, seconds, rate)
    cpu_before, client_before = server_cpu_seconds(server_pid), time.process_time()
    await asyncio.gather(*(one_client(port, requests, level, k * 7) for k in range(clients)))
    wall = time.perf_counter() - level.start
    n = len(level.latencies)
    ms = np.array(level.latencies) * 1000
    result = {"clients": clients, "mode": f"fixed rate {rate}/s" if rate else "closed loop",
              "requests": n, "seconds": round(wall, 3),
              "predictions_per_s": round(n / wall, 1), "errors": len(level.failures), "misread": level.misread,
              "p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
              "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
              "client_cpu_ms_per_request": round((time.process_time() - client_before) * 1000 / n, 3),
              "first_errors": level.failures[:3]}
    cpu_after = server_cpu_seconds(server_pid)
    if cpu_before is not None and cpu_after is not None:
        # CPU time per request hardly depends on what else the machine runs, unlike wall-clock figures:
        # 2 cores / (server + client CPU per request) bounds the throughput of a quiet 2-core machine.
        result["server_cpu_ms_per_request"] = round((cpu_after - cpu_before) * 1000 / n, 3)
    return result


def server_cpu_seconds(pid):
    """User + system CPU seconds of the server and its worker processes (Linux /proc), else None."""
    if pid is None or not Path("/proc").is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        process, parent = int(stat.parent.name), int(fields[1])
        if process == pid or parent == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# ---------------------------------------------------------------- browser

def browser_figures(port: int, rounds: int = 5) -> dict:
    """Median page load-to-interactive and pen-lift-to-prediction, in headless Chromium, over a few rounds."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import CHROMIUM_ARGS, chromium_path
    from playwright.sync_api import sync_playwright

    loads, lifts = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        for _ in range(rounds):
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("window.mnistApp && window.mnistApp.readyMs !== null")
            loads.append(page.evaluate("window.mnistApp.readyMs"))
            box = page.locator("#pad").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.85, steps=12)
            page.mouse.up()
            page.wait_for_function("window.mnistApp.penLiftToPredictionMs !== null")
            lifts.append(page.evaluate("window.mnistApp.penLiftToPredictionMs"))
        browser.close()
    return {"page_interactive_ms": round(statistics.median(loads), 1),
            "pen_lift_to_prediction_ms": round(statistics.median(lifts), 1), "rounds": rounds}


# ---------------------------------------------------------------- main

def main() -> int:
    args = parse_args()
    try:
        import uvloop  # the client's own overhead stays small with it
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    requests = payloads()
    configs, browser = [], {}
    for workers in (int(w) for w in args.workers.split(",")):
        print(f"mnist-classifier serve --workers {workers}")
        port = free_port()
        server = start_server(port, workers, args.model)
        try:
            asyncio.run(load_level(port, requests, 8, args.warmup, 30))
            levels = [measure(port, requests, int(c), args, server.pid) for c in args.concurrency.split(",")]
            if args.rate:  # the target as a service level: this rate offered by the most clients
                levels.append(measure(port, requests, max(int(c) for c in args.concurrency.split(",")), args,
                                      server.pid, rate=args.rate))
            configs.append({"workers": workers, "levels": levels})
            if args.browser and not browser:  # the page's figures hardly depend on the worker count
                browser = measure_browser(port)
        finally:
            server.terminate()
            server.wait(timeout=20)
    save(args, configs, browser)
    return 0


def measure(port, requests, clients, args, server_pid, rate=None) -> dict:
    level = asyncio.run(load_level(port, requests, clients, args.requests, args.seconds, rate, server_pid))
    cpu = level.get("server_cpu_ms_per_request")
    print(f"  {clients:>3} clients, {level['mode']:<18} {level['predictions_per_s']:>7.1f} predictions/s  "
          f"p50 {level['p50_ms']:6.2f} ms  p90 {level['p90_ms']:6.2f} ms  p99 {level['p99_ms']:6.2f} ms  "
          f"errors {level['errors']}  misread {level['misread']}  server CPU {cpu if cpu is not None else '?'} ms/request "
          f"({level['requests']} requests in {level['seconds']:.1f} s)")
    return level


def measure_browser(port) -> dict:
    try:
        browser = browser_figures(port)
    except Exception as exc:  # no Chromium here: the load figures still stand
        browser = {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        print(f"  browser figures skipped: {browser['skipped']}")
        return browser
    print(f"  page load to interactive {browser['page_interactive_ms']:.0f} ms; "
          f"pen lift to prediction {browser['pen_lift_to_prediction_ms']:.0f} ms (median of {browser['rounds']})")
    return browser


def save(args, configs, browser) -> None:
    result = {
        "benchmark": "server", "endpoint": "POST /v1/predict (multipart PNG of an MNIST test digit)",
        "configs": configs, "browser": browser, "targets": TARGETS,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = write_text(args.out, json.dumps(result, indent=2) + "\n")  # atomic: never half a result
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())

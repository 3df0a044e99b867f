"""The server under hostile load: small requests' latency beside pixel bombs and large images, then a fuzz run.

    MNIST_DATA=../shared/mnist .venv/bin/python benchmarks/bench_server_hostile.py   # -> results/server_hostile.json
    .venv/bin/python benchmarks/bench_server_hostile.py --seconds 5 --fuzz-cases 300  # shorter

Starts `mnist-classifier serve` (the CLI, as a user would) on 127.0.0.1 on a free port. Then, for
--seconds each, 8 clients (httpx, one thread each, keep-alive) send real MNIST digits as multipart PNG
uploads, closed loop, while one more client sends, one after the other:
  quiet      nothing (the baseline);
  bombs      a 9459x9459 RGBA PNG of ~350 KB (89 megapixels, just under Pillow's own bomb limit);
  large      a 3999x3999 RGBA PNG (16 megapixels, just under the server's pixel budget: really decoded).
Every small answer is checked (200 and the digit). Then a fuzz run: cases generated from the server's
OpenAPI document (schemathesis), random bytes under every content type, and random multipart forms;
its figures are the 5xx count, whether the server is still up, and its memory (RSS) before, at peak
(VmHWM, restarted for the fuzz run) and after, read from /proc. Prints a table, saves JSON, asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"small_p99_ms_beside_bombs": 250, "fuzz_5xx": 0}
SMALL_CLIENTS = 8


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15.0, help="length of each load scenario (default: 15)")
    p.add_argument("--fuzz-cases", type=int, default=1500, help="about this many fuzz requests (default: 1500)")
    return p.parse_args()


# ---------------------------------------------------------------- payloads

def rgba_png(side: int, level: int = 9) -> bytes:
    """A side x side RGBA PNG of one colour, compressed row by row (never the whole image in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" + bytes([255, 255, 255, 255]) * side  # filter byte, then opaque white pixels
    compressor = zlib.compressobj(level)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def small_digits(count: int = 100) -> list[tuple[bytes, int]]:
    from mnist_classifier.data import load_mnist

    data = load_mnist(os.environ.get("MNIST_DATA") or ROOT.parent / "shared" / "mnist", progress=False)
    digits = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(255 - data.test_images[i]).save(buffer, "PNG")
        digits.append((buffer.getvalue(), int(data.test_labels[i])))
    return digits


# ---------------------------------------------------------------- the server

def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(Path(tempfile.gettempdir()) / f"bench_server_hostile_{port}.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mnist_classifier.cli", "serve", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}; see {log.name}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server was not ready within 90 s")


def memory_mb(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"]}


# ---------------------------------------------------------------- load with a hostile neighbour

def scenario(url: str, digits, seconds: float, hostile: bytes | None) -> dict:
    stop = time.perf_counter() + seconds
    latencies, statuses, misread, hostile_statuses, hostile_ms = [], [], [0], [], []
    lock = threading.Lock()

    def small_client(offset: int):
        with httpx.Client(base_url=url, timeout=60) as http:
            i = offset
            while time.perf_counter() < stop:
                data, label = digits[i % len(digits)]
                started = time.perf_counter()
                response = http.post("/v1/predict", files={"file": (f"d{i}.png", data, "image/png")})
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses.append(response.status_code)
                    misread[0] += response.status_code == 200 and response.json()["digit"] != label
                i += SMALL_CLIENTS

    def hostile_client():
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = http.post("/v1/predict", files={"file": ("hostile.png", hostile, "image/png")})
                hostile_ms.append((time.perf_counter() - started) * 1000)
                hostile_statuses.append(response.status_code)

    threads = [threading.Thread(target=small_client, args=(k,)) for k in range(SMALL_CLIENTS)]
    if hostile is not None:
        threads.append(threading.Thread(target=hostile_client))
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ms = sorted(1000 * x for x in latencies)
    return {"small_requests": len(ms), "small_per_s": round(len(ms) / wall, 1),
            "p50_ms": round(statistics.median(ms), 1), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1), "small_non_200": sum(s != 200 for s in statuses), "misread": misread[0],
            "hostile_requests": len(hostile_statuses),
            "hostile_statuses": {str(s): hostile_statuses.count(s) for s in sorted(set(hostile_statuses))},
            "hostile_median_ms": round(statistics.median(hostile_ms), 1) if hostile_ms else None}


# ---------------------------------------------------------------- fuzz

def fuzz(url: str, cases: int, digit: bytes) -> dict:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    statuses = []
    http = httpx.Client(base_url=url, timeout=60)
    quiet = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))

    def send(request) -> None:
        statuses.append(request().status_code)

    started = time.perf_counter()
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(quiet, max_examples=cases // 6)
        @given(case=operation.as_strategy())
        def from_the_document(case):
            statuses.append(case.call(base_url=url, timeout=60).status_code)

        from_the_document()
    paths = st.sampled_from(["/v1/predict", "/v1/predict/batch", "/v1/predict/number"])
    kinds = st.sampled_from(["image/png", "application/json", "multipart/form-data; boundary=b", "text/plain", ""])

    @settings(quiet, max_examples=cases // 3)
    @given(path=paths, kind=kinds, body=st.binary(max_size=8192))
    def random_bytes(path, kind, body):
        send(lambda: http.post(path, content=body, headers={"Content-Type": kind}))

    part = st.tuples(st.sampled_from(["file", "files"]) | st.text(max_size=8), st.text(max_size=12),
                     st.binary(max_size=1024) | st.just(digit))

    @settings(quiet, max_examples=cases // 3)
    @given(path=paths, parts=st.lists(part, min_size=1, max_size=6))
    def random_forms(path, parts):
        send(lambda: http.post(path, files=[(f, (n, d, "image/png")) for f, n, d in parts]))

    random_bytes()
    random_forms()
    http.close()
    return {"requests": len(statuses), "seconds": round(time.perf_counter() - started, 1),
            "5xx": sum(s >= 500 for s in statuses),
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))}}


# ---------------------------------------------------------------- main

def main() -> None:
    args = parse_args()
    digits = small_digits()
    payloads = {"quiet": None, "bombs": rgba_png(9459), "large": rgba_png(3999)}
    sizes = {name: len(data) for name, data in payloads.items() if data}
    server, url = start_server()
    result = {"machine": machine_info(), "targets": TARGETS, "payload_bytes": sizes, "scenarios": {}}
    try:
        for _ in range(50):  # warm-up
            httpx.post(f"{url}/v1/predict", files={"file": ("w.png", digits[0][0], "image/png")})
        result["memory_after_warmup"] = memory_mb(server.pid)
        for name, hostile in payloads.items():
            figures = scenario(url, digits, args.seconds, hostile)
            result["scenarios"][name] = figures
            print(f"{name:6s} small: {figures['small_per_s']:7.1f}/s  p50 {figures['p50_ms']:6.1f} ms  "
                  f"p99 {figures['p99_ms']:6.1f} ms  max {figures['max_ms']:7.1f} ms  non-200 "
                  f"{figures['small_non_200']}  | hostile: {figures['hostile_statuses']} "
                  f"median {figures['hostile_median_ms']} ms", flush=True)
        result["memory_after_load"] = memory_mb(server.pid)
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # restart the peak (VmHWM) for the fuzz run
        before = memory_mb(server.pid)
        result["fuzz"] = fuzz(url, args.fuzz_cases, digits[0][0])
        time.sleep(2)
        result["fuzz"].update(rss_before_mb=before["rss_mb"], rss_after_mb=memory_mb(server.pid)["rss_mb"],
                              peak_rss_mb=memory_mb(server.pid)["peak_rss_mb"],
                              server_up=httpx.get(f"{url}/healthz").status_code == 200)
        print(f"fuzz: {result['fuzz']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_result("server_hostile", result)


if __name__ == "__main__":
    main()

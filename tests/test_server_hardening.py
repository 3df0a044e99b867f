"""The server under hostile input and load: a real uvicorn on 127.0.0.1, raw sockets, blocked model threads.

Each test starts the server the way `serve` runs it (the same uvicorn options and connection guards), in a
thread of this process, so that a test can hold the model's thread still and look at the queues.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from mnist_classifier.predict import Predictor
from mnist_classifier.server import create_app, lanes, limits, protocol
from mnist_classifier.server.app import STATIC
from mnist_classifier.server.serve import default_hosts, uvicorn_options

LOCAL = "http://localhost"
SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}


# ---------------------------------------------------------------- a real server, and a model that can be held

class LiveServer:
    """uvicorn with serve's options on a free port, in a thread of this process."""

    def __init__(self, app):
        self.app = app
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        options = {**uvicorn_options("127.0.0.1", self.port), "log_config": None}
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


class HeldPredictor(Predictor):
    """A Predictor whose model thread stops at any image named hold*.png until ``release`` is set, and that
    records every name it was asked to read."""

    def __init__(self, model):
        super().__init__(model, workers=1)
        self.read: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()

    def predict_many(self, sources, progress=False, names=None):
        names = list(names or [])
        self.read += names
        if any(name.startswith("hold") for name in names):
            self.holding.set()
            assert self.release.wait(30)
        return super().predict_many(sources, progress, names)


@pytest.fixture
def held(pretrained):
    predictor = HeldPredictor(pretrained)
    yield predictor
    predictor.release.set()


@pytest.fixture(scope="module")
def digit_png(mnist) -> bytes:
    return png_bytes(255 - mnist.test_images[0])  # a 7, dark ink on white


@pytest.fixture(scope="module")
def live(pretrained):
    """One shared server with the default limits, for the tests that do not hold its model."""
    with LiveServer(create_app(pretrained, torch_threads=1)) as server:
        yield server


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming width x height pixels, in under 100 bytes: a bomb's signature, never decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def big_png(side: int) -> bytes:
    """A real, decodable side x side image: a dark bar on white, over the small-image size."""
    image = np.full((side, side), 255, np.uint8)
    image[side // 5: 4 * side // 5, side // 2 - side // 20: side // 2 + side // 20] = 0
    return png_bytes(image)


def upload(name: str, data: bytes) -> dict:
    return {"file": (name, data, "image/png")}


def multipart_request(name: str, data: bytes, port: int) -> bytes:
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name.encode() + b"\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--b--\r\n")
    return (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary=b"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def wait_for(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def assert_one_line_error(response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, detail
    for fragment in fragments:
        assert fragment in detail, detail
    return detail


# ---------------------------------------------------------------- slow and oversized connections

@pytest.fixture
def short_timeouts(monkeypatch):
    monkeypatch.setattr(protocol, "HEADER_TIMEOUT", 0.5)
    monkeypatch.setattr(protocol, "BODY_IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(protocol, "BODY_TIMEOUT", 1.5)


def test_partial_request_heads_and_silent_connections_are_closed(short_timeouts, live):
    partial = [live.connect() for _ in range(50)]
    for sock in partial:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n")
    silent = live.connect()  # connects and never says anything
    answers = [read_until_closed(sock) for sock in partial]  # socket.timeout (10 s) if any stayed open
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), set(answers)
    assert read_until_closed(silent).startswith(b"HTTP/1.1 408 ")
    for sock in [*partial, silent]:
        sock.close()


def test_a_head_sent_a_byte_at_a_time_is_cut_off(short_timeouts, live):
    with live.connect() as sock:
        with pytest.raises(OSError):  # the server closes: a send fails, or the last read ends
            for byte in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000:
                sock.send(bytes([byte]))
                time.sleep(0.01)  # 10 s for the whole head, if it were let through
            raise AssertionError("the whole head was let through")


def test_a_stalled_body_and_a_trickling_body_are_closed(short_timeouts, live, digit_png):
    request = multipart_request("slow.png", digit_png, live.port)
    with live.connect() as stalled:
        stalled.sendall(request[:-100])  # the head and most of the body, then nothing
        assert read_until_closed(stalled).startswith(b"HTTP/1.1 408 ")
    with live.connect() as trickling:
        trickling.sendall(request[:-100])
        with pytest.raises(OSError):
            for byte in request[-100:]:  # one byte every 0.1 s: never idle, but past the whole-body deadline
                trickling.send(bytes([byte]))
                time.sleep(0.1)
            raise AssertionError("the whole body was let through")


def test_a_32_mb_head_is_refused_with_431(live):
    for head in (b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n",               # a whole head, in one go
                 b"".join(b"X-%d: %s\r\n" % (i, b"a" * 100) for i in range(400))):  # unfinished, many lines
        with live.connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + head)
            assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
    with live.connect() as sock:
        sent = 0
        with pytest.raises(OSError):  # closed long before 32 MB went in
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
            while sent < 32 * 2**20:
                sent += sock.send(b"a" * 65536)
            read_until_closed(sock)
            raise OSError("all 32 MB were accepted")
        assert sent < 32 * 2**20


def test_the_server_serves_on_after_the_slow_clients(live, digit_png):
    response = httpx.post(f"{live.url}/v1/predict", files=upload("seven.png", digit_png))
    assert response.status_code == 200 and response.json()["digit"] == 7


# ---------------------------------------------------------------- bounded queue, disconnects

def test_full_queue_is_503_with_retry_after_then_serves_again(pretrained, held, digit_png):
    with LiveServer(create_app(held, max_pending=2, torch_threads=1)) as live, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, f"{live.url}/v1/predict", files=upload("hold-1.png", digit_png), timeout=30)
        assert held.holding.wait(10)
        second = pool.submit(httpx.post, f"{live.url}/v1/predict", files=upload("queued.png", digit_png), timeout=30)
        wait_for(lambda: live.app.state.service.batcher.waiting() == 1)
        refused = httpx.post(f"{live.url}/v1/predict", files=upload("third.png", digit_png))
        assert_one_line_error(refused, 503, "busy", "retry")
        assert refused.headers["retry-after"] == str(limits.RETRY_AFTER_SECONDS)
        assert httpx.get(f"{live.url}/healthz").status_code == 200  # health is never queued
        held.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert httpx.post(f"{live.url}/v1/predict", files=upload("after.png", digit_png)).status_code == 200
    assert "third.png" not in held.read


def test_bodies_over_the_pending_bytes_budget_are_503(pretrained, digit_png):
    app = create_app(pretrained, max_pending_bytes=len(digit_png) // 2, torch_threads=1)
    with TestClient(app, base_url=LOCAL) as client:
        declared = client.post("/v1/predict", files=upload("a.png", digit_png))
        assert_one_line_error(declared, 503, "busy")
        assert declared.headers["retry-after"] == "1"

        def chunks():  # no Content-Length: the budget is counted as the body streams in
            yield digit_png[:100]
            yield digit_png[100:]

        streamed = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"})
        assert_one_line_error(streamed, 503, "busy")
        assert app.state.service.batcher.stats()["items"] == 0  # nothing reached the model


def test_a_disconnected_clients_queued_image_never_reaches_the_model(pretrained, held, digit_png):
    with LiveServer(create_app(held, torch_threads=1)) as live, ThreadPoolExecutor(1) as pool:
        holder = pool.submit(httpx.post, f"{live.url}/v1/predict", files=upload("hold.png", digit_png), timeout=30)
        assert held.holding.wait(10)
        batcher = live.app.state.service.batcher
        with live.connect() as sock:
            sock.sendall(multipart_request("gone.png", digit_png, live.port))
            wait_for(lambda: batcher.waiting() == 1)
        wait_for(lambda: batcher.waiting() == 0)  # the disconnect cancelled the wait
        held.release.set()
        assert holder.result().status_code == 200
        after = httpx.post(f"{live.url}/v1/predict", files=upload("after.png", digit_png))
        assert after.status_code == 200
    assert held.read == ["hold.png", "after.png"]
    assert batcher.stats()["dropped"] == 1


# ---------------------------------------------------------------- large images: refused, or off the small ones' path

def test_a_pixel_bomb_is_refused_from_its_header_with_413(live, digit_png):
    bomb = png_claiming(9459, 9459)
    response = httpx.post(f"{live.url}/v1/predict", files=upload("bomb.png", bomb))
    assert_one_line_error(response, 413, "bomb.png", "too large", str(9459 * 9459),
                          str(limits.DEFAULT_MAX_IMAGE_PIXELS))
    number = httpx.post(f"{live.url}/v1/predict/number", files=upload("bomb.png", bomb))
    assert_one_line_error(number, 413, "too large")
    files = [("files", ("bomb.png", bomb, "image/png")), ("files", ("seven.png", digit_png, "image/png"))]
    batch = httpx.post(f"{live.url}/v1/predict/batch", files=files)
    rows = batch.json()
    assert batch.status_code == 200 and "too large" in rows[0]["error"] and rows[1]["digit"] == 7


def test_the_pixel_budget_is_configurable(pretrained):
    with TestClient(create_app(pretrained, max_image_pixels=500 * 500), base_url=LOCAL) as client:
        assert_one_line_error(client.post("/v1/predict", files=upload("big.png", big_png(600))), 413, "250000")
        assert client.post("/v1/predict", files=upload("ok.png", big_png(400))).status_code == 200


def test_a_header_past_the_probe_is_checked_on_the_whole_file(pretrained):
    # Metadata ahead of the size: the first bytes hold no header, so the heavy lane looks at all of it.
    image = Image.new("L", (700, 700), 255)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=_text_chunk(b"x" * (limits.PROBE_BYTES + 10)))
    data = buffer.getvalue()
    with TestClient(create_app(pretrained, max_image_pixels=600 * 600), base_url=LOCAL) as client:
        assert_one_line_error(client.post("/v1/predict", files=upload("padded.png", data)), 413, "490000")


def _text_chunk(text: bytes):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", text.decode())
    return info


def test_large_images_are_read_beside_small_ones_not_before_them(pretrained, held, digit_png, monkeypatch):
    monkeypatch.setattr(lanes, "HEAVY_SLOTS", 1)
    side = int(limits.LIGHT_PIXELS ** 0.5) + 100  # over the small-image size
    with LiveServer(create_app(held, torch_threads=1)) as live, ThreadPoolExecutor(1) as pool:
        large = pool.submit(httpx.post, f"{live.url}/v1/predict", files=upload("hold-large.png", big_png(side)),
                            timeout=30)
        assert held.holding.wait(10)  # the large image holds the heavy lane's thread ...
        small = httpx.post(f"{live.url}/v1/predict", files=upload("seven.png", digit_png), timeout=10)
        assert small.status_code == 200 and small.json()["digit"] == 7  # ... and the small one is read anyway
        another = httpx.post(f"{live.url}/v1/predict", files=upload("large-2.png", big_png(side)))
        assert_one_line_error(another, 503, "large images")  # the heavy lane is full
        assert another.headers["retry-after"] == "1"
        held.release.set()
        assert large.result().status_code == 200 and large.result().json()["digit"] == 1
        wait_for(lambda: live.app.state.service.lanes.held == 0)
        assert httpx.post(f"{live.url}/v1/predict", files=upload("large-3.png", big_png(side))).status_code == 200


# ---------------------------------------------------------------- JSON, error bodies

@pytest.mark.parametrize("body, fragment", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"image": ' + b"9" * 5000 + b"}", "number too large"),
    (b'{"image": "aGk=", "name": ' + b"7" * 5000 + b"}", "number too large"),
    (b'{"images": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested too deeply"),
], ids=["nested-100000", "int-5000-digits", "int-in-another-field", "nested-in-a-field"])
def test_hostile_json_is_400_and_logs_no_traceback(pretrained, body, fragment, caplog):
    with TestClient(create_app(pretrained), base_url=LOCAL, raise_server_exceptions=False) as client:
        with caplog.at_level(logging.INFO):
            for path in ("/v1/predict", "/v1/predict/batch"):
                response = client.post(path, content=body, headers={"Content-Type": "application/json"})
                assert_one_line_error(response, 400, "not valid JSON", fragment)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_error_bodies_hold_no_exception_text(pretrained):
    with TestClient(create_app(pretrained), base_url=LOCAL) as client:
        for body in (b'{"image": "%%%"}', b'{"image": "abc"}', b"{bad"):
            detail = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"}).json()
            assert not re.search(r"Error\b|Exception|Traceback|binascii|\(char \d+\)", detail["detail"]), detail


# ---------------------------------------------------------------- headers: security, Host

@pytest.mark.parametrize("method, path, kwargs, status", [
    ("GET", "/", {}, 200), ("GET", "/docs", {}, 200), ("GET", "/static/app.js", {}, 200),
    ("GET", "/v1/model", {}, 200), ("GET", "/nowhere", {}, 404),
    ("POST", "/v1/predict", {"content": b"x" * (11 * 2**20), "headers": {"Content-Type": "image/png"}}, 413),
    ("GET", "/healthz", {"headers": {"Host": "evil.example"}}, 400),
])
def test_every_answer_carries_the_security_headers(live, method, path, kwargs, status):
    response = httpx.request(method, f"{live.url}{path}", **kwargs)
    assert response.status_code == status
    for name, value in SECURITY.items():
        assert response.headers[name] == value
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy


def test_the_pages_need_no_inline_script_or_style():
    # The policy allows this server's files only: inline code would be blocked in the browser.
    for page in STATIC.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page.name
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=|javascript:", html), page.name
    for script in STATIC.glob("*.js"):
        assert not re.search(r"\beval\(|new Function|style=|setAttribute\(\s*[\"']style", script.read_text())


def test_unknown_host_names_are_refused(live, pretrained):
    refused = httpx.get(f"{live.url}/healthz", headers={"Host": "rebound.example:8000"})
    assert refused.status_code == 400
    assert refused.json() == {"detail": "this server does not answer to the Host 'rebound.example:8000' (start it "
                                        "with --allowed-host rebound.example to allow that name)"}
    assert httpx.get(f"{live.url}/healthz", headers={"Host": f"localhost:{live.port}"}).status_code == 200
    assert httpx.get(f"{live.url}/healthz", headers={"Host": f"LocalHost:{live.port}"}).status_code == 200
    hosts = ["digits.example", "*.lab.example", "::1"]
    with TestClient(create_app(pretrained, allowed_hosts=hosts), base_url="http://digits.example") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"Host": "a.lab.example:8000"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "[::1]:8000"}).status_code == 200
        for host in ("localhost", "lab.example", "evil-lab.example", "[::2]:8000", ""):
            assert c.get("/healthz", headers={"Host": host}).status_code == 400, host


@pytest.mark.parametrize("header, name", [
    ("localhost", "localhost"), ("localhost:8000", "localhost"), ("Digits.Example", "digits.example"),
    ("[::1]:8000", "::1"), ("[::1]", "::1"), ("::1", "::1"), ("[::1", ""), ("", ""),
])
def test_the_name_in_a_host_header(header, name):
    from mnist_classifier.server.app import host_name

    assert host_name(header) == name


def test_serve_takes_allowed_hosts_and_limits(monkeypatch):
    from mnist_classifier import cli
    from mnist_classifier.server import serve as serve_module

    calls = []
    monkeypatch.setattr(serve_module, "serve", lambda **kwargs: calls.append(kwargs))
    assert cli.main(["serve", "--allowed-host", "a.example", "--allowed-host", "b.example",
                     "--max-pending", "3", "--max-image-pixels", "1000"]) == 0
    assert calls[0]["allowed_hosts"] == ["a.example", "b.example"]
    assert calls[0]["max_pending"] == 3 and calls[0]["max_image_pixels"] == 1000
    assert default_hosts("127.0.0.1") == ["localhost", "127.0.0.1"]
    assert default_hosts("0.0.0.0") == ["localhost", "127.0.0.1"]
    assert default_hosts("192.168.1.20") == ["localhost", "127.0.0.1", "192.168.1.20"]


def test_serve_refuses_nonsense_limits_in_one_line(capsys):
    from mnist_classifier.cli import main

    assert main(["serve", "--max-pending", "0", "--port", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-pending" in err[0]


# ---------------------------------------------------------------- fuzzing: the OpenAPI document, random bytes and forms

FUZZ = dict(deadline=None, database=None, derandomize=True)  # the same cases on every run


def test_fuzzing_from_the_openapi_document_gives_no_5xx(live, digit_png):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    statuses = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=40, suppress_health_check=list(HealthCheck), **FUZZ)
        @given(case=operation.as_strategy())
        def call(case):
            response = case.call(base_url=live.url, timeout=30)
            statuses.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:200])

        call()
    assert len(statuses) >= 120 and any(400 <= status < 500 for status in statuses)
    assert_still_serving(live, digit_png)


def test_random_bytes_and_random_forms_give_no_5xx(live, digit_png):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    paths = st.sampled_from(["/v1/predict", "/v1/predict/batch", "/v1/predict/number", "/v1/model", "/nowhere"])
    kinds = st.sampled_from(["image/png", "application/json", "multipart/form-data", "multipart/form-data; boundary=b",
                             "application/octet-stream", "text/plain", ""])
    statuses = []
    http = httpx.Client(base_url=live.url, timeout=30)  # one connection: the cases, not TLS set-up, take the time

    def record(response):
        statuses.append(response.status_code)
        assert response.status_code < 500, (response.status_code, response.text[:200])

    @settings(max_examples=100, suppress_health_check=list(HealthCheck), **FUZZ)
    @given(path=paths, kind=kinds, body=st.binary(max_size=2048) | st.just(digit_png[:300]))
    def raw(path, kind, body):
        record(http.post(path, content=body, headers={"Content-Type": kind}))

    part = st.tuples(st.sampled_from(["file", "files", "image"]) | st.text(max_size=8),
                     st.text(max_size=12), st.binary(max_size=512) | st.just(digit_png))

    @settings(max_examples=60, suppress_health_check=list(HealthCheck), **FUZZ)
    @given(path=paths, parts=st.lists(part, max_size=5), junk=st.binary(max_size=64))
    def form(path, parts, junk):
        files = [(field, (name, data, "image/png")) for field, name, data in parts]
        if files:
            record(http.post(path, files=files))
        broken = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n" + junk
        record(http.post(path, content=broken, headers={"Content-Type": "multipart/form-data; boundary=b"}))

    with http:
        raw()
        form()
    assert len(statuses) >= 200
    assert_still_serving(live, digit_png)


def assert_still_serving(live, digit_png):
    response = httpx.post(f"{live.url}/v1/predict", files=upload("seven.png", digit_png))
    assert response.status_code == 200 and response.json()["digit"] == 7

"""The REST API through FastAPI's test client: every endpoint, every error code, and that it keeps serving."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import logging
import re
import struct
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_classifier.server import create_app
from mnist_classifier.server.app import STATIC
from mnist_classifier.server.batching import MicroBatcher
from mnist_classifier.server.schemas import Prediction as PredictionSchema

LOCAL = "http://localhost"  # the server answers localhost names unless told otherwise
CONTRACT_KEYS = set(PredictionSchema.model_fields)  # the documented row: a field added there is checked here


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="module")
def app(pretrained):
    return create_app(pretrained, torch_threads=1)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=LOCAL) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def digits(mnist):
    """The first test image of each digit 0..9: (label, PNG bytes of dark ink on white, like a scan)."""
    picked = []
    for label in range(10):
        index = int(np.flatnonzero(mnist.test_labels == label)[0])
        picked.append((label, png_bytes(255 - mnist.test_images[index], scale=4)))
    return picked


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    image = Image.fromarray(array.astype(np.uint8))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG that claims width x height pixels in a few bytes: a decompression bomb's signature."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def upload(client, data: bytes, name: str = "digit.png", field: str = "file", path: str = "/v1/predict"):
    return client.post(path, files={field: (name, data, "image/png")})


def assert_error(response, status: int, *fragments: str):
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail  # one line for a person
    for fragment in fragments:
        assert fragment in detail, detail
    return detail


def assert_still_serving(client, digits):
    label, data = digits[7]
    response = upload(client, data)
    assert response.status_code == 200 and response.json()["digit"] == label


# ---------------------------------------------------------------- health, readiness, model

def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_names_the_model(client, pretrained):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "architecture": pretrained.metadata["architecture"]}


def test_readyz_is_503_after_shutdown(pretrained):
    app = create_app(pretrained)
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/readyz").status_code == 200
    # Leaving the block ran the shutdown: the app now says it is not ready instead of failing requests.
    response = TestClient(app, base_url=LOCAL).get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "not ready"


def test_startup_moves_long_lived_objects_out_of_garbage_collection(client):
    # torch, the model and the app are frozen at startup, so full collections under load stay short.
    assert gc.get_freeze_count() > 10_000


def test_model_metadata_and_metrics(client, pretrained):
    info = client.get("/v1/model").json()
    assert info["architecture"] == pretrained.metadata["architecture"]
    assert info["metrics"]["accuracy"] >= 0.985
    assert info["server"]["max_request_bytes"] == 10 * 2**20
    assert info["server"]["max_batch_files"] == 64


# ---------------------------------------------------------------- POST /v1/predict

def test_predict_multipart_reads_every_digit(client, digits):
    rows = []
    for label, data in digits:
        response = upload(client, data, name=f"digit-{label}.png")
        assert response.status_code == 200, response.text
        rows.append((label, response.json()))
    for label, row in rows:
        assert set(row) == CONTRACT_KEYS  # a single upload's row carries its image
        assert row["path"] == f"digit-{label}.png" and row["error"] is None
        assert len(row["probabilities"]) == 10 and abs(sum(row["probabilities"]) - 1) < 1e-3
        assert row["confidence"] == pytest.approx(max(row["probabilities"]), abs=1e-6)
        image = np.array(row["image"])
        assert image.shape == (28, 28) and 0 <= image.min() and image.max() <= 1 and image.max() > 0.5
    correct = sum(row["digit"] == label for label, row in rows)
    assert correct >= 9, [(label, row["digit"]) for label, row in rows]


def test_predict_json_base64_matches_multipart(client, digits):
    label, data = digits[3]
    by_upload = upload(client, data).json()
    by_json = client.post("/v1/predict", json={"image": base64.b64encode(data).decode(), "name": "three.png"})
    assert by_json.status_code == 200
    row = by_json.json()
    assert row["path"] == "three.png"
    assert row["digit"] == by_upload["digit"] and row["probabilities"] == by_upload["probabilities"]


def test_predict_json_accepts_a_data_url(client, digits):
    label, data = digits[2]
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    row = client.post("/v1/predict", json={"image": url}).json()
    assert row["path"] == "image" and row["digit"] == label


def test_predict_raw_image_body(client, digits):
    label, data = digits[5]
    response = client.post("/v1/predict", content=data, headers={"Content-Type": "image/png"})
    assert response.status_code == 200 and response.json()["digit"] == label and response.json()["path"] == "body"


def test_blank_canvas_is_no_digit_not_an_error(client):
    blank = png_bytes(np.full((280, 280), 255, np.uint8))
    response = upload(client, blank, name="blank.png")
    assert response.status_code == 200
    row = response.json()
    assert row["digit"] is None and row["error"] is None and row["reason"]
    assert row["probabilities"] == [0.0] * 10


# ---------------------------------------------------------------- POST /v1/predict/batch

def test_batch_keeps_order_and_reports_bad_files_in_their_row(client, digits):
    files = [("files", (f"d{label}.png", data, "image/png")) for label, data in digits[:4]]
    files.insert(2, ("files", ("notes.txt", b"not an image", "text/plain")))
    response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 200
    rows = response.json()
    assert [row["path"] for row in rows] == ["d0.png", "d1.png", "notes.txt", "d2.png", "d3.png"]
    assert "notes.txt" in rows[2]["error"] and rows[2]["digit"] is None
    assert [row["digit"] for i, row in enumerate(rows) if i != 2] == [0, 1, 2, 3]
    assert all("image" not in row for row in rows)


def test_batch_can_include_the_images(client, digits):
    files = [("files", ("a.png", digits[4][1], "image/png"))]
    rows = client.post("/v1/predict/batch?include_image=true", files=files).json()
    assert np.array(rows[0]["image"]).shape == (28, 28)


def test_batch_json_base64(client, digits):
    images = [base64.b64encode(data).decode() for _, data in digits[6:9]]
    rows = client.post("/v1/predict/batch", json={"images": images}).json()
    assert [row["digit"] for row in rows] == [6, 7, 8]
    assert [row["path"] for row in rows] == ["images[0]", "images[1]", "images[2]"]


def test_batch_file_count_limit_is_413(pretrained, digits):
    with TestClient(create_app(pretrained, max_batch_files=3), base_url=LOCAL) as small:
        files = [("files", (f"{i}.png", digits[i][1], "image/png")) for i in range(4)]
        assert_error(small.post("/v1/predict/batch", files=files), 413, "too many images", "4", "3")
        assert small.post("/v1/predict/batch", files=files[:3]).status_code == 200


# ---------------------------------------------------------------- POST /v1/predict/number

def test_number_reads_digits_left_to_right(client, mnist):
    picks = [int(np.flatnonzero(mnist.test_labels == d)[0]) for d in (4, 0, 7)]
    gap = np.zeros((28, 10), np.uint8)
    strip = np.hstack([np.hstack([mnist.test_images[i], gap]) for i in picks])
    page = np.pad(255 - strip, 20, constant_values=255)
    response = upload(client, png_bytes(page, scale=3), name="number.png", path="/v1/predict/number")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["number"] == "407" and result["error"] is None
    assert len(result["digits"]) == 3 and all(len(d["box"]) == 4 for d in result["digits"])
    xs = [d["box"][0] for d in result["digits"]]
    assert xs == sorted(xs)


def test_number_of_a_blank_page_is_null(client):
    response = upload(client, png_bytes(np.full((100, 300), 255, np.uint8)), path="/v1/predict/number")
    assert response.status_code == 200 and response.json()["number"] is None


def test_number_undecodable_is_422(client):
    assert_error(upload(client, b"GIF89a-but-not-really", path="/v1/predict/number"), 422, "digit.png")


# ---------------------------------------------------------------- bad input: the right 4xx, one line, still serving

def test_empty_body_is_422(client, digits):
    assert_error(client.post("/v1/predict"), 422, "empty")
    assert_error(client.post("/v1/predict", content=b"", headers={"Content-Type": "image/png"}), 422, "empty")
    assert_still_serving(client, digits)


def test_wrong_field_name_is_422_naming_both(client, digits):
    assert_error(upload(client, digits[1][1], field="image"), 422, "'file'", "'image'")
    assert_error(upload(client, digits[1][1], field="file", path="/v1/predict/batch"), 422, "'files'", "'file'")
    assert_still_serving(client, digits)


def test_text_field_instead_of_a_file_is_422(client):
    text_part = {"file": (None, "hello")}  # a multipart part without a filename is a text value
    assert_error(client.post("/v1/predict", files=text_part), 422, "must be a file upload")


def test_empty_file_is_422(client):
    assert_error(upload(client, b"", name="zero.png"), 422, "zero.png", "empty")


def test_two_files_on_the_single_endpoint_is_422(client, digits):
    files = [("file", ("a.png", digits[0][1], "image/png")), ("file", ("b.png", digits[1][1], "image/png"))]
    assert_error(client.post("/v1/predict", files=files), 422, "one file", "/v1/predict/batch")


def test_20_mb_upload_is_413(client, digits):
    big = b"\x89PNG" + bytes(20 * 2**20)
    assert_error(upload(client, big, name="huge.png"), 413, "too large", "10 MiB")
    assert_still_serving(client, digits)


def test_20_mb_chunked_upload_without_length_is_413(client, digits):
    def chunks():  # a generator body is sent chunked, with no Content-Length to reject it up front
        for _ in range(20):
            yield bytes(2**20)

    response = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert_error(response, 413, "too large")
    assert_still_serving(client, digits)


def test_invalid_content_length_is_400(app):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            request = http.build_request("POST", "/v1/predict", content=b"abc", headers={"Content-Type": "image/png"})
            request.headers["Content-Length"] = "lots"
            return await http.send(request)

    assert_error(asyncio.run(go()), 400, "Content-Length")


def test_text_file_as_image_is_422(client, digits):
    assert_error(upload(client, b"just some notes\n" * 20, name="notes.txt"), 422, "notes.txt", "not an image")
    assert_still_serving(client, digits)


def test_truncated_png_is_422(client, digits):
    data = digits[8][1]
    assert_error(upload(client, data[: len(data) // 2], name="cut.png"), 422, "cut.png")
    assert_still_serving(client, digits)


def test_base64_that_is_not_base64_is_422(client, digits):
    assert_error(client.post("/v1/predict", json={"image": "this is *not* base64!"}), 422, "not valid base64")
    assert_error(client.post("/v1/predict/batch", json={"images": ["%%%"]}), 422, "images[0]", "base64")
    assert_still_serving(client, digits)


def test_decompression_bomb_is_422(client, digits):
    bomb = png_header_only(100_000, 100_000)  # 10 gigapixels claimed in under 100 bytes
    detail = assert_error(upload(client, bomb, name="bomb.png"), 422, "bomb.png", "too large")
    assert len(bomb) < 200 and "pixels" in detail
    assert_still_serving(client, digits)


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 422, "must be an object"),
    (b'{"picture": "abc"}', 422, "no \"image\" field"),
    (b'{"image": 42}', 422, "base64 string"),
    (b'{"image": ""}', 422, "empty"),
])
def test_bad_json_bodies(client, body, status, fragment):
    assert_error(client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"}),
                 status, fragment)


def test_bad_json_batch_body_is_422(client):
    assert_error(client.post("/v1/predict/batch", json={"images": []}), 422, "non-empty list")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded"])
def test_unsupported_media_type_is_415(client, content_type, digits):
    response = client.post("/v1/predict", content=b"hello", headers={"Content-Type": content_type})
    assert_error(response, 415, content_type, "multipart/form-data")
    assert_error(client.post("/v1/predict/batch", content=b"hello", headers={"Content-Type": content_type}), 415)
    assert_still_serving(client, digits)


def test_missing_content_type_is_415(client):
    assert_error(client.post("/v1/predict", content=b"\x89PNG..."), 415, "(none)")


def test_raw_body_on_the_batch_endpoint_is_415(client, digits):
    response = client.post("/v1/predict/batch", content=digits[0][1], headers={"Content-Type": "image/png"})
    assert_error(response, 415, "repeated field 'files'")


def test_multipart_without_boundary_is_400(client):
    response = client.post("/v1/predict", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
    assert_error(response, 400)


def test_bad_query_parameter_is_one_line_422(client, digits):
    files = [("files", ("a.png", digits[0][1], "image/png"))]
    assert_error(client.post("/v1/predict/batch?include_image=maybe", files=files), 422, "include_image")


def test_wrong_method_and_unknown_path(client):
    assert_error(client.get("/v1/predict"), 405, "Method Not Allowed")
    assert_error(client.get("/v2/nothing"), 404, "Not Found")


def test_a_bug_is_a_one_line_500_and_the_server_goes_on(pretrained, digits):
    from mnist_classifier.predict import Predictor

    class Broken(Predictor):
        def predict_many(self, sources, progress=False, names=None):
            if any(b"FAIL" in s for s in sources):
                raise RuntimeError("simulated failure\nsecond line")
            return super().predict_many(sources, progress, names)

    with TestClient(create_app(Broken(pretrained, workers=1)), raise_server_exceptions=False, base_url=LOCAL) as client:
        response = client.post("/v1/predict", content=b"FAIL", headers={"Content-Type": "image/png"})
        detail = assert_error(response, 500, "internal error")
        assert "simulated" not in detail and "RuntimeError" not in detail  # the log has it, not the client
        assert_still_serving(client, digits)


# ---------------------------------------------------------------- concurrency

def test_concurrent_requests_are_all_answered_and_batched(app, digits):
    batcher = app.state.service.batcher
    before = batcher.stats()

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            calls = [http.post("/v1/predict", files={"file": (f"{i}.png", digits[i % 10][1], "image/png")})
                     for i in range(60)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [200] * 60
    assert [r.json()["path"] for r in responses] == [f"{i}.png" for i in range(60)]  # each got its own answer
    assert sum(r.json()["digit"] == i % 10 for i, r in enumerate(responses)) >= 54
    after = batcher.stats()
    assert after["items"] - before["items"] == 60
    assert after["batches"] - before["batches"] < 60  # concurrent requests shared forward passes


def test_micro_batcher_failure_reaches_every_waiter_and_the_queue_goes_on():
    from concurrent.futures import ThreadPoolExecutor

    def run_batch(items):
        if "bad" in items:
            raise ValueError("bad batch")
        return [item.upper() for item in items]

    batcher = MicroBatcher(run_batch, ThreadPoolExecutor(1), max_batch=4)

    async def go():
        bad = await asyncio.gather(batcher.submit("x"), batcher.submit("bad"), return_exceptions=True)
        good = await asyncio.gather(*(batcher.submit(c) for c in "abcdefghij"))
        return bad, good

    bad, good = asyncio.run(go())
    assert good == list("ABCDEFGHIJ")
    assert any(isinstance(r, ValueError) for r in bad)
    assert batcher.stats()["items"] == 10  # the failed pass counts nothing


# ---------------------------------------------------------------- page, docs, logging

def test_page_and_its_assets_are_served_and_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needle in ('id="pad"', 'id="clear"', 'id="upload"', 'id="bars"', 'id="seen"', 'name="viewport"'):
        assert needle in page.text
    for name, kind in [("app.js", "javascript"), ("style.css", "text/css"), ("docs.js", "javascript"),
                       ("docs.css", "text/css")]:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    for path in STATIC.iterdir():  # no CDN, no web fonts, no URL off this server: the page works offline
        assert not re.search(r"https?://|(src|href)=[\"']?//|@import", path.read_text()), path.name


def test_docs_page_is_offline_and_openapi_lists_every_endpoint(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/predict/number", "/v1/model", "/healthz",
            "/readyz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert {"413", "415", "422"} <= set(spec["paths"]["/v1/predict"]["post"]["responses"])


def test_request_log_has_one_line_per_request(pretrained, caplog, digits):
    with TestClient(create_app(pretrained, log_requests=True), base_url=LOCAL) as client:
        with caplog.at_level(logging.INFO, logger="mnist_classifier.server"):
            client.get("/healthz")
            upload(client, b"nope", name="x.png")
            upload(client, digits[0][1])
    lines = [r.getMessage() for r in caplog.records if r.name == "mnist_classifier.server"]
    assert len(lines) == 3
    assert re.fullmatch(r'testclient "GET /healthz" 200 \d+\.\d ms', lines[0])
    assert '"POST /v1/predict" 422' in lines[1] and '"POST /v1/predict" 200' in lines[2]


def test_serve_rejects_a_bad_model_file_in_one_line(tmp_path, capsys):
    from mnist_classifier.cli import main

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model")
    assert main(["serve", "--model", str(bad), "--port", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.safetensors" in err[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_busy_port_is_one_line_naming_it(capsys, workers):
    import socket

    from mnist_classifier.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--workers", str(workers)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mnist-classifier serve: error: cannot serve on 127.0.0.1:{port}: Address already in use; "
                   "is another server running there? choose another --port"]


def test_serve_on_an_address_this_machine_lacks_is_one_line(capsys):
    from mnist_classifier.cli import main

    assert main(["serve", "--host", "192.0.2.1", "--port", "8000"]) == 1  # TEST-NET-1: no interface has it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mnist-classifier serve: error: cannot serve on 192.0.2.1:8000: ")

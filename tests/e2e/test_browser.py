"""End to end: `mnist-classifier serve` on 127.0.0.1, the drawing page in Debian's headless Chromium.

Digits are drawn as real mouse strokes (and one as touch) on the canvas, the way a person draws them;
the page sends the canvas as PNG and must show the digit the model reads. Screenshots of every state
land in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import base64
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import free_port, wait_until_ready

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

# Strokes in canvas fractions (0..1), drawn the way people write these digits.
DIGIT_STROKES = {
    0: [[(0.5 + 0.22 * math.sin(t), 0.5 - 0.32 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 40)]],
    1: [[(0.47, 0.18), (0.53, 0.82)]],
    2: [[(0.28, 0.32), (0.36, 0.2), (0.5, 0.15), (0.64, 0.2), (0.7, 0.33), (0.64, 0.48), (0.45, 0.65),
         (0.27, 0.82), (0.75, 0.82)]],
    4: [[(0.58, 0.15), (0.25, 0.6), (0.78, 0.6)], [(0.6, 0.32), (0.6, 0.88)]],
    7: [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]],
}


# ---------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The CLI's server in its own process, as a user starts it; its log is kept for the last test."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "mnist_classifier.cli", "serve", "--host", "127.0.0.1",
                                    "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log_path)
        yield {"url": url, "log": log_path}
    finally:
        process.terminate()
        process.wait(timeout=30)




@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The server's Content-Security-Policy is in force: anything of the page it blocks is a failure too.
    # (Predicates below are arrow functions: Playwright polls a bare expression with eval, which it forbids.)
    page.on("console", lambda message: "Content Security Policy" in message.text and errors.append(message.text))
    page.goto(server["url"] + "/")
    page.wait_for_function("() => document.documentElement.dataset.ready === '1'")
    yield page
    context.close()
    assert not errors, errors  # no JavaScript exception in any test


# ---------------------------------------------------------------- drawing helpers

def to_page(box, point):
    return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]


def draw_with_mouse(page, strokes):
    """Each stroke: press, move through the points in small steps, release. Waits for the answer to the
    last lift (the page drops the figure of an earlier lift, whose answer may still be on its way)."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        page.mouse.move(*to_page(box, stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*to_page(box, point), steps=6)
        page.mouse.up()
    page.wait_for_function("() => window.mnistApp.penLiftToPredictionMs !== null")


def draw_with_touch(page, strokes):
    """Real touch input through the DevTools protocol: the page sees pointerType 'touch'."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = to_page(box, stroke[0])
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            for t in np.linspace(0, 1, 7)[1:]:
                x, y = to_page(box, (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t))
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    page.wait_for_function("() => window.mnistApp.penLiftToPredictionMs !== null")


def shown(page) -> dict:
    return page.evaluate("""() => ({
        state: document.getElementById('result').dataset.state,
        digit: document.getElementById('digit').textContent,
        verdict: document.getElementById('verdict').textContent,
        status: document.getElementById('status').textContent,
        bars: [...document.querySelectorAll('#bars li .fill')].map(b => parseFloat(b.style.width) || 0),
        seenInk: (() => { const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
                          let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; })(),
    })""")


def wait_for_answer(page):
    page.wait_for_function("() => ['digit', 'nodigit', 'error']"
                           ".includes(document.getElementById('result').dataset.state)")


def sample_png(mnist, pretrained, label: int, path):
    """A clear test image of ``label`` (the one the model is surest of), as a 112x112 dark-on-white scan."""
    from mnist_classifier.inference import predict_proba

    candidates = np.flatnonzero(mnist.test_labels == label)[:50]
    index = int(candidates[predict_proba(pretrained.model, mnist.test_images[candidates])[:, label].argmax()])
    image = Image.fromarray(255 - mnist.test_images[index]).resize((112, 112), Image.Resampling.BILINEAR)
    image.save(path)
    return path


# ---------------------------------------------------------------- tests

def test_empty_canvas_shows_no_digit(page, artifacts_dir):
    view = shown(page)
    assert view["state"] == "empty" and view["verdict"] == "No digit" and view["digit"] == "–"
    assert view["bars"] == [0] * 10 and view["seenInk"] == 0
    assert page.locator("#model-info").inner_text().startswith("Model: ")
    page.screenshot(path=artifacts_dir / "page-empty.png")


@pytest.mark.parametrize("digit", sorted(DIGIT_STROKES))
def test_drawn_digit_is_read(page, digit, artifacts_dir):
    draw_with_mouse(page, DIGIT_STROKES[digit])
    view = shown(page)
    page.screenshot(path=artifacts_dir / f"page-drawn-{digit}.png")
    assert view["state"] == "digit", view
    assert view["digit"] == str(digit), view
    assert max(view["bars"]) == view["bars"][digit] > 50  # the tallest bar is the digit's
    assert view["seenInk"] > 0  # the 28x28 the model saw is shown


def test_clear_button_and_escape_return_to_the_empty_state(page):
    draw_with_mouse(page, DIGIT_STROKES[1])
    assert shown(page)["state"] == "digit"
    page.click("#clear")
    assert shown(page)["state"] == "empty"
    draw_with_mouse(page, DIGIT_STROKES[7])
    page.keyboard.press("Escape")
    view = shown(page)
    assert view["state"] == "empty" and view["bars"] == [0] * 10


def test_controls_work_from_the_keyboard(page):
    draw_with_mouse(page, DIGIT_STROKES[0])
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "clear"
    page.keyboard.press("Enter")
    assert shown(page)["state"] == "empty"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "upload"
    # Whether a file dialog then shows is the browser's business; the page's part is opening the file input.
    page.evaluate("window.fileInputOpened = 0; document.getElementById('file')"
                  ".addEventListener('click', () => { window.fileInputOpened += 1; })")
    page.keyboard.press("Enter")
    page.keyboard.press("u")
    page.wait_for_function("() => window.fileInputOpened === 2")


def test_uploaded_sample_image_is_read(page, mnist, pretrained, tmp_path, artifacts_dir):
    page.set_input_files("#file", str(sample_png(mnist, pretrained, 3, tmp_path / "three.png")))
    wait_for_answer(page)
    view = shown(page)
    page.screenshot(path=artifacts_dir / "page-upload.png")
    assert view["state"] == "digit" and view["digit"] == "3", view


def test_dropped_image_is_read(page, mnist, pretrained, tmp_path):
    data = sample_png(mnist, pretrained, 6, tmp_path / "six.png").read_bytes()
    page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'six.png', { type: 'image/png' }));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true }));
    }""", base64.b64encode(data).decode())
    wait_for_answer(page)
    view = shown(page)
    assert view["state"] == "digit" and view["digit"] == "6", view


def test_blank_upload_shows_no_digit_from_the_server(page, tmp_path, artifacts_dir):
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 200), 255).save(blank)
    page.set_input_files("#file", str(blank))
    wait_for_answer(page)
    view = shown(page)
    assert view["state"] == "nodigit" and view["verdict"] == "No digit" and view["status"].startswith("No digit found")


def test_bad_upload_shows_the_servers_one_line_error(page, tmp_path, artifacts_dir):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    page.set_input_files("#file", str(notes))
    wait_for_answer(page)
    view = shown(page)
    page.screenshot(path=artifacts_dir / "page-error.png")
    assert view["state"] == "error" and "notes.txt" in view["status"] and "not an image" in view["status"]
    draw_with_mouse(page, DIGIT_STROKES[1])  # and the page (and server) go on working
    assert shown(page)["digit"] == "1"


def side_by_side(*digits) -> list:
    """The digits' strokes in a row across the pad, each in its own cell (square ones on the 2:1 number pad)."""
    return [[((k + x) / len(digits), y) for x, y in stroke] for k, digit in enumerate(digits)
            for stroke in DIGIT_STROKES[digit]]


def shown_number(page) -> dict:
    return {**shown(page), **page.evaluate("""() => ({
        mode: document.body.dataset.mode,
        chips: [...document.querySelectorAll('#digits li .d')].map(d => d.textContent),
        boxInk: (() => { const c = document.getElementById('boxes');
                         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                         let s = 0; for (let i = 3; i < d.length; i += 4) s += d[i] > 0; return s; })(),
    })""")}


def test_number_mode_reads_digits_written_side_by_side(page, artifacts_dir):
    page.click(".mode label:has-text(\"A number\")")
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] == pytest.approx(2 * pad["height"], rel=0.02)  # a wide pad for a row of digits
    draw_with_mouse(page, side_by_side(4, 7))
    view = shown_number(page)
    page.screenshot(path=artifacts_dir / "page-number-47.png")
    assert view["mode"] == "number" and view["state"] == "digit", view
    assert view["digit"] == "47" and view["verdict"] == "It's 47", view
    assert view["chips"] == ["4", "7"] and view["boxInk"] > 0  # each digit listed and boxed on the pad
    page.click("#clear")
    view = shown_number(page)
    assert view["state"] == "empty" and view["chips"] == [] and view["boxInk"] == 0


def test_number_mode_upload_and_switching_back(page, artifacts_dir):
    number = ROOT / "assets" / "sample_digits" / "number_2026.jpg"
    page.set_input_files("#file", str(number))  # in one-digit mode: an answer, and a pointer to number mode
    wait_for_answer(page)
    assert "looks like several digits: switch to “A number”" in shown(page)["status"]
    page.keyboard.press("n")
    page.set_input_files("#file", str(number))
    wait_for_answer(page)
    view = shown_number(page)
    page.screenshot(path=artifacts_dir / "page-number-upload.png")
    assert view["mode"] == "number" and view["digit"] == "2026" and view["chips"] == list("2026"), view
    page.keyboard.press("n")  # back to one digit: a square pad, cleared
    view = shown_number(page)
    pad = page.locator("#pad").bounding_box()
    assert view["mode"] == "digit" and view["state"] == "empty" and view["boxInk"] == 0
    assert pad["width"] == pytest.approx(pad["height"], rel=0.02)
    draw_with_mouse(page, DIGIT_STROKES[7])
    assert shown(page)["digit"] == "7"


def test_phone_viewport_with_touch_drawing(browser, server, artifacts_dir):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(server["url"] + "/")
        page.wait_for_function("() => document.documentElement.dataset.ready === '1'")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        pad = page.locator("#pad").bounding_box()
        assert pad["width"] >= 280 and pad["x"] >= 0 and pad["x"] + pad["width"] <= 390
        draw_with_touch(page, DIGIT_STROKES[7])
        view = shown(page)
        page.screenshot(path=artifacts_dir / "page-phone-390x844.png")  # exactly what the phone shows
        answer = page.locator("#result .answer").bounding_box()
        assert answer["y"] + answer["height"] <= 844  # the answer is on screen without scrolling
        assert view["state"] == "digit" and view["digit"] == "7", view
        assert page.evaluate("window.scrollY") == 0  # drawing did not scroll the page
    finally:
        context.close()


def test_docs_page_renders_offline(browser, server, artifacts_dir):
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    outside = []
    page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(server["url"])
            and not request.url.startswith("data:") else None)
    try:
        page.goto(server["url"] + "/docs")
        page.wait_for_function("() => document.documentElement.dataset.ready === '1'")
        text = page.locator("body").inner_text()
        for path in ("/v1/predict", "/v1/predict/batch", "/v1/predict/number", "/v1/model", "/healthz", "/readyz"):
            assert path in text
        page.locator("#get--healthz button").click()
        page.wait_for_function("() => document.querySelector('#get--healthz output').textContent.includes('HTTP 200')")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=artifacts_dir / "docs.png", full_page=True)
    finally:
        context.close()
    assert outside == []  # nothing fetched from anywhere but this server


def test_server_logged_one_line_per_request(server, mnist):
    """Its own two requests (so it needs no browser): each is one log line with its status."""
    import io

    import httpx

    image = io.BytesIO()
    Image.fromarray(255 - mnist.test_images[0]).save(image, format="PNG")
    before = server["log"].read_text().count('"POST /v1/predict"')
    statuses = [httpx.post(server["url"] + "/v1/predict", files={"file": (name, data, "image/png")}).status_code
                for name, data in (("seven.png", image.getvalue()), ("broken.png", b"not an image"))]
    assert statuses == [200, 422]
    deadline = time.monotonic() + 10  # the log line is written as the answer goes out
    while server["log"].read_text().count('"POST /v1/predict"') < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in server["log"].read_text().splitlines() if '"POST /v1/predict"' in line][before:]
    assert [line.split('"')[2].split()[0] for line in lines] == ["200", "422"]

"""Predictor: results and their JSON rows, batches in parallel, threads, numbers, folders, the seed API."""

from __future__ import annotations

import json
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_classifier.errors import ConfigError, ImageError, MNISTClassifierError
from mnist_classifier.predict import NumberPrediction, Prediction, Predictor, collect_images
from mnist_classifier.synth import PAPER, compose_number, render_on_paper, to_jpeg

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "sample_digits"


@pytest.fixture(scope="module")
def predictor(pretrained):
    return Predictor(pretrained, workers=2)


@pytest.fixture(scope="module")
def typical(typical_digits):
    return typical_digits


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory, mnist):
    folder = tmp_path_factory.mktemp("mnist_png")
    for i in range(300):
        Image.fromarray(mnist.test_images[i]).save(folder / f"{i:04d}.png")
    return folder


# ---------------------------------------------------------------------------------------------- results

def test_prediction_fields_and_contract_row(predictor, typical):
    result = predictor.predict(typical[7][0], name="seven")
    assert isinstance(result, Prediction)
    assert result.path == "seven" and result.digit == 7 and result.error is None and result.reason is None
    assert 0.5 < result.confidence <= 1.0 and not result.uncertain
    assert len(result.probabilities) == 10 and sum(result.probabilities) == pytest.approx(1.0, abs=1e-4)
    assert result.top_k[0] == (7, pytest.approx(result.confidence)) and len(result.top_k) == 3
    assert result.image.shape == (28, 28)
    row = result.to_dict()
    assert set(row) >= {"path", "digit", "confidence", "probabilities", "error"}
    assert "image" not in row
    json.dumps(row)
    with_image = result.to_dict(include_image=True)["image"]
    assert len(with_image) == 28 and all(len(r) == 28 for r in with_image)
    assert all(v == round(v, 3) for r in with_image for v in r)


def test_every_sample_image_reads_as_labelled(predictor):
    labels = json.loads((SAMPLES / "labels.json").read_text())
    for name, label in labels.items():
        if isinstance(label, str):
            assert predictor.read_number(SAMPLES / name).number == label, name
        else:
            result = predictor.predict(SAMPLES / name)
            assert result.error is None and result.digit == label, (name, result.reason)


def test_no_digit_has_a_reason_not_a_guess(predictor):
    for image in (np.full((64, 64), 255, np.uint8), np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)):
        result = predictor.predict(image)
        assert result.digit is None and result.reason and result.error is None
        row = result.to_dict()
        assert row["digit"] is None and row["confidence"] == 0.0 and row["probabilities"] == [0.0] * 10


def test_a_number_read_as_one_digit_is_flagged(predictor, mnist):
    result = predictor.predict(SAMPLES / "number_2026.jpg")
    assert result.digit is not None and result.uncertain  # still an answer, but flagged
    assert result.note.startswith("the ink is much wider than one digit: several digits side by side?")
    assert result.to_dict()["note"] == result.note
    digits = predictor.predict_many([mnist.test_images[i] for i in range(500)])
    assert all(r.note is None for r in digits)  # single digits, even wide ones, are not flagged


def test_threshold_flags_uncertain_answers(pretrained, typical):
    assert Predictor(pretrained, threshold=1.0).predict(typical[1][0]).uncertain
    assert not Predictor(pretrained, threshold=0.0).predict(typical[1][0]).uncertain
    with pytest.raises(ConfigError):
        Predictor(pretrained, threshold=1.5)


# ---------------------------------------------------------------------------------------------- batches

def test_png_folder_matches_in_memory_predictions(predictor, png_folder, mnist):
    paths = collect_images([png_folder])
    assert len(paths) == 300
    results = predictor.predict_many(paths)
    in_memory = predictor.probabilities(mnist.test_images[:300]).argmax(1)
    assert [r.digit for r in results] == in_memory.tolist()
    assert [r.path for r in results] == paths


def test_process_and_thread_pools_agree_with_one_by_one(pretrained, png_folder):
    paths = collect_images([png_folder])[:100]
    by_process = Predictor(pretrained, workers=2, pool="process").predict_many(paths)
    by_thread = Predictor(pretrained, workers=2, pool="thread").predict_many(paths)
    inline = Predictor(pretrained, workers=1).predict_many(paths)
    for a, b, c in zip(by_process, by_thread, inline):
        assert a.digit == b.digit == c.digit
        np.testing.assert_allclose(a.probabilities, c.probabilities, atol=1e-6)


def test_decoding_workers_leave_ctrl_c_to_the_parent(pretrained):
    # Ctrl-C reaches the whole process group; an idle worker that raised KeyboardInterrupt would print a
    # traceback. The parent alone handles it and stops the pool.
    with Predictor(pretrained, workers=2)._executor() as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _PoolWithADeadWorker:
    """A pool that learns of its dead worker in submit() (the next chunk) or in result() (a queued one)."""

    def __init__(self, seen_by: str):
        self.seen_by, self.submitted = seen_by, 0

    def submit(self, function, chunk):
        self.submitted += 1
        if self.seen_by == "submit" and self.submitted > 1:
            raise BrokenProcessPool("A child process terminated abruptly")
        future = Future()
        if self.seen_by == "result":
            future.set_exception(BrokenProcessPool("A child process terminated abruptly"))
        else:
            future.set_result(function(chunk))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


@pytest.mark.parametrize("seen_by", ["submit", "result"])
def test_a_dead_decoding_worker_is_one_clear_error_wherever_the_pool_sees_it(pretrained, monkeypatch, seen_by):
    predictor = Predictor(pretrained, workers=2)
    monkeypatch.setattr(predictor, "_executor", lambda: _PoolWithADeadWorker(seen_by))
    chunks = [([f"{k}.png"], [f"{k}.png"]) for k in range(20)]
    with pytest.raises(MNISTClassifierError) as error:
        list(predictor._in_pool(lambda chunk: chunk, chunks, None))
    assert str(error.value) == "a decoding worker process ended unexpectedly (killed by a signal, or out of memory)"


def test_bad_files_cost_only_their_own_row(predictor, png_folder, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    good = collect_images([png_folder])[:80]
    paths = good[:40] + [str(bad), str(tmp_path / "missing.jpg")] + good[40:]
    results = predictor.predict_many(paths)
    assert [r.path for r in results] == paths
    assert results[40].error == f"{bad}: not an image (unrecognised file format)"
    assert results[41].error.endswith("missing.jpg: file not found")
    assert all(r.error is None and r.digit is not None for r in results[:40] + results[42:])


def test_paper_renderings_are_read(predictor, mnist):
    rng = np.random.default_rng(0)
    n = 150
    jpegs = [to_jpeg(render_on_paper(mnist.test_images[i], rng, **PAPER), int(rng.integers(60, 95))) for i in range(n)]
    results = predictor.predict_many(jpegs)
    accuracy = np.mean([r.digit == y for r, y in zip(results, mnist.test_labels[:n])])
    assert accuracy >= 0.95


def test_concurrent_calls_from_threads_agree(predictor, typical):
    images = [typical[d][k] for d in range(10) for k in range(3)]
    sequential = [predictor.predict(im).probabilities for im in images]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda im: predictor.predict(im).probabilities, images * 3))
    for k, probs in enumerate(parallel):
        np.testing.assert_allclose(probs, sequential[k % len(images)], atol=1e-6)


def test_collect_images_folders_globs_and_extensions(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["a.png", "B.JPG", "c.txt", "sub/d.Png", "sub/e.webp"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()
    flat = [Path(p).name for p in collect_images([tmp_path])]
    assert flat == ["B.JPG", "a.png", "folder.jpg"]
    deep = [Path(p).name for p in collect_images([tmp_path], recursive=True)]
    assert deep == ["B.JPG", "a.png", "d.Png", "e.webp"]
    assert [Path(p).name for p in collect_images([tmp_path], recursive=True, extensions=["png"])] == ["a.png", "d.Png"]
    assert [Path(p).name for p in collect_images([str(tmp_path / "*.png")])] == ["a.png"]
    # Glob patterns match names whatever their case, as the extension filter does.
    assert [Path(p).name for p in collect_images([str(tmp_path / "*.PNG")])] == ["a.png"]
    assert [Path(p).name for p in collect_images([str(tmp_path / "*.jpg")])] == ["B.JPG"]
    assert [Path(p).name for p in collect_images([str(tmp_path / "S*/*.png")])] == ["d.Png"]
    assert collect_images([tmp_path / "c.txt"]) == [str(tmp_path / "c.txt")]  # named files are always tried


# ---------------------------------------------------------------------------------------------- numbers

def _number_image(digits, rng, gap=(3, 6), canvas=(640, 220)):
    ink = compose_number(digits, rng, gap=gap)
    return render_on_paper(ink, rng, canvas=canvas, height_fraction=(0.55, 0.55), rotation=2.0)


def test_numbers_are_read_left_to_right_with_boxes(predictor, typical):
    rng = np.random.default_rng(1)
    for text in ["2026", "715", "9", "30481"]:
        img = _number_image([typical[int(c)][k % 3] for k, c in enumerate(text)], rng)
        result = predictor.read_number(to_jpeg(img, 90), name=text)
        assert isinstance(result, NumberPrediction)
        assert result.number == text, (text, result.number)
        boxes = result.boxes
        assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)
        assert all(0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 220 for x0, y0, x1, y1 in boxes)
        row = result.to_dict()
        assert row["number"] == text and row["error"] is None
        assert row["digit"] == (int(text) if len(text) == 1 else None)
        assert len(row["probabilities"]) == 10 and len(row["digits"]) == len(text)
        json.dumps(row)


def test_number_with_wide_gaps(predictor, typical):
    img = _number_image([typical[7][0], typical[1][0], typical[5][0]], np.random.default_rng(2), gap=(14, 16),
                        canvas=(800, 220))
    assert predictor.read_number(img).number == "715"


def test_touching_digits_are_split(predictor, typical):
    rng = np.random.default_rng(3)
    img = _number_image([typical[4][0], typical[0][0], typical[3][0]], rng, gap=(-1, -1))
    result = predictor.read_number(img)
    assert result.number is not None and len(result.number) == 3


def test_broken_strokes_stay_one_digit(predictor, typical):
    five = typical[5][0].copy()
    rows = np.flatnonzero(five.max(1) > 0)
    five[rows[0] + 5:rows[0] + 7, :] = 0  # cut the bar off the body
    img = _number_image([typical[1][0], five], np.random.default_rng(4))
    assert len(predictor.read_number(img).number) == 2


def test_dots_beside_a_number_are_no_digit():
    """Two pen dots stacked like a colon stand as tall as a short digit but hold a fraction of a digit's
    ink: they join their neighbour. A thin "1" holds a third of a bold digit's ink, and stays a digit."""
    from mnist_classifier.segment import _absorb_fragments, _Group

    ink_of_label = np.array([0, 1000, 1200, 300, 50, 50], dtype=np.float64)
    groups = [_Group(0, 0, 40, 80, [1]), _Group(50, 0, 90, 80, [2]), _Group(100, 2, 108, 78, [3]),
              _Group(115, 20, 123, 70, [4, 5])]  # 8, 0, a thin 1, and a colon's two dots
    digits = _absorb_fragments(groups, ink_of_label)
    assert [g.labels for g in digits] == [[1], [2], [3, 4, 5]]


def test_a_long_number_among_specks_is_no_scatter_of_dots(predictor, typical):
    """Six digits, each under a fifth of the ink, beside the specks a removed line leaves: the largest
    blobs hold the ink, so it is a number, not scattered dots."""
    rng = np.random.default_rng(6)
    ink = compose_number([typical[d][0] for d in (6, 0, 3, 4, 6, 5)], rng, gap=(4, 4))
    ink = np.pad(ink, ((6, 6), (0, 0)))
    for x in np.linspace(4, ink.shape[1] - 6, 9).astype(int):
        ink[1:3, x:x + 2] = 1.0  # dashes along the top
    img = render_on_paper(ink, rng, canvas=(640, 220), height_fraction=(0.6, 0.6), rotation=0.0)
    assert predictor.read_number(to_jpeg(img, 90)).number == "603465"


def test_results_have_one_line_reprs(predictor, typical):
    one = predictor.predict(typical[7][0], name="seven.png")
    assert repr(one) == f"Prediction(path='seven.png', digit=7, confidence={round(one.confidence, 2)})"
    assert repr(Prediction("gone.png", error="gone.png: file not found")) == \
        "Prediction(path='gone.png', confidence=0.0, error='gone.png: file not found')"
    number = predictor.read_number(_number_image([typical[4][0], typical[2][0]], np.random.default_rng(0)), name="n")
    assert repr(number) == f"NumberPrediction(path='n', number='42', confidence={round(number.confidence, 2)})"
    assert repr(number.digits[0]).startswith("DigitRead(digit=4, confidence=") and "\n" not in repr(number.digits)


def test_number_mode_bad_and_blank_inputs(predictor, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    results = predictor.read_numbers([bad, np.full((60, 200), 255, np.uint8)])
    assert results[0].error == f"{bad}: empty file (0 bytes)" and results[0].number is None
    assert results[1].number is None and results[1].reason and results[1].error is None


# ---------------------------------------------------------------------------------------------- seed API

def test_seed_api_image_methods(pretrained_path, png_folder, mnist, tmp_path):
    from mnist_classifier import MNISTClassifier

    clf = MNISTClassifier(device="cpu")
    clf.load_model(pretrained_path)
    digit, confidence = clf.classify_image(png_folder / "0000.png")
    assert digit == int(mnist.test_labels[0]) and 0.5 < confidence <= 1.0
    rows = clf.classify_images_in_directory(png_folder, image_extensions=[".PNG"])
    assert len(rows) == 300 and rows[0]["filename"] == "0000.png" and rows[0]["digit"] == digit
    # The seed README's own spelling: glob patterns.
    assert len(clf.classify_images_in_directory(png_folder, image_extensions=["*.png", "*.jpg"])) == 300
    array = clf.preprocess_custom_image(png_folder / "0001.png")
    np.testing.assert_allclose(array, mnist.test_images[1] / 255.0, atol=1e-6)
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    assert clf.classify_image(blank) == (None, 0.0)
    with pytest.raises(ImageError, match="no digit"):
        clf.preprocess_custom_image(blank)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG")
    with pytest.raises(ImageError, match="broken.png"):
        clf.classify_image(tmp_path / "broken.png")

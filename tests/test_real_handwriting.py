"""Images as other collections hold digits: tight crops, real writers outside MNIST, shaded phone photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnist_classifier.predict import Predictor
from mnist_classifier.synth import render_on_paper, to_jpeg


@pytest.fixture(scope="module")
def predictor(pretrained):
    return Predictor(pretrained, workers=1)


def tight_crop(digit: np.ndarray, side: int, margin: int, dark_on_light: bool) -> np.ndarray:
    """An MNIST digit cut to its ink box (``margin`` px around it), its longer side scaled to ``side`` px
    in a square frame, as collections that store frame-filling digits keep them."""
    ink = digit.astype(np.float32) / 255
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0.1), np.flatnonzero(ink.max(axis=0) > 0.1)
    patch = ink[max(0, rows[0] - margin):rows[-1] + 1 + margin, max(0, cols[0] - margin):cols[-1] + 1 + margin]
    scale = side / max(patch.shape)
    height, width = max(1, round(patch.shape[0] * scale)), max(1, round(patch.shape[1] * scale))
    resized = np.asarray(Image.fromarray(patch, mode="F").resize((width, height), Image.BILINEAR))
    frame = np.zeros((side, side), np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    frame[top:top + height, left:left + width] = np.clip(resized, 0, 1)
    return ((1 - frame) if dark_on_light else frame) * 255


def accuracy(results, labels) -> float:
    return float(np.mean([r.digit == label for r, label in zip(results, labels)]))


@pytest.mark.parametrize("side", [16, 20, 40])
def test_tight_crops_read_as_well_as_whole_digits(predictor, mnist, side):
    digits, labels = mnist.test_images[:600], mnist.test_labels[:600]
    crops = [tight_crop(d, side, margin=i % 2, dark_on_light=i % 3 == 0).astype(np.uint8) for i, d in enumerate(digits)]
    whole = predictor.predict_many(list(digits))
    cropped = predictor.predict_many(crops)
    assert [r.reason for r in cropped if r.digit is None] == []  # strokes touching the edge are not "no digit"
    assert accuracy(cropped, labels) >= accuracy(whole, labels) - 0.005


def test_a_frame_filling_zero_is_not_read_inverted(predictor, mnist):
    zeros = mnist.test_images[mnist.test_labels == 0][:50]
    for polarity in (False, True):
        results = predictor.predict_many([tight_crop(d, 16, 0, polarity).astype(np.uint8) for d in zeros])
        assert accuracy(results, [0] * len(zeros)) >= 0.96


def test_scikit_learn_digits_of_other_writers(predictor):
    """scikit-learn's load_digits: real handwriting from outside MNIST, stored frame-filling at 8x8."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = [np.asarray(Image.fromarray((d / 16).astype(np.float32), mode="F").resize((32, 32), Image.BICUBIC))
              for d in bunch.images[:500]]
    results = predictor.predict_many([(np.clip(i, 0, 1) * 255).astype(np.uint8) for i in images])
    assert sum(r.digit is None for r in results) == 0
    assert accuracy(results, bunch.target[:500]) >= 0.93


def test_a_shadow_across_a_photo_is_not_a_stroke(predictor, mnist):
    """A hard shadow edge runs off the image; the small digit on the lit part is what gets read."""
    rng = np.random.default_rng(4)
    digits, labels = mnist.test_images[:40], mnist.test_labels[:40]
    photos = [to_jpeg(render_on_paper(d, rng, canvas=(450, 600), height_fraction=(0.12, 0.2), shadow=(0.45, 0.55),
                                      blur=(0.5, 1.0), noise=(0.01, 0.02)), quality=85) for d in digits]
    assert accuracy(predictor.predict_many(photos), labels) >= 0.95


def test_a_digit_cut_by_the_edge_of_a_photo_is_kept(predictor, typical_digits):
    """Ink that reaches into a photo from one edge, further than it runs along it, is a digit the edge
    cuts (a "7" running off the bottom of a form), not the edge of a shadow: both digits are read."""
    from mnist_classifier import preprocess
    from mnist_classifier.synth import compose_number

    ink = compose_number([typical_digits[4][0], typical_digits[7][0]], np.random.default_rng(0), gap=(6, 6))
    drop = ink.shape[0] // 3
    ink = np.pad(ink, ((0, drop), (0, 0)))
    ink[:, ink.shape[1] // 2:] = np.roll(ink[:, ink.shape[1] // 2:], drop, axis=0)  # the 7 written lower
    photo = render_on_paper(ink, np.random.default_rng(1), canvas=(400, 300), rotation=0.0,
                            shadow=(0.2, 0.2), noise=(0.01, 0.01))
    gray = preprocess.decode_image(to_jpeg(photo, 90), max_side=640)
    bottom = int(np.flatnonzero(preprocess.ink_map(gray).ink.max(axis=1) > 0.5)[-1])
    cut = np.asarray(photo)[: bottom - 8]  # through the 7, below the 4
    assert predictor.read_number(to_jpeg(Image.fromarray(cut), 90)).number == "47"


def test_a_shadow_beside_the_edge_of_the_page_is_not_a_stroke(predictor, mnist):
    """A dark shadow on the page where it meets the table: once the table's band is cleared, the shadow no
    longer touches the image's side, but it still runs off the page there and is not read with the digit."""
    rng = np.random.default_rng(5)
    photos, labels = [], []
    for digit, label in zip(mnist.test_images[:20], mnist.test_labels[:20]):
        page = 0.8 + rng.normal(0, 0.01, size=(300, 225))
        ink = np.kron(digit / 255.0, np.ones((2, 2)))                 # the digit, 56 px, left of the middle
        page[80:136, 60:116] *= 1 - 0.8 * ink
        ramp = np.clip((np.arange(225) - 192) / 3.0, 0, 1)           # a shadow 25 px wide, down 2/5 of the page
        page[:120] *= 1 - 0.6 * ramp[None, :]
        page[:, 218:] = 0.2                                           # the table beyond the page's right side
        photos.append(to_jpeg(Image.fromarray((np.clip(page, 0, 1) * 255).astype(np.uint8)), 90))
        labels.append(label)
    assert accuracy(predictor.predict_many(photos), labels) >= 0.9


def test_shadow_edges_run_along_the_image_and_digits_reach_into_it():
    from mnist_classifier.ink import _runs_off_the_image

    boxes = np.array([(10, 30, 25, 60),   # a stroke cut by the bottom edge: deeper than wide
                      (30, 56, 70, 60),   # a sliver along the bottom edge
                      (70, 0, 80, 20),    # a corner: two sides
                      (40, 20, 50, 40),   # inside
                      (66, 35, 80, 55),   # a digit touching the side: taller than wide, but not twice
                      (0, 22, 6, 50)])    # a strip along the side
    assert _runs_off_the_image(boxes, (0, 0, 80, 60)).tolist() == [False, True, True, False, False, True]


def test_a_digit_touching_the_edge_of_the_page_in_a_photo_is_read_alone(predictor, mnist):
    """A photo's side shows the table beyond the page: a dark band from top to bottom. A digit written
    against it is read alone, not as one blob with the band (which reads as a "1")."""
    rng = np.random.default_rng(3)
    photos, labels = [], []
    for digit, label in zip(mnist.test_images[:20], mnist.test_labels[:20]):
        page = np.asarray(render_on_paper(digit, rng, canvas=(225, 300), height_fraction=(0.2, 0.2), rotation=0.0,
                                          shadow=(0.2, 0.2), noise=(0.01, 0.01)).convert("L"), dtype=np.float32)
        left = int(np.nonzero(page < 0.5 * page.max())[1].min())
        page = page[:, max(0, left - 6):]  # the digit 6 px from the left side ...
        page[:, :7] = 0.25 * page.max()    # ... which the table's dark band reaches
        photos.append(to_jpeg(Image.fromarray(page.astype(np.uint8)), 90))
        labels.append(label)
    assert accuracy(predictor.predict_many(photos), labels) >= 0.9

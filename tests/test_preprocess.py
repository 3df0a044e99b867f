"""Decoding every format and mode, the MNIST-style normalization, "no digit", and every bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mnist_classifier import decode as decode_module
from mnist_classifier import ink as ink_module
from mnist_classifier import preprocess
from mnist_classifier.preprocess import decode_image, normalize_digit, preprocess_image
from mnist_classifier.synth import PAPER, blank_images, compose_number, render_on_paper
from helpers import one_line_image_error

CLEAN = dict(rotation=0.0, blur=(0.3, 0.3), noise=(0.0, 0.0), shadow=(0.0, 0.0))


@pytest.fixture(scope="module")
def typical(typical_digits):
    """The most typical test digit of each class."""
    return {digit: picks[0] for digit, picks in typical_digits.items()}


@pytest.fixture(scope="module")
def paper_seven(typical) -> Image.Image:
    return render_on_paper(typical[7], np.random.default_rng(7), canvas=(240, 240), **PAPER)


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("fmt,mode", [
    ("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "1"), ("PNG", "I;16"),
    ("JPEG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("BMP", "RGB"), ("BMP", "P"), ("TIFF", "RGB"),
    ("TIFF", "CMYK"), ("TIFF", "I;16"), ("GIF", "P"), ("WEBP", "RGB"), ("WEBP", "RGBA"),
])
def test_every_format_and_mode_gives_the_same_digit(paper_seven, fmt, mode):
    reference, _ = normalize_digit(np.asarray(paper_seven.convert("L"), dtype=np.float32) / 255)
    if mode == "I;16":
        img = Image.fromarray((np.asarray(paper_seven.convert("L"), dtype=np.uint16) * 257))
    elif mode == "1":
        img = paper_seven.convert("L").point(lambda v: 255 if v > 110 else 0).convert("1")
    else:
        img = paper_seven.convert(mode)
    image, reason = preprocess_image(encoded(img, fmt), name=f"seven.{fmt.lower()}")
    assert reason is None
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert correlation(image, reference) > 0.9


def test_multipage_tiff_reads_the_first_page(paper_seven, typical):
    other = Image.fromarray(255 - typical[1])
    buffer = io.BytesIO()
    paper_seven.convert("L").save(buffer, format="TIFF", save_all=True, append_images=[other])
    image, _ = preprocess_image(buffer.getvalue())
    reference, _ = normalize_digit(np.asarray(paper_seven.convert("L"), dtype=np.float32) / 255)
    assert correlation(image, reference) > 0.95


def test_exif_orientation_is_applied(paper_seven):
    upright, _ = preprocess_image(encoded(paper_seven, "JPEG", quality=95))
    rotated = paper_seven.rotate(90, expand=True)  # stored sideways, EXIF says "rotate 90 CW to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    image, _ = preprocess_image(encoded(rotated, "JPEG", quality=95, exif=exif.tobytes()))
    assert correlation(image, upright) > 0.9


@pytest.mark.parametrize("stroke_level", [0, 255])
def test_transparent_background_keeps_the_strokes_visible(typical, stroke_level):
    rgba = np.zeros((112, 112, 4), dtype=np.uint8)
    rgba[..., :3] = stroke_level  # black (or white) everywhere; the digit is only in alpha
    rgba[..., 3] = np.asarray(Image.fromarray(typical[9]).resize((112, 112), Image.BICUBIC))
    image, reason = preprocess_image(encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert reason is None
    assert correlation(image, typical[9]) > 0.9


def test_python_inputs_path_bytes_pil_and_arrays(tmp_path, typical):
    digit = typical[4]
    path = tmp_path / "four.png"
    Image.fromarray(digit).save(path)
    expected = digit.astype(np.float32) / 255
    for source in [path, str(path), path.read_bytes(), Image.open(path), digit, expected,
                   np.stack([digit] * 3, axis=-1), digit[None], expected.astype(np.float64)]:
        image, reason = preprocess_image(source)
        assert reason is None
        assert np.abs(image - expected).max() < 1e-5


def test_big_jpeg_is_decoded_in_draft_mode_and_reduced(typical):
    photo = render_on_paper(typical[2], np.random.default_rng(1), canvas=(2000, 1500))
    gray = decode_image(encoded(photo, "JPEG", quality=85))
    assert max(gray.shape) <= 1.5 * preprocess.WORK_SIDE
    assert gray.shape[1] / gray.shape[0] == pytest.approx(2000 / 1500, rel=0.02)


# ---------------------------------------------------------------------------------------------- normalization

def test_mnist_digits_pass_through_unchanged(mnist):
    for image in mnist.test_images[:1000]:
        out, reason = normalize_digit(image.astype(np.float32) / 255)
        assert reason is None
        np.testing.assert_allclose(out, image / 255.0, atol=1e-6)


def test_inverted_mnist_digit_passes_through_too(mnist):
    for image in mnist.test_images[:200]:
        out, _ = normalize_digit(1.0 - image.astype(np.float32) / 255)
        np.testing.assert_allclose(out, image / 255.0, atol=1e-5)


def test_output_is_mnist_shaped_for_a_large_drawing(typical):
    big = np.asarray(Image.fromarray(typical[0]).resize((280, 280), Image.BICUBIC))
    out, _ = normalize_digit(1.0 - big.astype(np.float32) / 255)  # dark on light, 10x MNIST size
    rows, cols = np.flatnonzero(out.max(1) > 0.1), np.flatnonzero(out.max(0) > 0.1)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)
    total = out.sum()
    centre = (out.sum(1) @ np.arange(28) / total, out.sum(0) @ np.arange(28) / total)
    assert abs(centre[0] - 14) <= 0.75 and abs(centre[1] - 14) <= 0.75
    assert out.max() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("variant", ["inverted", "shifted", "small", "big canvas", "wide canvas", "gray paper"])
def test_invariance_to_polarity_position_and_scale(typical, variant):
    digit = typical[3]
    reference, _ = normalize_digit(digit.astype(np.float32) / 255)
    ink = digit.astype(np.float32) / 255
    if variant == "inverted":
        gray = 1.0 - ink
    elif variant == "shifted":
        gray = np.zeros((60, 60), np.float32)
        gray[3:31, 29:57] = ink
    elif variant == "small":
        gray = np.zeros((40, 40), np.float32)
        gray[5:19, 20:34] = np.asarray(Image.fromarray(ink, "F").resize((14, 14), Image.BOX))
    elif variant == "big canvas":
        gray = np.zeros((300, 300), np.float32)
        gray[150:262, 40:152] = np.asarray(Image.fromarray(ink, "F").resize((112, 112), Image.BICUBIC))
        gray = 1.0 - np.clip(gray, 0, 1)
    elif variant == "wide canvas":
        gray = np.zeros((100, 400), np.float32)
        gray[10:94, 300:384] = np.asarray(Image.fromarray(ink, "F").resize((84, 84), Image.BICUBIC))
    else:
        gray = 0.6 - 0.4 * np.clip(np.asarray(Image.fromarray(ink, "F").resize((84, 84), Image.BICUBIC)), 0, 1)
    out, reason = normalize_digit(gray)
    assert reason is None
    assert correlation(out, reference) > (0.99 if variant in ("inverted", "shifted") else 0.85)


@pytest.mark.parametrize("stroke", [-1.0, 1.5])
def test_thin_and_thick_strokes_end_up_mnist_like(typical, stroke):
    img = render_on_paper(typical[5], np.random.default_rng(3), canvas=(300, 300), height_fraction=(0.8, 0.8),
                          rotation=0.0, blur=(0.5, 0.5), stroke=(stroke, stroke))
    out, reason = preprocess_image(img)
    assert reason is None
    assert correlation(out, typical[5]) > 0.75
    ink_share = float((out > 0.5).mean())  # MNIST digits: 5-30% of the field is ink
    assert 0.04 < ink_share < 0.35


def test_specks_far_from_the_digit_are_ignored(typical):
    gray = np.ones((200, 200), np.float32)
    gray[40:152, 40:152] = 1.0 - np.clip(np.asarray(Image.fromarray(typical[6].astype(np.float32) / 255, "F")
                                                    .resize((112, 112), Image.BICUBIC)), 0, 1)
    clean, _ = normalize_digit(gray)
    dusty = gray.copy()
    dusty[5:7, 190:192] = 0.0    # dust in a corner
    dusty[185:187, 10:12] = 0.2
    out, _ = normalize_digit(dusty)
    np.testing.assert_allclose(out, clean, atol=1e-6)


def test_photo_lighting_and_shadow(typical):
    rng = np.random.default_rng(11)
    for digit in (1, 7, 8):
        img = render_on_paper(typical[digit], rng, canvas=(500, 400), height_fraction=(0.4, 0.4),
                              shadow=(0.4, 0.4), noise=(0.03, 0.03), blur=(1.0, 1.0))
        out, reason = preprocess_image(encoded(img, "JPEG", quality=70))
        assert reason is None
        assert correlation(out, typical[digit]) > 0.7


# ---------------------------------------------------------------------------------------------- no digit

def test_blank_uniform_and_noise_have_no_digit():
    for kind, image in blank_images(np.random.default_rng(0), 40, size=160):
        out, reason = preprocess_image(image)
        assert out is None and reason, kind
    for value in (0, 128, 255):
        _, reason = preprocess_image(np.full((50, 50), value, np.uint8))
        assert reason.startswith("uniform image")


# ---------------------------------------------------------------------------------------------- many at once

def _mixed_images(mnist, typical) -> list[np.ndarray]:
    """Every path through the normalization, several shapes, in one list."""
    rng = np.random.default_rng(5)
    digits = [mnist.test_images[i].astype(np.float32) / 255 for i in range(40)]
    images = [1.0 - d if i % 3 == 0 else d for i, d in enumerate(digits)]      # both polarities
    shifted = np.zeros((28, 28), np.float32)
    shifted[2:14, 1:13] = np.asarray(Image.fromarray(digits[1]).resize((12, 12), Image.BOX))
    images.append(shifted)                                                    # 28x28, not MNIST-placed
    dusty = digits[2].copy()
    dusty[1:3, 1:3], dusty[25:27, 24:26] = 1.0, 0.4                            # specks beside strokes
    images.append(dusty)
    for digit in (3, 4, 7):                                                   # same-shape paper scans
        images.append(decode_image(render_on_paper(typical[digit], rng, canvas=(300, 300), **PAPER)))
    images.append(decode_image(render_on_paper(typical[8], rng, canvas=(400, 300), shadow=(0.4, 0.4),
                                               noise=(0.03, 0.03))))          # a shaded photo
    images += [decode_image(image) for _, image in blank_images(rng, 12, size=28)]
    images += [decode_image(image) for _, image in blank_images(rng, 6, size=160)]
    return images


def test_many_images_at_once_match_one_at_a_time(mnist, typical):
    images = _mixed_images(mnist, typical)
    together = preprocess.normalize_digits(images)
    alone = [normalize_digit(image) for image in images]
    assert [reason for _, reason in together] == [reason for _, reason in alone]
    assert sum(out is not None for out, _ in together) == 40 + 2 + 4
    for (a, _), (b, _) in zip(together, alone):
        if a is not None:
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_stacked_ink_maps_keep_each_images_blobs(typical):
    rng = np.random.default_rng(8)
    pages = [decode_image(render_on_paper(compose_number([typical[d] for d in digits], rng), rng,
                                          canvas=(640, 220), height_fraction=(0.5, 0.5), **CLEAN))
             for digits in ((2, 0, 2, 6), (7, 1, 5, 9), (4, 4, 0, 1))]
    for together, image in zip(preprocess.ink_maps(pages), pages):
        alone = preprocess.ink_map(image)
        assert together.reason is None and len(alone.kept) >= 4
        np.testing.assert_array_equal(together.labels, alone.labels)
        np.testing.assert_array_equal(together.kept, alone.kept)
        np.testing.assert_allclose(together.ink, alone.ink, atol=1e-6)


def test_a_batch_holds_a_bounded_number_of_decoded_pixels(mnist, monkeypatch):
    images = [mnist.test_images[i] for i in range(10)] + [b"not an image"]
    whole = preprocess.prepare_batch(images)
    group_sizes = []
    normalize_all = preprocess.normalize_digits
    monkeypatch.setattr(preprocess, "BATCH_PIXELS", 3 * 28 * 28)
    monkeypatch.setattr(preprocess, "normalize_digits", lambda grays: group_sizes.append(len(grays)) or normalize_all(grays))
    grouped = preprocess.prepare_batch(images)
    assert group_sizes == [3, 3, 3, 1]
    assert grouped[-1][2] == whole[-1][2] == "<bytes>: not an image (unrecognised file format)"
    for (a, _, _), (b, _, _) in zip(whole[:-1], grouped[:-1]):
        np.testing.assert_array_equal(a, b)


def test_an_image_that_breaks_the_normalization_costs_only_its_row(mnist, monkeypatch):
    images = [mnist.test_images[i] for i in range(6)]
    cursed = images[3].copy()
    cursed[0, 0] = 7  # a marker the broken step below recognises
    images[3] = cursed
    real_stack = ink_module._ink_stack

    def breaks_on_the_marker(stack):
        if np.any(np.isclose(stack[:, 0, 0], 7 / 255)):
            raise RuntimeError("unexpected failure")
        return real_stack(stack)

    monkeypatch.setattr(ink_module, "_ink_stack", breaks_on_the_marker)
    rows = preprocess.prepare_batch(images, names=[f"d{i}.png" for i in range(6)])
    assert rows[3][0] is None and rows[3][2] == "d3.png: cannot read image (unexpected failure)"
    for i in (0, 1, 2, 4, 5):
        image, reason, error = rows[i]
        assert error is None and reason is None
        np.testing.assert_allclose(image, mnist.test_images[i] / 255, atol=1e-6)


# ---------------------------------------------------------------------------------------------- bad input

def _error(source, **kw) -> str:
    return one_line_image_error(preprocess_image, source, **kw)


def test_bad_files_each_get_a_one_line_error_naming_them(tmp_path, paper_seven, monkeypatch):
    png, jpeg = encoded(paper_seven, "PNG"), encoded(paper_seven, "JPEG")
    files = {
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "text.png": b"this is not an image\n",
    }
    expected = {"empty.png": "empty file", "truncated.png": "truncated or corrupt",
                "truncated.jpg": "truncated or corrupt", "text.png": "not an image"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        message = _error(tmp_path / name)
        assert str(tmp_path / name) in message and expected[name] in message
    (tmp_path / "folder.jpg").mkdir()
    assert "is a directory" in _error(tmp_path / "folder.jpg")
    assert "file not found" in _error(tmp_path / "missing.png")


def test_unreadable_file(tmp_path, paper_seven, monkeypatch):
    path = tmp_path / "locked.png"
    paper_seven.save(path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decode_module, "open", denied, raising=False)  # root can read anything, so simulate
    assert "permission denied" in _error(path)


def test_decompression_bomb_limit(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (300, 200), 255).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 1x-2x over: Pillow only warns, we refuse
    message = _error(path)
    assert "image too large (300x200 = 60000 pixels, over Pillow's decompression-bomb limit" in message
    assert str(path) in message
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # over 2x: Pillow refuses to open it
    message = _error(path)
    assert "image too large (60000 pixels, over Pillow's decompression-bomb limit of 10000)" in message


def test_tiny_animated_and_invisible_images(tmp_path, typical):
    one = tmp_path / "one.png"
    Image.new("L", (1, 1), 0).save(one)
    assert "too small (1x1" in _error(one)
    frames = [Image.fromarray(typical[d]) for d in (1, 2, 3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert "animated image with 3 frames" in _error(gif)
    invisible = tmp_path / "alpha_only.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(invisible)
    assert "fully transparent" in _error(invisible)
    assert "too small" in _error(np.zeros((1, 1), np.uint8))
    assert "NaN" in _error(np.full((28, 28), np.nan, np.float32))
    assert "unsupported input type" in _error(12345)

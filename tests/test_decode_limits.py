"""Hostile and unusual image files: the pixel budget, reduction while decoding, the formats that are
opened at all, and Pillow's warnings."""

from __future__ import annotations

import io
import json
import re
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, ImageDraw

from mnist_classifier import decode as decode_module
from mnist_classifier import preprocess
from mnist_classifier.errors import ImageError
from mnist_classifier.decode import IMAGE_EXTENSIONS, MAX_PIXELS_ENV, READ_FORMATS, decode_image
from helpers import one_line_image_error

README = Path(__file__).resolve().parents[1] / "README.md"


def stroke_image(mode: str, size: tuple[int, int]) -> Image.Image:
    """A thick dark '7' on light paper (on a transparent canvas for modes with alpha)."""
    paper = {"L": 235, "RGB": (235, 230, 220), "RGBA": (0, 0, 0, 0)}[mode]
    ink = {"L": 20, "RGB": (20, 20, 30), "RGBA": (0, 0, 0, 255)}[mode]
    canvas = Image.new(mode, size, paper)
    w, h = size
    ImageDraw.Draw(canvas).line([(w // 5, h // 5), (4 * w // 5, h // 5), (2 * w // 5, 4 * h // 5)], fill=ink,
                                width=max(2, min(size) // 12))
    return canvas


def saved(img: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    img.save(path, fmt, **kw)
    return path


def error_of(source, **kw) -> str:
    return one_line_image_error(decode_image, source, **kw)


# ---------------------------------------------------------------------------------------------- pixel budget

def test_an_image_over_the_pixel_budget_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    path = saved(stroke_image("RGBA", (300, 200)), tmp_path / "big.png")
    expected = (f"{path}: image too large to decode (300x200 = 60000 pixels, over the limit of 50000; "
                f"set {MAX_PIXELS_ENV} to change it)")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded an image over the budget"))
    assert error_of(path, pixel_budget=50_000) == expected
    monkeypatch.setenv(MAX_PIXELS_ENV, "50000")
    assert error_of(path) == expected
    assert error_of(path.read_bytes(), name="upload.png").startswith("upload.png: image too large to decode")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    assert error_of(path) == f"{MAX_PIXELS_ENV}='lots' is not a positive whole number of pixels"


def test_the_budget_counts_a_jpeg_at_the_scale_it_is_decoded(tmp_path, monkeypatch):
    big = stroke_image("RGB", (2000, 1600))
    monkeypatch.setenv(MAX_PIXELS_ENV, "100000")  # 1/8 of 3.2 million: a JPEG decodes at 250x200
    gray = decode_image(saved(big, tmp_path / "photo.jpg", quality=90))
    assert gray.shape == (200, 250)
    assert gray[40, 125] < 0.2 and gray[5, 5] > 0.8  # the bar of the 7, and the paper
    assert "image too large to decode (2000x1600" in error_of(saved(big, tmp_path / "scan.png"))


def test_the_default_budget_refuses_a_pixel_bomb_in_a_small_file(tmp_path):
    # The size just under Pillow's own limit, a transparent RGBA canvas: 358 MB of pixels in a 1.6 MB file.
    side, rows = 9459, 1051  # 9 blocks of 1051 rows
    block, deflate = bytes((1 + 4 * side) * rows), zlib.compressobj(1)  # per row: filter byte + pixels
    data = b"".join(deflate.compress(block) for _ in range(side // rows)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    assert len(png) < 2_000_000
    message = error_of(png, name="bomb.png")
    assert message == (f"bomb.png: image too large to decode (9459x9459 = 89472681 pixels, over the limit of "
                       f"{decode_module.MAX_PIXELS}; set {MAX_PIXELS_ENV} to change it)")


# ---------------------------------------------------------------------------------------------- reduction

def decoded_with_peak(source) -> tuple[np.ndarray, int]:
    """decode_image(source) and the peak of the numpy memory it took (Pillow's own buffers are not traced)."""
    tracemalloc.start()
    try:
        gray = decode_image(source)
        return gray, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_image_is_reduced_in_its_own_mode_never_held_as_floats(tmp_path):
    gray, peak = decoded_with_peak(saved(stroke_image("L", (2400, 2000)), tmp_path / "large.png"))
    assert gray.shape == (250, 300)  # reduced 8x: the longer side nearest 320
    assert peak < 4 * 2**20  # a float32 copy of the full image alone would be 19 MB
    assert gray[45:55, 70:230].mean() < 0.1  # the bar of the 7 ...
    assert gray[200:240, 250:290].mean() > 0.9  # ... and the paper


def test_a_large_rgba_image_is_reduced_before_compositing_as_if_after(tmp_path):
    rng = np.random.default_rng(0)
    rgba = np.zeros((1920, 2560, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (1920, 2560, 3))  # arbitrary colour under the transparency
    strokes = 255 - np.asarray(stroke_image("L", (2560, 1920)), dtype=np.float64)
    rgba[..., 3] = np.clip(strokes + rng.normal(0, 20, strokes.shape), 0, 255)
    path = saved(Image.fromarray(rgba), tmp_path / "canvas.png")
    gray, peak = decoded_with_peak(path)
    assert peak < 4 * 2**20  # its four channels as float32 would be 79 MB
    # The oracle: composite at full resolution (a numpy input is never reduced first), then 8x8 block means.
    full = decode_image(rgba, max_side=10_000)
    oracle = full.reshape(240, 8, 320, 8).mean(axis=(1, 3))
    assert gray.shape == oracle.shape
    np.testing.assert_allclose(gray, oracle, atol=2.5 / 255)


def test_exif_orientation_is_applied_to_the_reduced_image(tmp_path):
    upright = stroke_image("L", (1152, 1920))  # whole 6x6 blocks either way up
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": the file holds the picture turned the other way
    gray, peak = decoded_with_peak(saved(upright.rotate(90, expand=True), tmp_path / "turned.png",
                                         exif=exif.tobytes()))
    expected = decode_image(upright)
    assert gray.shape == expected.shape == (320, 192)
    np.testing.assert_allclose(gray, expected, atol=1 / 255)
    assert peak < 4 * 2**20


# ---------------------------------------------------------------------------------------------- formats

def test_only_the_documented_formats_are_read_and_ghostscript_never_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: pytest.fail("Ghostscript was started"))
    original = stroke_image("RGB", (240, 200))
    expected = decode_image(original)
    readable = ", ".join(READ_FORMATS)
    others = {"ICO": "ico", "TGA": "tga", "PCX": "pcx", "EPS": "eps", "PPM": "ppm", "SGI": "sgi", "DDS": "dds",
              "PDF": "pdf", "QOI": "qoi", "MSP": "msp", "XBM": "xbm"}
    for fmt, suffix in {**{f: exts[0] for f, exts in READ_FORMATS.items()}, **others}.items():
        img = original.convert({"DDS": "RGBA", "MSP": "1", "XBM": "1"}.get(fmt, "RGB"))
        path = saved(img, tmp_path / f"digit.{suffix}", fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
        if fmt in READ_FORMATS:
            np.testing.assert_allclose(decode_image(path), expected, atol=0.1, err_msg=fmt)
        else:
            assert error_of(path) == f"{path}: unsupported format {fmt} (readable formats: {readable})"


def test_an_eps_file_named_png_is_told_by_its_content(tmp_path, monkeypatch):
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: pytest.fail("Ghostscript was started"))
    path = tmp_path / "digit.png"
    path.write_bytes(saved(stroke_image("L", (64, 64)), tmp_path / "x.eps").read_bytes())
    assert error_of(path).startswith(f"{path}: unsupported format EPS (")
    assert error_of(path.read_bytes(), name="upload").startswith("upload: unsupported format EPS (")


def test_the_readme_and_the_folder_scanner_follow_the_format_list():
    Image.init()
    sentence = next(line for line in README.read_text().splitlines() if "are read in any mode" in line)
    named = {word.upper() for word in re.findall(r"[A-Za-z0-9]+", sentence)} & set(Image.OPEN)
    assert named == set(READ_FORMATS)
    extensions = Image.registered_extensions()
    assert {extensions[f".{ext}"] for ext in IMAGE_EXTENSIONS} == set(READ_FORMATS)
    assert all(extensions[f".{ext}"] == fmt for fmt, exts in READ_FORMATS.items() for ext in exts)
    assert not {"EPS", "PDF"} & set(READ_FORMATS)


# ---------------------------------------------------------------------------------------------- warnings

def _png_with_bad_animation_chunk() -> bytes:
    """A valid PNG whose APNG control chunk claims zero frames: Pillow warns and reads the still image."""
    png = io.BytesIO()
    stroke_image("L", (64, 64)).save(png, "PNG")
    data = png.getvalue()
    body = struct.pack(">II", 0, 0)
    actl = struct.pack(">I", 8) + b"acTL" + body + struct.pack(">I", zlib.crc32(b"acTL" + body))
    after_ihdr = 8 + 25
    return data[:after_ihdr] + actl + data[after_ihdr:]


def test_pillow_warnings_become_the_files_error_instead_of_stderr_lines(tmp_path, recwarn, capsys, monkeypatch):
    """A warning about the pixels costs the file its row; one about metadata or a container's extras
    (a bad animation chunk: the PNG's own picture decodes) is no news. Neither reaches stderr."""
    odd = tmp_path / "odd.png"
    odd.write_bytes(_png_with_bad_animation_chunk())
    assert decode_image(odd).shape[0] > 0
    decode = decode_module._decode_file

    def warning_decoder(*args):
        warnings.warn("image data is odd", UserWarning)
        return decode(*args)

    monkeypatch.setattr(decode_module, "_decode_file", warning_decoder)
    assert error_of(odd) == f"{odd}: cannot read image (Pillow warns: image data is odd)"
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    assert capsys.readouterr().err == ""


def _jpeg_with_an_exif_tag_past_its_end() -> bytes:
    """A JPEG whose EXIF block lists a 1000-byte description it does not hold: Pillow warns and skips it."""
    entry = struct.pack("<HHII", 0x010E, 2, 1000, 0x100)  # ImageDescription, ASCII, 1000 bytes at offset 256
    tiff = struct.pack("<2sHI", b"II", 42, 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)
    jpeg = io.BytesIO()
    stroke_image("L", (64, 64)).save(jpeg, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return jpeg.getvalue()


def test_pillow_warnings_about_metadata_never_cost_the_picture(recwarn):
    """Each harmless warning, as Pillow words it, passes the one filter its messages are joined into."""
    assert decode_image(_jpeg_with_an_exif_tag_past_its_end(), "tagged.jpg").shape == (64, 64)
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    for message in ("Possibly corrupt EXIF data.  Expecting to read 12 bytes but only got 0. ",
                    "Possibly corrupt EXIF MakerNote data.", "Tag data larger than file. Skipping tag 270",
                    "Metadata Warning, tag 282 had too many entries: 2, expected 1",
                    "Image appears to be a malformed MPO file, it will be interpreted as a base JPEG file"):
        assert re.match(decode_module.HARMLESS_IMAGE_PATTERN, message), message
    assert not re.match(decode_module.HARMLESS_IMAGE_PATTERN, "image data is odd")


def test_predict_reports_a_bomb_and_an_odd_file_on_their_rows_and_reads_the_rest(tmp_path, monkeypatch, capsys):
    from mnist_classifier.cli import main

    good = saved(stroke_image("L", (200, 200)), tmp_path / "good.png")
    big = saved(stroke_image("L", (600, 400)), tmp_path / "big.png")
    ico = saved(stroke_image("RGBA", (64, 64)), tmp_path / "icon.ico")
    odd = tmp_path / "odd.png"
    odd.write_bytes(_png_with_bad_animation_chunk())
    monkeypatch.setenv(MAX_PIXELS_ENV, "200000")
    assert main(["predict", str(good), str(big), str(ico), str(odd), "--json"]) == 1
    captured = capsys.readouterr()
    rows = {Path(row["path"]).name: row for row in json.loads(captured.out)}
    assert rows["good.png"]["error"] is None and rows["good.png"]["digit"] == 7
    assert rows["big.png"]["error"].startswith(f"{big}: image too large to decode (600x400 = 240000 pixels")
    assert rows["icon.ico"]["error"].startswith(f"{ico}: unsupported format ICO")
    assert rows["odd.png"]["error"] is None  # a bad animation chunk: its PNG picture is read
    assert "Warning" not in captured.err


# ---------------------------------------------------------------------------------------------- properties

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])
SHAPES = st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=48),
                   st.tuples(st.integers(1, 48), st.integers(1, 48), st.integers(1, 5)))


def assert_normalized_or_one_line_error(source, **kw):
    """The pipeline's contract: a (28, 28) float image in [0, 1], or no digit with a reason, or ImageError."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image, reason = preprocess.preprocess_image(source, **kw)
        except ImageError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 300
            return None
    assert not [w for w in caught if "PIL" in w.filename], [str(w.message) for w in caught]
    if image is None:
        assert isinstance(reason, str) and reason
    else:
        assert reason is None and image.shape == (28, 28) and image.dtype == np.float32
        assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    return image


@PROPERTY
@given(hnp.arrays(DTYPES, SHAPES, elements={"allow_subnormal": False}))
def test_property_any_array_is_normalized_or_refused_in_one_line(array):
    assert_normalized_or_one_line_error(array)


WRITABLE = ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "ICO", "TGA", "PCX", "EPS", "PPM", "SGI", "QOI"]


@settings(PROPERTY, max_examples=40)
@given(fmt=st.sampled_from(WRITABLE), pixels=hnp.arrays(np.uint8, st.tuples(st.integers(8, 40), st.integers(8, 40))),
       damage=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4), cut=st.integers(0, 3))
def test_property_any_file_bytes_are_read_only_in_a_documented_format_or_refused_in_one_line(
        monkeypatch_session, fmt, pixels, damage, cut):
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, fmt)
    data = bytearray(buffer.getvalue())
    for offset, value in damage:  # flipped bytes anywhere, and maybe a cut-off tail
        data[offset % len(data)] = value
    data = bytes(data[: len(data) - cut * len(data) // 4])
    image = assert_normalized_or_one_line_error(data, name=f"upload.{fmt.lower()}")
    if image is not None or not data:
        assert fmt in READ_FORMATS or not data


@PROPERTY
@given(st.binary(max_size=600))
def test_property_random_bytes_are_refused_in_one_line(data):
    assert_normalized_or_one_line_error(data)


@pytest.fixture(scope="module")
def monkeypatch_session():
    """Ghostscript must never start, for any bytes: EPS input is refused before Pillow's EPS plugin sees it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: pytest.fail("Ghostscript was started"))
        yield patch

"""The plain-PNG fast path: the same pixels as Pillow for the files it takes, and every other file left
to Pillow (which words the errors), with nothing printed by OpenCV on the way."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mnist_classifier import decode
from mnist_classifier.decode import decode_image_scaled
from mnist_classifier.errors import ImageError
from mnist_classifier.plain_png import read_plain_png

BUDGET = 10 ** 9


def png_bytes(array, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", **save)
    return out.getvalue()


def with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """The PNG with one more chunk right after IHDR."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return data[:33] + chunk + data[33:]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    smooth = np.add.outer(np.arange(40), np.arange(90)).astype(np.uint8)
    return {"grey": rng.integers(0, 256, (28, 28), dtype=np.uint8), "smooth": smooth,
            "rgb": rng.integers(0, 256, (50, 31, 3), dtype=np.uint8), "tall": rng.integers(0, 256, (470, 9), np.uint8)}


@pytest.mark.parametrize("name", ["grey", "smooth", "rgb", "tall"])
@pytest.mark.parametrize("save", [{}, {"compress_level": 0}, {"compress_level": 9}, {"optimize": True}])
def test_plain_pngs_decode_to_pillows_pixels(images, name, save):
    data = png_bytes(images[name], **save)
    pixels = read_plain_png(data, 320, BUDGET)
    np.testing.assert_array_equal(pixels, np.asarray(Image.open(io.BytesIO(data))))
    fast, scale = decode_image_scaled(data)
    by_pillow, pillow_scale = decode_image_scaled(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(fast, by_pillow)
    assert scale == pillow_scale == 1.0


def _variants(images):
    grey, rgb = images["grey"], images["rgb"]
    plain = png_bytes(grey)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Comment", "compressed text", zip=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: only Pillow's path applies the orientation
    bad_crc = bytearray(plain)
    bad_crc[-5] ^= 1  # the IEND checksum
    idat_at = 33
    length = struct.unpack(">I", plain[idat_at:idat_at + 4])[0]
    body = bytearray(plain[idat_at + 8:idat_at + 8 + length])
    body[len(body) // 2] ^= 0xFF
    bad_data = (plain[:idat_at + 8] + bytes(body) + struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)))
                + plain[idat_at + 12 + length:])
    return {
        "palette": _save(Image.fromarray(grey).convert("P")),
        "grey+alpha": _save(Image.fromarray(grey).convert("LA")),
        "rgba": _save(Image.fromarray(rgb).convert("RGBA")),
        "16-bit": _save(Image.fromarray(grey.astype(np.uint16) * 257)),
        "1-bit": _save(Image.fromarray(grey > 128)),
        "transparent colour": png_bytes(grey, transparency=0),
        "exif orientation": png_bytes(grey, exif=exif),
        "compressed text": png_bytes(grey, pnginfo=info),
        "gamma": with_chunk(plain, b"gAMA", struct.pack(">I", 45455)),
        "interlaced": _adam7(plain),
        "checksum wrong": bytes(bad_crc),
        "truncated": plain[:len(plain) // 2],
        "no IEND": plain[:-12],
        "damaged image data": bad_data,
        "trailing bytes": plain + b"junk",
        "too large": png_bytes(np.zeros((10, 480), np.uint8)),
        "not a png": b"GIF89a" + plain[6:],
        "signature only": plain[:8],
    }


def _save(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _adam7(plain: bytes) -> bytes:
    """The same header with the interlace flag set (the data no longer matches: either way, not plain)."""
    header = bytearray(plain[16:29])
    header[12] = 1
    return plain[:16] + bytes(header) + struct.pack(">I", zlib.crc32(b"IHDR" + bytes(header))) + plain[33:]


def test_every_other_png_is_left_to_pillow(images):
    for name, data in _variants(images).items():
        assert read_plain_png(data, 320, BUDGET) is None, name
    assert read_plain_png(png_bytes(images["grey"]), 320, 28 * 28 - 1) is None  # over the pixel budget


def _outcome(path):
    try:
        gray, scale = decode_image_scaled(str(path))
        return gray.tolist(), scale
    except ImageError as exc:
        return str(exc)


def test_damaged_pngs_read_as_pillow_reads_them_and_opencv_prints_nothing(images, tmp_path, capfd, monkeypatch):
    """Whatever Pillow makes of a damaged file (a one-line error, or pixels where it is lenient), the same
    comes out, and OpenCV's decoder never gets to print a complaint."""
    paths = []
    for name in ("checksum wrong", "truncated", "no IEND", "damaged image data", "trailing bytes"):
        paths.append(tmp_path / f"{name.replace(' ', '_')}.png")
        paths[-1].write_bytes(_variants(images)[name])
    outcomes = [_outcome(path) for path in paths]
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    monkeypatch.setattr(decode, "_plain_png", lambda *args: None)
    assert outcomes == [_outcome(path) for path in paths]
    assert sum(isinstance(outcome, str) for outcome in outcomes) >= 2  # the truncated and the damaged data

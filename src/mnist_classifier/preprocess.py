"""Any image -> the 28x28 float array the models expect, the way MNIST itself was made.

MNIST digits are light ink (1.0) on a dark background (0.0), scaled so the digit's longer side is 20
pixels (anti-aliased), and placed in a 28x28 field so that the centre of mass sits at the centre. A model
trained on them fails on a phone photo of dark ink on grey paper unless the photo is brought to exactly
that form first. This module is the one place that decides how:

    decode_image(source)  -> grayscale float32 (H, W), 0 = black .. 1 = white   (Pillow does the decoding)
    ink_map(gray)         -> InkMap: ink 0..1 on a 0 background, specks removed, or a reason there is none
    fit_to_mnist(ink)     -> (28, 28) float32: crop, fit 20x20 keeping aspect ratio, centre by mass
    normalize_digit(gray) -> the two above in one call: THE normalization
    preprocess_image(src) -> decode + normalize

Nothing here imports torch, so worker processes that decode images in parallel start quickly.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError
from scipy import ndimage

from .errors import ImageError, first_line
from .lines import Structure, remove_lines_in_stack

MNIST_SIDE = 28      # the model's input field
DIGIT_BOX = 20       # MNIST scaled each digit so its longer side is 20 px ...
MNIST_CENTRE = 14.0  # ... and put its centre of mass here (measured on the test set: 14.0 +- 0.5 on both axes)
WORK_SIDE = 320      # larger images are reduced to about this size first: plenty for a 20 px digit, and fast
DRAFT_SIDE = 200     # JPEGs are decoded at 1/2, 1/4 or 1/8 scale (draft mode) while the short side stays above this
MIN_SIDE = 8         # anything smaller cannot hold a readable digit
MIN_CONTRAST = 0.08  # ink must differ from the paper by 8% of its brightness, else the page is blank
MIN_COHERENCE = 0.3  # neighbouring pixels of real strokes are correlated; noise is not
STROKE_PEAK = 0.6    # a blob whose strongest pixel is under 60% of the typical stroke is shading, not ink
LABEL_LEVEL = 0.25   # blobs are cut at a quarter of stroke strength; their fainter rims join afterwards
SPECK_FRACTION = 0.05  # ink blobs lighter than 5% of the largest blob's ink are dust, not strokes

_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)

# The formats this package reads, each with the file names that mark it: the one list behind Image.open's
# ``formats=`` (no other Pillow plugin ever sees an input), the folder scanner and the README. EPS, PS and
# PDF are never among them: Pillow hands EPS to Ghostscript, which no uploaded file may reach.
READ_FORMATS = {"PNG": ("png",), "JPEG": ("jpg", "jpeg"), "BMP": ("bmp",), "TIFF": ("tif", "tiff"),
                "GIF": ("gif",), "WEBP": ("webp",)}
IMAGE_EXTENSIONS = tuple(ext for names in READ_FORMATS.values() for ext in names)

# The pixel budget: most pixels one image may have once decoded. A JPEG is decoded at 1/2 .. 1/8 scale
# (draft mode), so only its reduced size counts; the other formats cannot be decoded at reduced scale and
# are decoded whole, then reduced in their own compact mode (about 8 bytes a pixel at the peak, for RGBA).
# The default keeps one image within about 300 MB of decoding memory; set MAX_PIXELS_ENV to change it.
MAX_PIXELS = 36_000_000
MAX_PIXELS_ENV = "MNIST_CLASSIFIER_MAX_PIXELS"

# A truncated file is an error for us, never a silently half-grey digit.
ImageFile.LOAD_TRUNCATED_IMAGES = False


# ---------------------------------------------------------------------------------------------- decoding

def source_name(source, name: str | None = None) -> str:
    """How an input is called in messages: the given name, else the path, else its kind."""
    if name:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<image>"
    return "<array>"


def max_pixels() -> int:
    """The pixel budget in force: the MAX_PIXELS_ENV environment variable if set, else MAX_PIXELS."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ImageError(f"{MAX_PIXELS_ENV}={text!r} is not a positive whole number of pixels")
    return value


def decode_image(source, name: str | None = None, max_side: int = WORK_SIDE,
                 pixel_budget: int | None = None) -> np.ndarray:
    """Decode a path, bytes, PIL image or numpy array to grayscale float32 (H, W) in [0, 1] (1 = white)."""
    return decode_image_scaled(source, name, max_side, pixel_budget)[0]


# Warnings about an image that say nothing about its pixels: a damaged metadata tag (the EXIF orientation
# is read on its own), a malformed multi-picture or animated container whose first picture decodes, and
# one said of the installation, not the file (without defusedxml, Pillow skips XMP; EXIF is still read).
HARMLESS_IMAGE_WARNINGS = ("(?i).*corrupt EXIF", "Metadata Warning", "Tag data larger than file",
                           "Tag offset too large", "Image appears to be a malformed MPO file", "Invalid APNG",
                           "XMP data cannot be read")


def decode_image_scaled(source, name: str | None = None, max_side: int = WORK_SIDE,
                        pixel_budget: int | None = None) -> tuple[np.ndarray, float]:
    """Decode; also return how many original pixels one decoded pixel spans (for boxes in numbers).

    Decode a path, bytes, PIL image or numpy array to grayscale float32 (H, W) in [0, 1] (1 = white).

    EXIF orientation is applied, transparency is composited onto a background that keeps the strokes
    visible, and images larger than ``max_side`` are reduced (area-averaged) so later steps stay fast.
    A file is refused when it would decode to more than ``pixel_budget`` pixels (default: max_pixels()).
    Raises ImageError with one line naming the input for anything that is not a usable image.
    """
    label = source_name(source, name)
    if isinstance(source, np.ndarray):
        gray = _array_to_gray(source, label)
        return _reduce_scaled(gray, max_side, gray.shape[1])
    if isinstance(source, Image.Image):
        gray, factor = _pil_to_gray(source, label, max_side)
        return _reduce_scaled(gray, max_side, gray.shape[1] * factor)
    budget = pixel_budget or max_pixels()
    try:
        with warnings.catch_warnings():
            # What Pillow warns about (corrupt EXIF, odd chunks, ...) is this file's error, not a stray
            # line on stderr. Its decompression-bomb warning is not needed: _check_image refuses all of it.
            warnings.simplefilter("error", UserWarning)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            for message in HARMLESS_IMAGE_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            gray, scale = _decode_file(source, label, max_side, budget)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(_too_large(label, exc)) from None
    except UserWarning as warning:
        raise ImageError(f"{label}: cannot read image (Pillow warns: {first_line(warning)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{label}: truncated or corrupt image data ({first_line(exc)})") from None
    return _reduce_scaled(gray, max_side, gray.shape[1] * scale)


def _decode_file(source, label: str, max_side: int, budget: int) -> tuple[np.ndarray, float]:
    """Path or bytes -> (gray, original pixels per pixel of gray); nothing is decoded over the budget."""
    img, fh = _open(source, label)
    with fh, img:  # Pillow leaves a file it was handed open
        _check_image(img, label)
        declared_width = img.size[0]
        if img.format in ("JPEG", "MPO"):
            # Decoding a 1000x1000 JPEG at 1/4 scale skips most of the inverse DCT work, and asking
            # for "L" returns the luma channel as stored (the same 601 weights as _luminance) without
            # colour conversion. CMYK JPEGs keep their mode.
            img.draft("L" if img.mode in ("L", "RGB") else None, (DRAFT_SIDE, DRAFT_SIDE))
        _check_budget(img, label, budget)
        draft_ratio = declared_width / img.size[0]
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        gray, factor = _pil_to_gray(img, label, max_side, orientation)
    return gray, factor * draft_ratio


def _reduce_scaled(gray: np.ndarray, max_side: int, original_width: float) -> tuple[np.ndarray, float]:
    reduced = _reduce(gray, max_side)
    return reduced, original_width / reduced.shape[1]


def _open(source, label: str) -> tuple[Image.Image, io.IOBase]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"{label}: empty input (0 bytes)")
        fh = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        fh = _open_file(source, label)
    else:
        raise ImageError(f"{label}: unsupported input type {type(source).__name__} "
                         "(expected a path, bytes, a PIL image or a numpy array)")
    try:
        return Image.open(fh, formats=list(READ_FORMATS)), fh
    except UnidentifiedImageError:
        other = _foreign_format(fh, label)
        fh.close()
        if other:
            raise ImageError(f"{label}: unsupported format {other} (readable formats: "
                             f"{', '.join(READ_FORMATS)})") from None
        raise ImageError(f"{label}: not an image (unrecognised file format)") from None
    except Image.DecompressionBombError as exc:
        fh.close()
        raise ImageError(_too_large(label, exc)) from None
    except BaseException:
        fh.close()
        raise


def _foreign_format(fh, label: str) -> str | None:
    """The Pillow format an unreadable input is in, told from its file name or else its first bytes.

    Only the plugins' signature checks run on the bytes (never a decoder or a header parser), so naming
    an EPS file never starts Ghostscript.
    """
    Image.init()
    named = Image.registered_extensions().get(os.path.splitext(label)[1].lower())
    if named and named not in READ_FORMATS:  # first: signatures are ambiguous (a TGA can look like a CUR)
        return named
    fh.seek(0)
    prefix = fh.read(16)
    return next((fmt for fmt, (_, accept) in Image.OPEN.items()
                 if fmt not in READ_FORMATS and accept is not None and _accepts(accept, prefix)), None)


def _accepts(accept, prefix: bytes) -> bool:
    try:
        return bool(accept(prefix))
    except Exception:  # some signature checks assume a prefix longer than a tiny input has
        return False


def _open_file(path, label: str):
    """Open for reading; every way that can fail is one line (asking first would cost a syscall per file)."""
    try:
        fh = open(path, "rb")
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory, not an image") from None
    except FileNotFoundError:
        raise ImageError(f"{label}: file not found") from None
    except PermissionError:
        raise ImageError(f"{label}: cannot read file (permission denied)") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read file ({first_line(exc)})") from None
    if os.fstat(fh.fileno()).st_size == 0:
        fh.close()
        raise ImageError(f"{label}: empty file (0 bytes)")
    return fh


def _too_large(label: str, exc: BaseException | None = None, size: tuple[int, int] | None = None) -> str:
    if size:
        what = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels"
    else:  # Pillow refused before we saw the size; its message has the pixel count
        found = re.search(r"\((\d+) pixels\)", str(exc))
        what = f"{found.group(1)} pixels" if found else "too many pixels"
    return f"{label}: image too large ({what}, over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS})"


def _check_image(img: Image.Image, label: str) -> None:
    width, height = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise ImageError(_too_large(label, size=(width, height)))
    if getattr(img, "is_animated", False) and img.format in ("GIF", "PNG", "WEBP"):
        raise ImageError(f"{label}: animated image with {img.n_frames} frames (save one frame as a still image)")


def _check_budget(img: Image.Image, label: str, budget: int) -> None:
    """Refuse, before decoding, an image that would decode to more than ``budget`` pixels."""
    width, height = img.size  # after draft mode: the size the decoder will produce
    if width * height > budget:
        raise ImageError(f"{label}: image too large to decode ({width}x{height} = {width * height} pixels, over "
                         f"the limit of {budget}; set {MAX_PIXELS_ENV} to change it)")


# Modes Pillow reduces as they are (RGBA and LA with premultiplied alpha, so compositing afterwards gives
# what compositing first would have); the others are reduced after conversion to float.
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "F")
# Modes converted first: palettes to the colours they stand for, the rest to a mode of the list above.
_CONVERSIONS = {"RGBa": "RGBA", "La": "RGBA", "PA": "RGBA", "CMYK": "RGB", "1": "L", "YCbCr": "RGB",
                "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB"}


def _pil_to_gray(img: Image.Image, label: str, max_side: int, orientation: int = 1) -> tuple[np.ndarray, int]:
    """Any Pillow mode -> (float32 gray in [0, 1], the reduction factor). First page/frame only (TIFF
    pages, GIF frames).

    Large images are reduced by an integer factor in their own mode before anything else, so a big
    image never exists as a float array, let alone four.
    """
    img.load()  # decodes a file (within the budget already checked); a rotated TIFF's size is only right after
    width, height = img.size
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{label}: image too small ({width}x{height} pixels; a digit needs at least "
                         f"{MIN_SIDE}x{MIN_SIDE})")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in _CONVERSIONS:
        img = img.convert(_CONVERSIONS[img.mode])
    factor = _reduction_factor(img.size, max_side)
    if factor >= 2 and img.mode in _REDUCIBLE_MODES:
        whole_blocks = (0, 0, (width // factor) * factor, (height // factor) * factor)
        img = img.reduce(factor, box=whole_blocks)
    else:
        factor = 1
    if orientation != 1:  # turned after reducing: turning the full image would cost a second copy of it
        img.getexif()[ExifTags.Base.Orientation] = orientation
        ImageOps.exif_transpose(img, in_place=True)
    return _array_to_gray(np.asarray(img), label), factor
def _array_to_gray(array: np.ndarray, label: str) -> np.ndarray:
    """(H, W), (H, W, 1|2|3|4) arrays of bool, ints or floats -> float32 gray in [0, 1]."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels-first arrays, as torch keeps them
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise ImageError(f"{label}: unsupported array shape {a.shape} (expected HxW, HxWx3 or HxWx4)")
    if min(a.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{label}: image too small ({a.shape[1]}x{a.shape[0]} pixels; a digit needs at "
                         f"least {MIN_SIDE}x{MIN_SIDE})")
    values = _to_unit_float(a, label)
    if values.ndim == 2:
        return values
    if values.shape[2] in (2, 4):
        return _composite(values[..., :-1], values[..., -1], label)
    return _luminance(values)


def _to_unit_float(a: np.ndarray, label: str) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) * np.float32(1 / 255)
    if a.dtype == np.uint16 or a.dtype.str in ("<u2", ">u2"):
        return a.astype(np.float32) * np.float32(1 / 65535)
    if np.issubdtype(a.dtype, np.integer):
        # Pillow's mode "I" holds 16-bit PNGs as int32; other integer arrays are 8-bit if they fit.
        top = 255.0 if a.max(initial=0) <= 255 else 65535.0
        return np.clip(a.astype(np.float32) / np.float32(top), 0.0, 1.0)
    if np.issubdtype(a.dtype, np.floating):
        values = a.astype(np.float32)
        if not np.isfinite(values).all():
            raise ImageError(f"{label}: image array contains NaN or infinite values")
        if values.max(initial=0.0) > 1.0:
            values = values / np.float32(255.0 if values.max() <= 255.0 else values.max())
        return np.clip(values, 0.0, 1.0)
    raise ImageError(f"{label}: unsupported pixel type {a.dtype}")


def _luminance(rgb: np.ndarray) -> np.ndarray:
    # ITU-R 601 weights, as Pillow's convert("L") uses.
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _composite(color: np.ndarray, alpha: np.ndarray, label: str) -> np.ndarray:
    """Flatten transparency onto white or black, whichever the strokes stand out against.

    A black digit drawn on a transparent canvas has black (or arbitrary) colour everywhere and the digit
    only in alpha; compositing onto white keeps it, compositing a white digit onto white would erase it.
    """
    gray = color[..., 0] if color.shape[2] == 1 else _luminance(color)
    total = float(alpha.sum())
    if total <= 1e-6 * alpha.size:
        raise ImageError(f"{label}: fully transparent image (nothing visible to read)")
    stroke_level = float((gray * alpha).sum()) / total
    background = 1.0 if stroke_level < 0.5 else 0.0
    return gray * alpha + np.float32(background) * (1.0 - alpha)


def _reduce(gray: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average big images down to about ``max_side`` (integer factor: exact and fast)."""
    factor = _reduction_factor(gray.shape, max_side)
    if factor < 2:
        return np.ascontiguousarray(gray, dtype=np.float32)
    h, w = (gray.shape[0] // factor) * factor, (gray.shape[1] // factor) * factor
    whole_blocks = np.ascontiguousarray(gray[:h, :w], dtype=np.float32)
    # Pillow's reduce is the same block mean, about 6x faster than numpy's reshape-and-mean.
    return np.asarray(Image.fromarray(whole_blocks, mode="F").reduce(factor))


def _reduction_factor(size: tuple[int, int], max_side: int) -> int:
    """The integer block size that brings an image's longer side nearest to ``max_side`` (1: leave it)."""
    return int(max(size) / max_side + 0.5)


# ---------------------------------------------------------------------------------------------- ink

@dataclass
class InkMap:
    """Ink strength 0..1 on a 0 background at the decoded image's resolution, specks removed.

    ``reason`` says why there is no digit (then ``ink`` is all zero); ``labels``/``kept`` are the connected
    ink blobs that survived, for number segmentation.
    """

    ink: np.ndarray
    reason: str | None = None
    raw: np.ndarray | None = None   # ink before contrast normalization and speck removal
    level: float = 0.0              # typical stroke strength in ``raw`` (maps to 1)
    labels: np.ndarray | None = None
    kept: np.ndarray | None = None  # label ids of the blobs that are strokes, not specks
    dark_ink: bool = True
    lines: Structure | None = None  # printed lines (boxes, rules) removed from ``ink``, if there were any

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of the ink, end-exclusive; None when there is none."""
        rows = np.flatnonzero(self.ink.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(self.ink.any(axis=0))
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


UNIFORM = "uniform image (a single colour, no ink)"
BLANK = "blank image (no ink darker or lighter than the background)"
FLAT_NOISE = "only paper and noise, no strokes standing out from the background"
NOISE = "the image looks like noise, not pen strokes"
DOTS = "ink is scattered dots, not strokes"
SCATTER_BLOBS = 8  # scattered dots: the 8 largest blobs hold under half the ink (the digits of a number hold most)

BATCH_PIXELS = 1 << 22  # decoded pixels a batch holds before normalizing them (16 MB as float32)
STACK_PIXELS = 1 << 17  # images of one shape are processed together, this many pixels at a time (cache-sized)
SAMPLE_PIXELS = 16384   # statistics of bigger images use an evenly strided sample of this many pixels
EDGE_INK_SHARE = 0.02   # strokes run into the border of a tight crop on at least 2% of its border pixels ...
EDGE_INK_CONTRAST = 0.3  # ... ink and paper differ by at least 30% of full scale (a shadow is fainter) ...
FLAT_PAPER = 0.15       # ... and the paper's robust spread is under 15% of that difference (no uneven light)
CROP_SIDE = 128         # ... in an image no larger than this: a cut-out digit, not a page in uneven light
_OTSU_BINS = 64
_OTSU_CENTRES = (np.arange(_OTSU_BINS) + 0.5) / _OTSU_BINS
_STACKED_EIGHT_NEIGHBOURS = np.zeros((3, 3, 3), dtype=bool)
_STACKED_EIGHT_NEIGHBOURS[1] = True


def ink_map(gray: np.ndarray) -> InkMap:
    """Find the ink: background and polarity, lighting-independent contrast, specks removed.

    1. Background and polarity. A uniform border means a clean scan, drawing or MNIST digit: one
       background level, and the ink is on the side the image's mean leans to. Otherwise (a photo) the
       bulk of the pixels is the paper, the ink is the tail reaching further from it - below it for pen on
       paper, above it for chalk or a canvas - and a smooth local background (a percentile over a window
       wider than a stroke) absorbs uneven lighting and shadows.
    2. Ink is measured against the background; for dark ink relative to the paper's brightness (reflected
       light: the same pen looks darker where the light is brighter).
    3. Contrast: the paper's texture and JPEG noise (median + 4 robust deviations) map to 0, the typical
       stroke (90th percentile above an Otsu split) maps to 1.
    4. Specks: light blobs away from the main strokes are dropped.
    """
    return ink_maps([gray])[0]


def ink_maps(grays: list[np.ndarray]) -> list[InkMap]:
    """ink_map of many images. Images of one shape take every step together, as numpy over a stack:
    the same decisions, without paying numpy's per-call cost once per image."""
    maps: list[InkMap | None] = [None] * len(grays)
    for indices, stack_maps in _ink_stacks(grays):
        for i, m in zip(indices, stack_maps):
            maps[i] = m
    return maps


def _ink_stacks(grays: list[np.ndarray]):
    """(indices, ink maps) for each stack of same-shape images, one stack at a time."""
    for indices in _same_shape_stacks(grays):
        yield indices, _ink_stack(np.stack([np.asarray(grays[i], dtype=np.float32) for i in indices]))


def _same_shape_stacks(grays: list[np.ndarray]):
    by_shape: dict[tuple, list[int]] = {}
    for i, gray in enumerate(grays):
        by_shape.setdefault(np.shape(gray), []).append(i)
    for (height, width), indices in by_shape.items():
        per_stack = max(1, STACK_PIXELS // (height * width))
        for start in range(0, len(indices), per_stack):
            yield indices[start:start + per_stack]


def _ink_stack(g: np.ndarray) -> list[InkMap]:
    """ink_map of a (N, H, W) stack: per-image decisions as arrays of N."""
    n = len(g)
    flat = g.reshape(n, -1)
    reason = np.full(n, None, dtype=object)
    reason[(flat.max(axis=1) - flat.min(axis=1)) < 2 / 255] = UNIFORM
    if not _undecided(reason).any():
        return [InkMap(np.zeros_like(image), reason=why) for image, why in zip(g, reason)]
    border = np.sort(_border(g), axis=1)
    low, mid, high = (border[:, int(q * (border.shape[1] - 1))] for q in (0.1, 0.5, 0.9))
    clean = (high - low) < 0.04
    dark = flat.mean(axis=1) < mid
    edge_ink = np.zeros(n, dtype=bool)  # tight crops: strokes run into the border of a flat background
    for i in np.flatnonzero(~clean & _undecided(reason) & (max(g.shape[1:]) <= CROP_SIDE)):
        if (paper := _flat_with_edge_ink(g[i], border[i])) is not None:
            clean[i] = edge_ink[i] = True
            mid[i], dark[i] = paper
    background = np.where(dark, 1.0 - mid, mid).astype(np.float32)[:, None, None]
    if not clean.all():
        background = np.repeat(background, g.shape[1], axis=1).repeat(g.shape[2], axis=2)
        for i in np.flatnonzero(~clean & _undecided(reason)):
            small = _downsample_for_stats(g[i])
            dark[i] = _is_dark_ink(small)
            background[i] = _local_background(1.0 - small if dark[i] else small, g.shape[1:])
    flip = dark.astype(np.float32)[:, None, None]
    ink = np.abs(g - flip)  # 1 - g for dark ink: from here on ink is bright on a dark background
    ink -= background
    np.maximum(ink, np.float32(0), out=ink)
    if dark.any():  # dark ink is measured relative to the paper's brightness
        paper = np.maximum(1.0 - background, np.float32(0.05))
        ink /= paper if dark.all() else np.where(flip > 0, paper, np.float32(1))
    return _normalize_contrast(ink, clean, dark, reason, edge_ink)


def _flat_with_edge_ink(gray: np.ndarray, border: np.ndarray) -> tuple[float, bool] | None:
    """(background level, dark ink) of a tightly cropped image on a flat background, else None.

    A tight crop (a digit cut out of a form or a dataset that stores digits frame-filling) has strokes
    running into its border, so the border is not one level and the photo path would take it for uneven
    light. But its pixels still fall into two well separated levels, the paper's being flat: then the
    paper is the level that holds most of the border, and the ink is the other.
    """
    sample = gray.ravel() if gray.size <= SAMPLE_PIXELS else gray.ravel()[:: gray.size // SAMPLE_PIXELS]
    cut = float(_otsu(sample[None])[0])
    paper_is_light = np.mean(border >= cut) >= 0.5
    paper = sample[sample >= cut] if paper_is_light else sample[sample < cut]
    ink = sample[sample < cut] if paper_is_light else sample[sample >= cut]
    if ink.size == 0 or paper.size == 0:
        return None
    level, ink_level = float(np.median(paper)), float(np.median(ink))
    contrast = abs(ink_level - level)
    spread = 1.4826 * float(np.median(np.abs(paper - level)))
    ink_on_border = np.mean(np.abs(border - level) > max(4 * spread, 0.1 * contrast))
    if contrast < EDGE_INK_CONTRAST or spread > FLAT_PAPER * contrast or ink_on_border < EDGE_INK_SHARE:
        return None
    if np.ptp(_quadrant_paper_levels(gray, cut, paper_is_light)) > FLAT_PAPER * contrast:
        return None  # the paper is lighter in one part of the image than in another: uneven light
    return level, bool(paper_is_light)


def _quadrant_paper_levels(gray: np.ndarray, cut: float, paper_is_light: bool) -> np.ndarray:
    """Paper level in each quarter of the image that holds enough paper to tell.

    The level is taken away from the ink side (the 75th percentile of light paper), so that the
    anti-aliased rims of thick strokes, which crowd a quarter full of ink, do not pull it."""
    h, w = gray.shape
    levels = []
    for quarter in (gray[: h // 2, : w // 2], gray[: h // 2, w // 2:], gray[h // 2:, : w // 2], gray[h // 2:, w // 2:]):
        paper = quarter[quarter >= cut] if paper_is_light else quarter[quarter < cut]
        if paper.size >= max(4, quarter.size // 8):
            levels.append(_quantiles(paper, (0.75 if paper_is_light else 0.25,))[0])
    return np.array(levels or [0.0])


def _undecided(reason: np.ndarray) -> np.ndarray:
    """Which images of a stack are still in the running: no reason yet why they hold no digit."""
    return np.equal(reason, None)


def _border(images: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, 2H + 2W) border pixels of each image."""
    return np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)


def _downsample_for_stats(g: np.ndarray, side: int = 64) -> np.ndarray:
    factor = max(1, max(g.shape) // side)
    return _reduce(g, max(g.shape) // factor) if factor > 1 else g


def _quantiles(values: np.ndarray, qs) -> list[float]:
    """Nearest-rank quantiles via one partition (np.percentile's overhead dominates on small images)."""
    flat = values.ravel()
    ranks = [min(flat.size - 1, int(q * (flat.size - 1) + 0.5)) for q in qs]
    part = np.partition(flat, sorted(set(ranks)))
    return [float(part[r]) for r in ranks]


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """Nearest-rank median of each row of (N, M)."""
    rank = int(0.5 * (rows.shape[1] - 1) + 0.5)
    return np.partition(rows, rank, axis=1)[:, rank]


def _masked_quantile(rows: np.ndarray, mask: np.ndarray, q: float) -> np.ndarray:
    """Nearest-rank quantile ``q`` of the masked values of each row of (N, M); NaN where none is masked."""
    count = mask.sum(axis=1)
    rank = np.minimum(count - 1, np.floor(q * (count - 1) + 0.5).astype(np.intp))
    if rows.shape[1] <= 4096:  # small images: one sort of the stack beats a partition per row
        ordered = np.sort(np.where(mask, rows, -np.inf), axis=1)
        picked = ordered[np.arange(len(rows)), np.clip(rows.shape[1] - count + rank, 0, rows.shape[1] - 1)]
    else:
        picked = np.array([np.partition(row[m], r)[r] if r >= 0 else np.nan
                           for row, m, r in zip(rows, mask, rank)], dtype=np.float32)
    return np.where(count > 0, picked, np.nan)


def _is_dark_ink(small: np.ndarray) -> bool:
    low, median, high = _quantiles(small, (0.01, 0.5, 0.99))
    return bool((median - low) > (high - median))


def _local_background(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Smooth background field of a bright-ink-on-dark image.

    A grey opening (min then max filter; separable, so cheap) wider than any stroke removes the strokes
    and keeps the slowly varying paper; a box blur of the same width smooths its blockiness.
    """
    window = max(3, min(small.shape) // 4)
    field = ndimage.grey_opening(small, size=(window, window), mode="nearest")
    # Opening keeps shadow edges sharp; smooth only its blocks, not the edges, or they come back as "ink".
    field = ndimage.uniform_filter(field, size=max(3, window // 3), mode="nearest")
    if field.shape == shape:
        return field
    img = Image.fromarray(field, mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _otsu(rows: np.ndarray) -> np.ndarray:
    """Otsu's threshold of each row of (N, M) values in [0, 1] (64-bin histograms, all rows at once)."""
    n = len(rows)
    bins = np.minimum((rows * _OTSU_BINS).astype(np.intp), _OTSU_BINS - 1) + _OTSU_BINS * np.arange(n)[:, None]
    hist = np.bincount(bins.ravel(), minlength=n * _OTSU_BINS).reshape(n, _OTSU_BINS).astype(np.float64)
    w0 = np.cumsum(hist, axis=1)
    w1 = w0[:, -1:] - w0
    m0 = np.cumsum(hist * _OTSU_CENTRES, axis=1)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[:, -1:] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return (np.argmax(between, axis=1) + 1) / _OTSU_BINS


def _normalize_contrast(ink: np.ndarray, clean: np.ndarray, dark: np.ndarray, reason: np.ndarray,
                        edge_ink: np.ndarray) -> list[InkMap]:
    """Map background noise to 0 and typical strokes to 1; decide blank / noise / ink, per image."""
    n = len(ink)
    flat = ink.reshape(n, -1)
    sample = flat if flat.shape[1] <= SAMPLE_PIXELS else flat[:, :: flat.shape[1] // SAMPLE_PIXELS]
    # A clean image's border is pure background: its noise is the noise to ignore. A photo has no such
    # border; there the whole (mostly paper) image stands in for it.
    median, floor = np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32)
    plain = clean & ~edge_ink
    for rows, noise in ((plain, _border(ink[plain])), (~clean, sample[~clean])):
        if rows.any():
            median[rows] = _row_medians(noise)
            floor[rows] = median[rows] + 4.0 * 1.4826 * _row_medians(np.abs(noise - median[rows][:, None]))
    if edge_ink.any():  # a tight crop's border holds strokes too: its noise is that of its paper pixels
        median[edge_ink], floor[edge_ink] = _paper_noise(sample[edge_ink])
    cut = np.maximum(_otsu(np.minimum(sample, 1.0)), floor)
    level = _masked_quantile(flat, flat > cut[:, None], 0.9)
    with np.errstate(invalid="ignore"):
        checks = [(flat.max(axis=1) < MIN_CONTRAST, BLANK), (np.isnan(level), BLANK),
                  (level - median < MIN_CONTRAST, BLANK),
                  ((level - floor < MIN_CONTRAST) | (floor > 0.5 * level), FLAT_NOISE)]
    for failed, why in checks:
        reason[_undecided(reason) & failed] = why  # the first failed check names the reason
    alive = _undecided(reason)
    if not alive.any():
        return [InkMap(np.zeros_like(image), reason=why, dark_ink=bool(d)) for image, why, d in zip(ink, reason, dark)]
    span = np.where(alive, level - floor, 1.0).astype(np.float32)[:, None, None]
    norm = np.clip((ink - floor[:, None, None]) / span, 0.0, 1.0)
    reason[alive & (_coherence(norm) < MIN_COHERENCE)] = NOISE
    raw = np.minimum(ink, 1.0)
    found_lines = remove_lines_in_stack(norm, _undecided(reason))  # box borders and rules are not strokes
    maps = _drop_specks(norm, reason, photo=~clean)
    for i, m in enumerate(maps):
        m.dark_ink = bool(dark[i])
        m.lines = found_lines[i]
        if m.reason is None:
            m.raw, m.level = raw[i], float(level[i])
    return maps


def _paper_noise(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(median, median + 4 robust deviations) of the pixels below each row's Otsu split: the paper's noise."""
    paper = rows < _otsu(np.minimum(rows, 1.0))[:, None]
    median = _masked_quantile(rows, paper, 0.5)
    deviation = _masked_quantile(np.abs(rows - median[:, None]), paper, 0.5)
    return median, median + 4.0 * 1.4826 * deviation


def _coherence(x: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation of each image of (N, H, W): ~0 for pixel noise, 0.6-1 for strokes at any scale."""
    d = x - x.mean(axis=(1, 2), keepdims=True)
    var = (d * d).sum(axis=(1, 2))
    horizontal = (d[:, :, 1:] * d[:, :, :-1]).sum(axis=(1, 2))
    vertical = (d[:, 1:] * d[:, :-1]).sum(axis=(1, 2))
    return np.where(var > 0, (horizontal + vertical) / (2 * np.maximum(var, 1e-12)), 0.0)


def _drop_specks(ink: np.ndarray, reason: np.ndarray, photo: np.ndarray) -> list[InkMap]:
    """Label the ink blobs; keep the strokes, drop dust, texture and shadow edges.

    Blobs are the connected pixels above a quarter of stroke strength (so a faint shadow edge does not
    join a digit it touches); each kept blob then takes back its faint anti-aliased rim. A blob is a
    stroke if it reaches full strength somewhere and holds at least 5% of the largest stroke's ink; a
    lighter blob inside the box of the strokes (a broken-off piece of a stroke) stays too. In a photo,
    ink that runs off the image is the edge of a shadow or of the page, not the digit, whenever some
    stroke stays inside it. All images of the stack are labelled at once; blob ids run on from one
    image to the next.
    """
    n = len(ink)
    alive = _undecided(reason)
    labels, count = _label_each((ink > LABEL_LEVEL) & alive[:, None, None])
    last_id = np.maximum.accumulate(labels.reshape(n, -1).max(axis=1))
    first_id = np.concatenate([[0], last_id[:-1]])  # image i holds ids first_id[i] + 1 .. last_id[i]
    owner = np.searchsorted(last_id, np.arange(1, count + 1))
    inked = labels > 0
    ids, values = labels[inked], ink[inked]
    mass = np.bincount(ids, weights=values, minlength=count + 1)[1:]
    peak = np.zeros(count + 1, dtype=np.float32)
    np.maximum.at(peak, ids, values)
    peak = peak[1:]
    strong = np.where(peak >= STROKE_PEAK, mass, 0.0)
    # Clean scans and MNIST-like images have no shadow edges: the per-blob look is paid for photos only.
    off_image = _runs_off_the_image(labels, count) & photo[owner] if photo.any() else np.zeros(count, dtype=bool)
    stays_inside = _per_image(np.maximum, owner, np.where(off_image, 0.0, strong), n)[owner] > 0
    strong = np.where(off_image & stays_inside, 0.0, strong)
    blobs = np.bincount(owner, minlength=n)
    strongest = _per_image(np.maximum, owner, strong, n)
    total = np.bincount(owner, weights=mass, minlength=n)
    scattered = (_largest_blobs_ink(mass, blobs, SCATTER_BLOBS) < 0.5 * total) & (blobs > 12)
    for failed, why in ((blobs == 0, BLANK), (scattered, DOTS), (strongest <= 0, BLANK)):
        reason[_undecided(reason) & failed] = why
    accepted = _undecided(reason)[owner]
    major = (strong >= SPECK_FRACTION * strongest[owner]) & accepted
    keep = major
    if not major[accepted].all():
        keep = major | (_inside_strokes(labels, owner, major, n) & (peak >= STROKE_PEAK / 2) & accepted)
    kept_labels = np.where(np.concatenate([[False], keep])[labels], labels, 0)
    # Give each kept blob its rim: the faint edge pixels next to it (one pixel out).
    grown = _max_of_neighbours(kept_labels)
    grown = np.where((kept_labels > 0) | ((ink > 0) & ~inked), grown, 0)
    own = grown > 0
    strokes = np.where(own, ink, np.float32(0))
    local_labels = grown if n == 1 else np.where(own, grown - first_id[:, None, None].astype(grown.dtype), 0)
    kept_ids = np.flatnonzero(keep) + 1
    kept_by_image = np.split(kept_ids, np.searchsorted(kept_ids, last_id[:-1], side="right"))
    return [InkMap(np.zeros_like(ink[i]), reason=reason[i]) if reason[i] is not None else
            InkMap(strokes[i], labels=local_labels[i], kept=kept_by_image[i] - first_id[i]) for i in range(n)]


def _largest_blobs_ink(mass: np.ndarray, blobs: np.ndarray, count: int) -> np.ndarray:
    """Per image, the ink of its ``count`` largest blobs (``mass`` holds each image's blobs in turn)."""
    return np.array([np.sort(part)[-count:].sum() for part in np.split(mass, np.cumsum(blobs)[:-1])])


def _runs_off_the_image(labels: np.ndarray, count: int) -> np.ndarray:
    """Which of the ``count`` blobs of a labelled (N, H, W) stack run off their image like the edge of a
    shadow or of the page: reaching two of its sides, or lying along one (longer along it than deep
    into the image). A digit cut by the edge (a "7" crossing the underline at the bottom of a form)
    reaches into the image further than it runs along the edge."""
    height, width = labels.shape[1:]
    out = np.zeros(count, dtype=bool)
    for k, (_, rows, cols) in enumerate(ndimage.find_objects(labels)):
        tall, wide = rows.stop - rows.start, cols.stop - cols.start
        on_rows, on_cols = (rows.start == 0) + (rows.stop == height), (cols.start == 0) + (cols.stop == width)
        out[k] = on_rows + on_cols >= 2 or (on_rows and tall < wide) or (on_cols and wide < tall)
    return out


def _max_of_neighbours(stack: np.ndarray) -> np.ndarray:
    """Each pixel's maximum over its 3x3 neighbourhood (inside the image), for every image of a stack.

    The same as ndimage.maximum_filter(size=(1, 3, 3)), done as four shifted maxima (rows, then
    columns), which is several times faster.
    """
    out = stack.copy()
    np.maximum(out[:, 1:], stack[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], stack[:, 1:], out=out[:, :-1])
    rows = out.copy()
    np.maximum(out[:, :, 1:], rows[:, :, :-1], out=out[:, :, 1:])
    np.maximum(out[:, :, :-1], rows[:, :, 1:], out=out[:, :, :-1])
    return out


def _label_each(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected blobs of each image of a (N, H, W) stack, never joined across images."""
    if len(binary) == 1:  # a lone image: plain 2-D labelling is faster
        labels, count = ndimage.label(binary[0], structure=_EIGHT_NEIGHBOURS)
        return labels[None], count
    return ndimage.label(binary, structure=_STACKED_EIGHT_NEIGHBOURS)


def _per_image(ufunc, owner: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float64)
    ufunc.at(out, owner, values)
    return out


def _inside_strokes(labels: np.ndarray, owner: np.ndarray, major: np.ndarray, n: int) -> np.ndarray:
    """Which blobs lie inside their image's box of major strokes, widened by 10% on each side."""
    boxes = np.array([(s[2].start, s[1].start, s[2].stop, s[1].stop) for s in ndimage.find_objects(labels)])
    x0, y0, x1, y1 = boxes.T
    outer = np.iinfo(boxes.dtype).max
    bx0, by0, bx1, by1 = np.full(n, outer), np.full(n, outer), np.zeros(n, boxes.dtype), np.zeros(n, boxes.dtype)
    np.minimum.at(bx0, owner[major], x0[major]), np.minimum.at(by0, owner[major], y0[major])
    np.maximum.at(bx1, owner[major], x1[major]), np.maximum.at(by1, owner[major], y1[major])
    margin_x, margin_y = 0.1 * (bx1 - bx0)[owner], 0.1 * (by1 - by0)[owner]
    return ((x0 >= bx0[owner] - margin_x) & (y0 >= by0[owner] - margin_y)
            & (x1 <= bx1[owner] + margin_x) & (y1 <= by1[owner] + margin_y))


# ---------------------------------------------------------------------------------------------- fitting

def fit_to_mnist(ink: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop ink (0..1, 0 background) to its box, fit the longer side to 20 px, centre by mass in 28x28.

    Ink already at MNIST scale (longer side 20 px) is not resampled at all, so MNIST digits come out
    as they went in.
    """
    if box is None:
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        if rows.size == 0:
            return np.zeros((MNIST_SIDE, MNIST_SIDE), dtype=np.float32)
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    x0, y0, x1, y1 = box
    patch = ink[y0:y1, x0:x1]
    height, width = patch.shape
    scale = DIGIT_BOX / max(height, width)
    new_w = max(1, min(DIGIT_BOX, round(width * scale)))
    new_h = max(1, min(DIGIT_BOX, round(height * scale)))
    if (new_h, new_w) != patch.shape:
        # BOX (area averaging) anti-aliases when shrinking, as MNIST's normalization did; bilinear when enlarging.
        resample = Image.BOX if scale < 1 else Image.BILINEAR
        patch = np.asarray(Image.fromarray(np.ascontiguousarray(patch, dtype=np.float32), mode="F")
                           .resize((new_w, new_h), resample), dtype=np.float32)
        patch = np.clip(patch, 0.0, 1.0)
    return _place_by_mass(patch)


def _place_by_mass(patch: np.ndarray) -> np.ndarray:
    height, width = patch.shape
    total = float(patch.sum())
    if total > 0:
        cy = float(patch.sum(axis=1) @ np.arange(height, dtype=np.float32)) / total
        cx = float(patch.sum(axis=0) @ np.arange(width, dtype=np.float32)) / total
    else:
        cy, cx = (height - 1) / 2, (width - 1) / 2
    # Integer shift, as MNIST did; clamped so the whole digit stays inside the field.
    top = int(np.clip(np.floor(MNIST_CENTRE - cy + 0.5), 0, MNIST_SIDE - height))
    left = int(np.clip(np.floor(MNIST_CENTRE - cx + 0.5), 0, MNIST_SIDE - width))
    out = np.zeros((MNIST_SIDE, MNIST_SIDE), dtype=np.float32)
    out[top:top + height, left:left + width] = patch
    return out


# ---------------------------------------------------------------------------------------------- one call

def normalize_digit(gray: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """THE normalization: grayscale image -> ((28, 28) float32 ink in [0, 1], None) or (None, reason)."""
    return normalize_digits([gray])[0]


def normalize_digits(grays: list[np.ndarray]) -> list[tuple[np.ndarray | None, str | None]]:
    """normalize_digit of many images; images of one shape are normalized together, much faster."""
    results: list = [None] * len(grays)
    for indices, maps in _ink_stacks(grays):  # stack by stack: only one stack's ink maps are held at a time
        for i, result in zip(indices, _fit_stack(maps)):
            results[i] = result
    return results


def _fit_stack(maps: list[InkMap]) -> list[tuple[np.ndarray | None, str | None]]:
    """Ink maps -> the model's 28x28 each (or the reason there is none); MNIST digits are kept as they are."""
    candidates = [k for k, m in enumerate(maps) if m.raw is not None and m.raw.shape == (MNIST_SIDE, MNIST_SIDE)]
    as_is = set()
    if candidates:
        flags = _already_mnist(np.stack([maps[k].raw for k in candidates]), np.array([maps[k].level for k in candidates]))
        as_is = {k for k, flag in zip(candidates, flags) if flag}
    return [(None, m.reason) if m.reason else (m.raw, None) if k in as_is else (fit_to_mnist(m.ink), None)
            for k, m in enumerate(maps)]


def _already_mnist(raw: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Which of (N, 28, 28) ink maps are already MNIST digits, to be left alone: strong ink, about 20 px
    tall or wide, centred by mass.

    Re-cropping them would undo MNIST's own choices (which pieces count as ink, how the box was rounded).
    """
    rows, cols = (raw > 0.05).any(axis=2), (raw > 0.05).any(axis=1)
    extent = np.maximum(occupied_span(rows), occupied_span(cols))
    index = np.arange(MNIST_SIDE, dtype=np.float32)
    total = np.maximum(raw.sum(axis=(1, 2)), 1e-6)
    cy, cx = raw.sum(axis=2) @ index / total, raw.sum(axis=1) @ index / total
    return ((level >= 0.8) & rows.any(axis=1) & (extent >= 16) & (extent <= 22)
            & (np.abs(cy - MNIST_CENTRE) <= 1.0) & (np.abs(cx - MNIST_CENTRE) <= 1.0))


def occupied_span(occupied: np.ndarray) -> np.ndarray:
    """Length from the first to the last True of each row of (N, M) (0 where none)."""
    first = occupied.argmax(axis=1)
    last = occupied.shape[1] - 1 - occupied[:, ::-1].argmax(axis=1)
    return np.where(occupied.any(axis=1), last - first + 1, 0)


def preprocess_image(source, name: str | None = None) -> tuple[np.ndarray | None, str | None]:
    """Decode and normalize one input. Raises ImageError (one line, naming the input) if unreadable."""
    return normalize_digit(decode_image(source, name))


def prepare_batch(sources: list, names: list | None = None) -> list[tuple[np.ndarray | None, str | None, str | None]]:
    """(image, reason, error) per input; never raises for a bad input. Runs in worker processes.

    Images are decoded until about BATCH_PIXELS are held, then normalized together (normalize_digits).
    """
    names = names or [None] * len(sources)
    out: list = [None] * len(sources)
    decoded: dict[int, np.ndarray] = {}
    held = 0
    for i, (source, name) in enumerate(zip(sources, names)):
        try:
            decoded[i] = decode_image(source, name)
            held += decoded[i].size
        except Exception as exc:
            out[i] = (None, None, _error_line(exc, source, name))
        if held >= BATCH_PIXELS or i == len(sources) - 1:
            _normalize_into(out, decoded, sources, names)
            decoded, held = {}, 0
    return out


def _normalize_into(out: list, decoded: dict, sources: list, names: list) -> None:
    try:
        normalized = [(image, reason, None) for image, reason in normalize_digits(list(decoded.values()))]
    except Exception:  # one odd image must cost one row, not the batch: redo them one by one
        normalized = [_normalize_or_error(gray, sources[i], names[i]) for i, gray in decoded.items()]
    for i, row in zip(decoded, normalized):
        out[i] = row


def _normalize_or_error(gray, source, name) -> tuple:
    try:
        return (*normalize_digit(gray), None)
    except Exception as exc:
        return None, None, _error_line(exc, source, name)


def _error_line(exc: Exception, source, name) -> str:
    if isinstance(exc, ImageError):
        return str(exc)
    # A decoder bug must cost one row, not the batch.
    return f"{source_name(source, name)}: cannot read image ({first_line(exc)})"


def prepare_chunk(chunk: tuple[list, list]) -> list:
    """prepare_batch for one (sources, names) chunk: the unit of work of the parallel decoders."""
    return prepare_batch(*chunk)

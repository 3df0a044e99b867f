"""Any image file, bytes or array -> a grayscale float32 array (0 = black .. 1 = white), within limits.

    decode_image(source)         -> (H, W) float32, reduced to about WORK_SIDE px (Pillow does the decoding;
                                    a small plain PNG goes to OpenCV in one call, see plain_png)
    decode_image_scaled(source)  -> the same and the factor back to the original's pixels
    read_error(exc, source)      -> the one-line message for an input that could not be read

Only the formats in READ_FORMATS are ever opened, each image is held to a pixel budget before it is
decoded, and every failure is an ImageError naming the input: the batch policy (one bad file costs one
row) rests on that. Nothing here imports torch.
"""

from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError, first_line
from .plain_png import MAX_BYTES as PLAIN_PNG_BYTES, read_plain_png

WORK_SIDE = 320      # larger images are reduced to about this size first: plenty for a 20 px digit, and fast
DRAFT_SIDE = 200     # JPEGs are decoded at 1/2, 1/4 or 1/8 scale (draft mode) while the short side stays above this
MIN_SIDE = 8         # anything smaller cannot hold a readable digit

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
HARMLESS_IMAGE_WARNINGS = ("(?i:.*corrupt EXIF)", "Metadata Warning", "Tag data larger than file",
                           "Tag offset too large", "Image appears to be a malformed MPO file", "Invalid APNG",
                           "XMP data cannot be read")
# The same as one filter: each file is decoded under its own filters, and a filter per message made setting
# them up a noticeable part of decoding a small PNG.
HARMLESS_IMAGE_PATTERN = "|".join(f"(?:{message})" for message in HARMLESS_IMAGE_WARNINGS)


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
    pixels = _plain_png(source, max_side, budget)
    if pixels is not None:
        return _reduce_scaled(_array_to_gray(pixels, label), max_side, pixels.shape[1])
    try:
        with warnings.catch_warnings():
            # What Pillow warns about (corrupt EXIF, odd chunks, ...) is this file's error, not a stray
            # line on stderr. Its decompression-bomb warning is not needed: _check_image refuses all of it.
            warnings.simplefilter("error", UserWarning)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", message=HARMLESS_IMAGE_PATTERN)
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


def _plain_png(source, max_side: int, budget: int) -> np.ndarray | None:
    """The pixels of a small plain PNG file or bytes (plain_png), or None: Pillow decodes everything else,
    and words the errors (a file that cannot be opened included)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".png"):
        try:
            with open(source, "rb") as fh:
                if os.fstat(fh.fileno()).st_size > PLAIN_PNG_BYTES:
                    return None
                data = fh.read()
        except OSError:
            return None
    else:
        return None
    # Over Pillow's own decompression-bomb limit too, Pillow's path gives the error.
    return read_plain_png(data, max_side, min(budget, Image.MAX_IMAGE_PIXELS or budget))


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
    reduced = reduce_by_blocks(gray, max_side)
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


def reduce_by_blocks(gray: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average big images down to about ``max_side`` (integer factor: exact and fast)."""
    factor = _reduction_factor(gray.shape, max_side)
    if factor < 2:
        return np.ascontiguousarray(gray, dtype=np.float32)
    h, w = (gray.shape[0] // factor) * factor, (gray.shape[1] // factor) * factor
    whole_blocks = np.ascontiguousarray(gray[:h, :w], dtype=np.float32)
    # Pillow's reduce is the same block mean as numpy's reshape-and-mean, in one pass in C.
    return np.asarray(Image.fromarray(whole_blocks, mode="F").reduce(factor))


def _reduction_factor(size: tuple[int, int], max_side: int) -> int:
    """The integer block size that brings an image's longer side nearest to ``max_side`` (1: leave it)."""
    return int(max(size) / max_side + 0.5)


def read_error(exc: Exception, source, name: str | None = None) -> str:
    """The one line a batch reports for an input that could not be read: an ImageError's own message, or
    for anything else (a decoder bug) the input's name and the exception's first line."""
    if isinstance(exc, ImageError):
        return str(exc)
    return f"{source_name(source, name)}: cannot read image ({first_line(exc)})"

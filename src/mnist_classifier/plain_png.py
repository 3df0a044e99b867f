"""The commonest small file, a plain 8-bit grey or RGB PNG (a scan, a cut-out digit, an MNIST digit saved as
a file), decoded in one OpenCV call instead of Pillow's many steps, which cost several times the decoding
itself on a small image.

Only a file this module has checked through is handed to OpenCV: every chunk whole, with its checksum
right, of a kind that changes no pixel; no transparency, no EXIF orientation, no animation, no interlacing;
image data that inflates to exactly the rows its header promises. PNG is lossless, so OpenCV's pixels are
Pillow's. Anything else, a damaged file included, returns None and goes to Pillow, which words its errors.
"""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 1 << 20  # larger files are not small images: Pillow's fixed cost does not matter there
# Chunks that hold no pixel and that neither decoder acts on; any other chunk sends the file to Pillow.
HARMLESS_CHUNKS = {b"IHDR", b"IDAT", b"IEND", b"pHYs", b"tEXt", b"tIME"}
_CHANNELS = {0: 1, 2: 3}  # PNG colour types read here: grey, RGB


def read_plain_png(data: bytes, max_side: int, budget: int) -> np.ndarray | None:
    """``data``'s pixels as uint8 (H, W) or (H, W, 3) RGB, when it is a plain PNG of at most ``budget``
    pixels whose sides are under 1.5 x ``max_side`` (no reduction needed); None otherwise."""
    if len(data) > MAX_BYTES or not data.startswith(SIGNATURE):
        return None
    chunks = _chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        return None
    header = chunks[0][1]
    if len(header) != 13:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", header)
    channels = _CHANNELS.get(colour)
    if depth != 8 or channels is None or (compression, filtering, interlace) != (0, 0, 0):
        return None
    if not 0 < width < 1.5 * max_side or not 0 < height < 1.5 * max_side or width * height > budget:
        return None
    if not _rows_are_whole(b"".join(body for kind, body in chunks if kind == b"IDAT"), width * channels, height):
        return None
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.shape[:2] != (height, width):
        return None
    return pixels if channels == 1 else pixels[..., ::-1]  # OpenCV hands colour back as BGR


def _chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """(kind, body) of each chunk, when every one is whole, harmless and has a right checksum."""
    chunks, at = [], len(SIGNATURE)
    while at < len(data):
        if at + 12 > len(data):
            return None
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        end = at + 12 + length
        if kind not in HARMLESS_CHUNKS or end > len(data):
            return None
        body = data[at + 8:end - 4]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4:end])[0]:
            return None
        chunks.append((kind, body))
        at = end
    return chunks


def _rows_are_whole(compressed: bytes, row_bytes: int, height: int) -> bool:
    """The image data inflates to exactly ``height`` rows, each a known filter byte and ``row_bytes`` bytes:
    what OpenCV's decoder will find, so it never has a complaint of its own to print."""
    expected = height * (row_bytes + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, expected + 1)  # never more than one byte past the image
    except zlib.error:
        return False
    if len(raw) != expected or not inflater.eof or inflater.unconsumed_tail:
        return False
    return max(raw[::row_bytes + 1]) <= 4

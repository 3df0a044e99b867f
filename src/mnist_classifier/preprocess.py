"""Any image -> the 28x28 float array the models expect, the way MNIST itself was made.

MNIST digits are light ink (1.0) on a dark background (0.0), scaled so the digit's longer side is 20
pixels (anti-aliased), and placed in a 28x28 field so that the centre of mass sits at the centre. A model
trained on them fails on a phone photo of dark ink on grey paper unless the photo is brought to exactly
that form first. The pipeline, one module per step:

    decode.decode_image(source) -> grayscale float32 (H, W), 0 = black .. 1 = white (Pillow decodes)
    ink.ink_map(gray)           -> InkMap: ink 0..1 on a 0 background, lines and specks removed, or a reason
    fit.fit_to_mnist(ink)       -> (28, 28) float32: crop, fit 20x20 keeping aspect ratio, centre by mass

and here, the calls that join them (the three steps' public names are importable from here too):

    normalize_digit(gray)       -> ink_map + fit_to_mnist: THE normalization
    preprocess_image(source)    -> decode + normalize
    prepare_batch(sources)      -> (image, reason, error) per input, one bad input costing one row

Nothing here imports torch, so worker processes that decode images in parallel start quickly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .decode import (HARMLESS_IMAGE_WARNINGS, IMAGE_EXTENSIONS, MAX_PIXELS, MAX_PIXELS_ENV,
                     READ_FORMATS, WORK_SIDE, decode_image, decode_image_scaled, read_error, source_name)
from .fit import DIGIT_BOX, MNIST_CENTRE, MNIST_SIDE, fit_to_mnist, occupied_span
from .ink import InkMap, ink_stacks, ink_map, ink_maps
from .reprs import compact_repr

__all__ = ["BATCH_PIXELS", "PreparedDigit", "DIGIT_BOX", "HARMLESS_IMAGE_WARNINGS", "IMAGE_EXTENSIONS", "InkMap", "MAX_PIXELS",
           "MAX_PIXELS_ENV", "MNIST_CENTRE", "MNIST_SIDE", "READ_FORMATS", "WORK_SIDE", "decode_image",
           "decode_image_scaled", "fit_to_mnist", "ink_map", "ink_maps", "normalize_digit", "normalize_digits",
           "occupied_span", "prepare_batch", "prepare_chunk", "preprocess_image", "read_error", "source_name"]

class PreparedDigit(NamedTuple):
    """One input made ready for the model, or why not: the unit the worker processes hand back."""

    image: np.ndarray | None   # (28, 28) float32, or None
    reason: str | None         # why there is no digit (blank, noise, ...)
    error: str | None          # the one-line message for an input that could not be read

    def __repr__(self) -> str:
        return compact_repr(self, self._asdict())


BATCH_PIXELS = 1 << 22  # decoded pixels a batch holds before normalizing them (16 MB as float32)


def normalize_digit(gray: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """THE normalization: grayscale image -> ((28, 28) float32 ink in [0, 1], None) or (None, reason)."""
    return normalize_digits([gray])[0]


def normalize_digits(grays: list[np.ndarray]) -> list[tuple[np.ndarray | None, str | None]]:
    """normalize_digit of many images; images of one shape are normalized together, much faster."""
    results: list = [None] * len(grays)
    for indices, maps in ink_stacks(grays):  # stack by stack: only one stack's ink maps are held at a time
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


def preprocess_image(source, name: str | None = None) -> tuple[np.ndarray | None, str | None]:
    """Decode and normalize one input. Raises ImageError (one line, naming the input) if unreadable."""
    return normalize_digit(decode_image(source, name))


def prepare_batch(sources: list, names: list | None = None) -> list[PreparedDigit]:
    """A PreparedDigit per input; never raises for a bad input. Runs in worker processes.

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
            out[i] = PreparedDigit(None, None, read_error(exc, source, name))
        if held >= BATCH_PIXELS or i == len(sources) - 1:
            _normalize_into(out, decoded, sources, names)
            decoded, held = {}, 0
    return out


def _normalize_into(out: list, decoded: dict, sources: list, names: list) -> None:
    try:
        normalized = [PreparedDigit(image, reason, None) for image, reason in normalize_digits(list(decoded.values()))]
    except Exception:  # one odd image must cost one row, not the batch: redo them one by one
        normalized = [_normalize_or_error(gray, sources[i], names[i]) for i, gray in decoded.items()]
    for i, row in zip(decoded, normalized):
        out[i] = row


def _normalize_or_error(gray, source, name) -> PreparedDigit:
    try:
        return PreparedDigit(*normalize_digit(gray), None)
    except Exception as exc:
        return PreparedDigit(None, None, read_error(exc, source, name))


def prepare_chunk(chunk: tuple[list, list]) -> list:
    """prepare_batch for one (sources, names) chunk: the unit of work of the parallel decoders."""
    return prepare_batch(*chunk)

"""Ink -> the model's 28x28 field, framed as MNIST framed its digits.

MNIST scaled each digit so its longer side is 20 px (anti-aliased) and placed it in a 28x28 field with
its centre of mass at the centre; ``fit_to_mnist`` does exactly that to an ink map, and leaves ink that is
already at MNIST scale unresampled, so MNIST digits come out as they went in.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MNIST_SIDE = 28      # the model's input field
DIGIT_BOX = 20       # MNIST scaled each digit so its longer side is 20 px ...
MNIST_CENTRE = 14.0  # ... and put its centre of mass here (measured on the test set: 14.0 +- 0.5 on both axes)


def ink_box(ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the non-zero pixels of a 2-D array, end-exclusive; None when there are none."""
    rows = np.flatnonzero(ink.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(ink.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def fit_to_mnist(ink: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop ink (0..1, 0 background) to its box, fit the longer side to 20 px, centre by mass in 28x28.

    Ink already at MNIST scale (longer side 20 px) is not resampled at all, so MNIST digits come out
    as they went in.
    """
    box = box or ink_box(ink)
    if box is None:
        return np.zeros((MNIST_SIDE, MNIST_SIDE), dtype=np.float32)
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


def occupied_span(occupied: np.ndarray) -> np.ndarray:
    """Length from the first to the last True of each row of (N, M) (0 where none)."""
    first = occupied.argmax(axis=1)
    last = occupied.shape[1] - 1 - occupied[:, ::-1].argmax(axis=1)
    return np.where(occupied.any(axis=1), last - first + 1, 0)

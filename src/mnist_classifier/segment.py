"""Split a number written on one line into single digits, each normalized like an MNIST digit.

The ink map (ink.ink_map: background, polarity, contrast, printed lines and specks handled once,
for the whole image) is cut into connected blobs; blobs stacked above each other are one digit in
several strokes (a "5" whose bar did not touch, a broken "4"); a blob much wider than the digits' height
is several touching digits, cut where the column of ink is thinnest.

A number written one digit per box of a form is read box by box instead: the boxes' lines are gone
from the ink map, and the cells they formed (InkMap.lines) say where each digit is. Each blob belongs
to the cell holding most of its ink (a stroke that crosses a border stays with its digit), unless it
has much of its ink in two cells (two digits touching across a border: cut along it); an empty cell is
skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .decode import decode_image_scaled, read_error
from .fit import fit_to_mnist, ink_box
from .ink import InkMap, ink_map
from .morphology import boxes_of
from .reprs import compact_repr

MERGE_OVERLAP = 0.5      # blobs whose columns overlap by half the narrower one belong to one digit
FRAGMENT_HEIGHT = 0.35   # a blob under 35% of the line's height is a piece of a neighbour, not a digit ...
FRAGMENT_INK = 0.1       # ... and so is one holding under 10% of the inkiest digit's (a thin "1" holds a quarter)
DIGIT_ASPECT = 0.8       # width / height of a wide handwritten digit; wider blobs hold several digits
SPLIT_AT = 1.25          # only blobs wider than 1.25 digit widths are split
NUMBER_WORK_SIDE = 640   # numbers are wide: keep more pixels than for one digit
CELLS_HOLD = 0.5         # boxes are read one by one only when they hold most of the ink
STRADDLE = 0.35          # a blob with over 35% of its ink in a second box is two touching digits
TALL_IN_CELL = 0.5       # a blob's part standing half a box tall in an otherwise empty box is a digit
CELL_INK = 0.1           # a box holding under 10% of the fullest box's ink holds leftovers, not a digit


@dataclass
class Segment:
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), end-exclusive, in the decoded image
    image: np.ndarray               # (28, 28) normalized, ready for the model


@dataclass
class _Group:
    x0: int
    y0: int
    x1: int
    y1: int
    labels: list[int]

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def absorb(self, other: "_Group") -> None:
        self.x0, self.y0 = min(self.x0, other.x0), min(self.y0, other.y0)
        self.x1, self.y1 = max(self.x1, other.x1), max(self.y1, other.y1)
        self.labels += other.labels


def segment_digits(gray: np.ndarray) -> tuple[list[Segment], str | None]:
    """Grayscale image -> digits left to right, or ([], reason) when there is no ink to read."""
    m = ink_map(gray)
    if m.reason:
        return [], m.reason
    segments = _segments_in_cells(m, m.lines.cells) if m.lines is not None and m.lines.cells else None
    if segments is not None:
        return segments, None if segments else "no ink found"
    groups = _merge_stacked(_blobs(m.labels, m.kept))
    inked = m.labels > 0  # most of the image is paper: sum the blobs' pixels only
    label_ink = np.bincount(m.labels[inked], weights=m.ink[inked], minlength=int(m.labels.max()) + 1)
    groups = _absorb_fragments(groups, label_ink)
    line_height = float(np.median([g.height for g in groups]))
    line_height = max(line_height, max(g.height for g in groups) * 0.8)
    segments = []
    for group in groups:
        # Each digit is cut from its group's window: the rest of the image holds none of its ink.
        window = np.s_[group.y0:group.y1, group.x0:group.x1]
        ink = np.where(np.isin(m.labels[window], group.labels), m.ink[window], np.float32(0))
        for x0, x1 in _split_columns(ink, line_height):
            part = np.zeros_like(ink)
            part[:, x0:x1] = ink[:, x0:x1]
            segments += _segment(part, group.x0, group.y0)
    segments.sort(key=lambda s: (s.box[0] + s.box[2]) / 2)
    return segments, None if segments else "no ink found"


def _segment(part: np.ndarray, left: int, top: int) -> list[Segment]:
    """The digit of ``part``, a window at (left, top) of the image, or none when it holds no ink."""
    box = ink_box(part)
    if box is None:
        return []
    x0, y0, x1, y1 = box
    return [Segment((x0 + left, y0 + top, x1 + left, y1 + top), fit_to_mnist(part, box))]


def _segments_in_cells(m: InkMap, cells: list[tuple[int, int, int, int]]) -> list[Segment] | None:
    """One digit per cell that holds ink, in the cells' reading order.

    A blob belongs to the cell holding most of its ink; a blob with much of its ink in a second cell
    is two digits that touch across the border, and is cut along it. None when most of the ink lies
    outside the cells: then they are not where the number was written.
    """
    outside = len(cells)
    owner = np.full(m.ink.shape, outside, dtype=np.intp)
    for k, (x0, y0, x1, y1) in enumerate(cells):
        owner[y0:y1, x0:x1] = k
    is_kept = np.zeros(int(m.labels.max()) + 1, dtype=bool)
    is_kept[m.kept] = True
    inked = is_kept[m.labels] & (m.ink > 0)
    labels, cell, ink = m.labels[inked], owner[inked], m.ink[inked]
    mass = np.bincount(labels * (outside + 1) + cell, weights=ink,
                       minlength=len(is_kept) * (outside + 1)).reshape(len(is_kept), outside + 1)
    if mass[:, :outside].sum() < CELLS_HOLD * mass.sum():
        return None
    inside = mass[:, :outside]
    home = np.where(inside.max(axis=1) > 0, inside.argmax(axis=1), outside)
    second = np.sort(inside, axis=1)[:, -2] if outside > 1 else np.zeros(len(inside))
    straddles = (second >= STRADDLE * np.maximum(inside.sum(axis=1), 1e-9)) | _fills_empty_cell(m, cells, home, inked)
    digit_of = np.where(straddles[labels] & (cell < outside), cell, home[labels])
    digit_ink = np.bincount(digit_of, weights=ink, minlength=outside + 1)[:outside]
    rows, cols = np.nonzero(inked)
    segments = []
    for k in np.flatnonzero(digit_ink > CELL_INK * digit_ink.max(initial=0)):
        mine = digit_of == k
        ys, xs = rows[mine], cols[mine]
        top, left = int(ys.min()), int(xs.min())
        part = np.zeros((int(ys.max()) - top + 1, int(xs.max()) - left + 1), dtype=m.ink.dtype)
        part[ys - top, xs - left] = ink[mine]
        segments += _segment(part, left, top)
    return segments


def _fills_empty_cell(m: InkMap, cells, home: np.ndarray, inked: np.ndarray) -> np.ndarray:
    """Per blob label: it stands tall in a cell that no blob calls home - a digit joined to its
    neighbour's across their border (a slanted "1" touching the next digit), not a stroke's tail."""
    out = np.zeros(len(home), dtype=bool)
    for k, (x0, y0, x1, y1) in enumerate(cells):
        if np.any(home == k):
            continue
        window = np.where(inked[y0:y1, x0:x1], m.labels[y0:y1, x0:x1], 0)
        for label in np.unique(window[window > 0]):
            rows = np.flatnonzero((window == label).any(axis=1))
            out[label] |= rows[-1] - rows[0] + 1 >= TALL_IN_CELL * (y1 - y0)
    return out


def _blobs(labels: np.ndarray, kept: np.ndarray) -> list[_Group]:
    boxes = boxes_of(labels, int(max(kept, default=0)))
    groups = [_Group(*map(int, boxes[label - 1]), [int(label)]) for label in kept]
    return sorted(groups, key=lambda g: g.x0)


def _overlap(a: _Group, b: _Group) -> float:
    shared = min(a.x1, b.x1) - max(a.x0, b.x0)
    return shared / max(1, min(a.width, b.width))


def _merge_stacked(groups: list[_Group]) -> list[_Group]:
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if _overlap(groups[i], groups[j]) >= MERGE_OVERLAP:
                    groups[i].absorb(groups.pop(j))
                    merged = True
                    break
            if merged:
                break
    return sorted(groups, key=lambda g: g.x0)


def _absorb_fragments(groups: list[_Group], label_ink: np.ndarray) -> list[_Group]:
    """Small pieces (a detached serif, the end of a stroke, the dots of a colon) join the nearest real
    digit: low for the line, or holding little ink for a digit even where they stand tall together."""
    tallest = max(g.height for g in groups)
    ink = {id(g): float(label_ink[g.labels].sum()) for g in groups}
    most = max(ink.values())
    is_digit = {id(g): g.height >= FRAGMENT_HEIGHT * tallest and ink[id(g)] >= FRAGMENT_INK * most for g in groups}
    digits = [g for g in groups if is_digit[id(g)]]
    for piece in (g for g in groups if not is_digit[id(g)]):
        centre = (piece.x0 + piece.x1) / 2
        nearest = min(digits, key=lambda d: max(d.x0 - centre, centre - d.x1, 0))
        nearest.absorb(piece)
    return sorted(digits, key=lambda g: g.x0)


def _split_columns(ink: np.ndarray, line_height: float) -> list[tuple[int, int]]:
    """Column ranges of the digits in one blob's window: cut touching digits at the thinnest column."""
    width = ink.shape[1]
    digit_width = DIGIT_ASPECT * line_height
    count = int(round(width / digit_width)) if width > SPLIT_AT * digit_width else 1
    if count < 2:
        return [(0, width)]
    profile = ink.sum(axis=0)
    step = width / count
    cuts = [0]
    for k in range(1, count):
        centre = int(round(k * step))
        lo, hi = max(1, centre - int(step * 0.3)), min(width - 1, centre + int(step * 0.3) + 1)
        cuts.append(lo + int(np.argmin(profile[lo:hi])))
    cuts.append(width)
    return list(zip(cuts[:-1], cuts[1:]))


class PreparedNumber(NamedTuple):
    """One number image decoded and segmented, or why not: the unit the worker processes hand back.

    ``segments`` is empty whenever ``reason`` or ``error`` says why there is no number."""

    segments: list[Segment]
    reason: str | None = None               # why there is no number (no ink, blank, ...)
    error: str | None = None                # the one-line message for an input that could not be read
    scale: float = 1.0                      # decoded pixels -> the original image's
    size: tuple[int, int] | None = None     # (width, height) of the original image

    def __repr__(self) -> str:
        return compact_repr(self, {**self._asdict(), "scale": self.scale if self.scale != 1.0 else None})


def prepare_number(source, label: str) -> PreparedNumber:
    """Decode and segment one number image; never raises for a bad input."""
    try:
        gray, scale = decode_image_scaled(source, label, max_side=NUMBER_WORK_SIDE)
        segments, reason = segment_digits(gray)
    except Exception as exc:  # one bad input costs one row, as in preprocess.prepare_batch
        return PreparedNumber([], error=read_error(exc, source, label))
    size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
    return PreparedNumber(segments, reason, None, scale, size)


def prepare_number_chunk(chunk: tuple[list, list]) -> list:
    return [prepare_number(source, label) for source, label in zip(*chunk)]

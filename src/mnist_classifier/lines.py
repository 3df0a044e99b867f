"""Printed lines on forms - digit boxes, comb fields, grid paper, ruled lines, underlines - found in an
ink map and removed, keeping the handwriting that crosses them.

The idea. Printed lines are long, thin and straight; handwriting is rarely all three at once.

1. Straighten. A form may be rotated a little, so the dominant slope of long horizontal structure is
   measured (row profiles of column strips, shifted against each other for each slope up to
   MAX_SLOPE: lines make the sharpest profile), and a shear - each column moved by a whole number of
   rows - makes lines of that slope run along pixel rows. Vertical lines are found the same way in the
   transposed image, at the perpendicular slope.
2. Candidates. A 1-D opening along the rows keeps the runs of ink at least MIN_RUN (horizontal) or
   MIN_TICK (vertical) long; where such runs lie deeper than MAX_THICKNESS they are a thick stroke and
   are cut out. Each connected piece gets a band - the rows it covers over most of its length - whose
   height is its thickness; pieces of one line (cut by a stroke lying on it, or by print fading) are
   joined across an inked gap. A candidate is thin for its length or it is nothing.
3. Printed lines. A "1" is a long vertical stroke, the bar of a "7" may span a whole tight crop, the bar
   of a "4" is straight: a candidate alone proves nothing. Candidates meet only when they are of about
   one thickness (one printed form; a pen stroke is usually much thicker), and one is removed only
   when it is
     - a side of a cell: a closed box (two walls next to each other, two lines next to each other
       between them, at the walls' ends or running on past both: a row of boxes, grid paper) or a cell
       of a comb field (neighbouring ticks of at least three alike ones standing on one baseline at
       one pitch: a "1" on the baseline halves its cell, and is no tick), many times larger than its
       lines are thick. A wall ends at lines or at the image border: a stroke
       that crosses a box's border and ends inside is no wall. A cell twice the width of its row's
       others has a wall a digit hides, and is cut in two; or
     - a rule: a horizontal line much thinner than its length and than the handwriting's strokes,
       reaching past the rest of the ink on both sides (an underline, a ruled line) or, longer than
       the ink is tall by half as much again, ending about where it ends (an underline drawn to the
       number's width, its first or last digit overhanging it); or one of several parallel lines
       spanning the image (ruled paper).
   A vertical candidate outside cells is never removed.
4. Removal. A line's band, widened to take its blurred rim, is cleared; a stroke that crossed it is
   restored by bridging each band column from the stroke pixels just outside the band, along the
   direction that finds ink on both sides. Where the print was darker than the pen, the handwriting is
   stretched back to full strength.

    structure = find_lines(ink)            # Structure: line mask, lines, cells (boxes, reading order)
    clean, structure = remove_lines(ink)
    has_line_candidates(stack)             # the cheap precheck: (N,) bool for an (N, H, W) stack

Ink maps are float 0..1 ink on a 0 background, strokes at about 1 (preprocess's contrast-normalized
map, before speck removal). An image none of whose rows holds MIN_RUN pixels of ink (any MNIST digit),
or without a long thin run, cannot hold a line and is turned away by the precheck, vectorized over a
stack, before any of the above is paid for.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .fit import ink_box
from .morphology import label, runs_along_rows, spread_along_rows

INK_LEVEL = 0.12       # line ink: lighter than the strokes (blue or grey print), but above the paper
MIN_RUN = 24           # horizontal lines are at least this long (decoded px); MNIST digits span at most 20
MIN_TICK = 8           # walls and comb ticks may be shorter
MAX_THICKNESS = 8      # printed lines are at most this thick (decoded px), blur included ...
THIN_RATIO = 0.3       # ... and this thin for their length (a short comb tick is stubby); ...
CELL_SIDE_RATIO = 0.2  # ... horizontal ones thinner: they span a cell, five times their thickness
RULE_RATIO = 0.06      # a lone rule is much thinner for its length ...
RULE_STROKE = 0.8      # ... and thinner than the handwriting's strokes
UNDERLINE_DIGITS = 1.5 # an underline ending with the number spans it: longer than 1.5 times its height
SPANNING = 0.8         # ruled paper: several parallel lines, each across most of the image
MAX_SLOPE = math.tan(math.radians(2.5))  # forms are rotated by up to about 2 degrees
STRIP = 32             # column strips for the slope search (a 2 degree line drifts a pixel in one)
BAND_COVER = 0.75      # a band row is covered by its candidate over three quarters of its length (a stroke
                       # lying along part of a line is not the line)
RIM_LEVEL = 0.04       # rows beside a band whose typical ink is above this are its blurred rim ...
RIM_ROWS = 3           # ... up to this many on each side
MIN_CELL = 10          # a cell is at least this wide and tall (decoded px) ...
CELL_PER_LINE = 5      # ... and five times as wide as its lines are thick
ALIKE = 0.4            # lines of one printed form differ in thickness by at most 40% (or 2 px)
TICK_LIKE = 0.35       # comb ticks are within 35% of their median length
MIN_COMB_CELLS = 2     # a comb field has at least three ticks ...
SPLIT_CELL = 0.2       # ... at one pitch: a stroke that leaves no cell within 20% of it is not one of them
RESTRETCH = 0.8        # handwriting left under 80% strength without the lines is stretched back to 1
MAX_BRIDGE = 16        # strokes are bridged across bands at most this high (wider runs are other lines)
PITCH_TOLERANCE = 0.12 # boxes of one row are printed at one pitch: gaps are whole pitches within 12%
SIDE_COVER = 0.75      # a box recovered from the pitch has ink at line strength along 75% of its sides ...
SIDE_LEAST = 0.5       # ... and along half of each side at least (faint print fades in places)


Box = tuple[int, int, int, int]


@dataclass
class Line:
    """One printed line: its band's bounding box (x0, y0, x1, y1) end-exclusive, thickness in px."""

    box: Box
    thickness: int
    vertical: bool


@dataclass
class Structure:
    """The printed lines of an image: their pixels, the lines, and the cells (boxes) they form.

    ``cells`` are (x0, y0, x1, y1) end-exclusive boxes inside the lines, row by row, left to right; a
    comb field's cells are open on the side its ticks point to and reach the image border there.
    """

    mask: np.ndarray                        # bool (H, W): the pixels of the printed lines
    lines: list[Line] = field(default_factory=list)
    cells: list[Box] = field(default_factory=list)


def has_line_candidates(ink: np.ndarray) -> np.ndarray:
    """(N, H, W) ink -> (N,) bool: which images may hold a horizontal line; the others need no more work.

    Every printed line find_lines accepts is horizontal or meets one, and a horizontal line has a row
    with at least MIN_RUN pixels of ink - counted on three rows at a time, so that a line rotated by a
    degree or two, which steps from row to row, still counts. That alone turns away MNIST-sized
    digits at the cost of one sum; images with such rows must also hold a long thin run (see _thin_runs).
    """
    strong = ink > INK_LEVEL
    maybe = _rows_either_side(strong).sum(axis=2, dtype=np.int32).max(axis=1) >= MIN_RUN
    if maybe.any():
        maybe[maybe] = _may_hold_runs(strong[maybe], MIN_RUN)
    return maybe


def _may_hold_runs(strong: np.ndarray, length: int) -> np.ndarray:
    """(N, H, W) -> (N,): which masks hold a thin run ``length`` long along the rows, tilted or not.

    Looked for on three rows at a time at half the resolution (2x2 blocks holding any ink): four times
    fewer pixels, and a superset of what the sheared full-resolution search can find.
    """
    height, width = strong.shape[1] // 2 * 2, strong.shape[2] // 2 * 2
    blocks = strong[:, :height:2, :width:2] | strong[:, 1:height:2, :width:2]
    blocks |= strong[:, :height:2, 1:width:2] | strong[:, 1:height:2, 1:width:2]
    runs = _thin_runs(_rows_either_side(blocks), length // 2 - 1, (MAX_THICKNESS + 1) // 2 + 3)
    return runs_along_rows(runs, length // 2 - 1).any(axis=(1, 2))


def find_lines(ink: np.ndarray) -> Structure:
    """The printed lines of one (H, W) ink map and the cells they form (see the module docstring)."""
    return _search(np.asarray(ink, dtype=np.float32))[0]


def remove_lines(ink: np.ndarray, prechecked: bool = False) -> tuple[np.ndarray, Structure]:
    """(ink without its printed lines, the lines). Strokes that crossed a line are bridged across it.

    ``prechecked``: has_line_candidates already said yes for this image (it is not asked again)."""
    ink = np.asarray(ink, dtype=np.float32)
    structure, kept, (y0, y1, x0, x1) = _search(ink, prechecked)
    if not structure.lines:
        return ink, structure
    part, mask = ink[y0:y1, x0:x1], structure.mask[y0:y1, x0:x1]
    clean = np.where(mask, np.float32(0), part)
    (h, h_bands), (v, v_bands) = kept
    bridged = np.maximum(_bridge(clean, h.shear, h_bands), _bridge(np.ascontiguousarray(clean.T), v.shear, v_bands).T)
    out = ink.copy()
    out[y0:y1, x0:x1] = np.where(mask, bridged, clean)
    recovered, borders = _boxes_by_pitch(ink, structure)
    if recovered:
        out[borders] = 0
        structure = Structure(structure.mask | borders, structure.lines, _reading_order(structure.cells + recovered))
    return out, structure


def _search(ink: np.ndarray, prechecked: bool = False):
    """(structure, kept candidates and bands, (y0, y1, x0, x1) window searched).

    Only the window around the ink is searched (the paper around a form is most of the image), with the
    image border where it is: walls that end there, and comb cells that open onto it.
    """
    strong = ink > INK_LEVEL
    box = ink_box(strong)
    if box is None or not (prechecked or has_line_candidates(ink[None])[0]):
        return Structure(np.zeros(ink.shape, dtype=bool)), [], (0, 0, 0, 0)
    margin = MAX_THICKNESS + RIM_ROWS  # the blurred rims and ends of lines at the ink's edge
    left, top, right, bottom = box
    y0, y1 = max(0, top - margin), min(ink.shape[0], bottom + margin)
    x0, x1 = max(0, left - margin), min(ink.shape[1], right + margin)
    found, kept = _find(ink[y0:y1, x0:x1], strong[y0:y1, x0:x1], (y0, x0), ink.shape)
    mask = np.zeros(ink.shape, dtype=bool)
    mask[y0:y1, x0:x1] = found.mask
    moved = [(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0) for bx0, by0, bx1, by1 in found.cells]
    lines = [Line((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), line.thickness, line.vertical)
             for line in found.lines for bx0, by0, bx1, by1 in [line.box]]
    return Structure(mask, lines, [_clipped(c, ink.shape) for c in moved]), kept, (y0, y1, x0, x1)


def _clipped(box: Box, shape) -> Box:
    x0, y0, x1, y1 = box
    return max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)


def remove_lines_in_stack(ink: np.ndarray, alive: np.ndarray) -> list[Structure | None]:
    """remove_lines for each image of an (N, H, W) stack where ``alive``, in place; None where no line."""
    found: list[Structure | None] = [None] * len(ink)
    for i in np.flatnonzero(alive & has_line_candidates(ink)):
        clean, structure = remove_lines(ink[i], prechecked=True)
        if structure.lines:
            ink[i], found[i] = _restretched(clean), structure
    return found


def _restretched(ink: np.ndarray) -> np.ndarray:
    """Strokes back at full strength once the lines are gone: dark print set the contrast, not the pen.

    The contrast step maps the typical stroke to 1, measured over all the ink; where the lines were
    darker than the handwriting, the handwriting is left fainter than any stroke, and would be taken
    for shading. The same measure (the 90th percentile of the ink) without the lines puts it right.
    """
    visible = ink[ink > INK_LEVEL / 2]
    level = float(np.quantile(visible, 0.9)) if visible.size else 1.0
    return np.minimum(ink / level, 1.0) if level < RESTRETCH else ink


# ---------------------------------------------------------------------------------------------- straightening

class _Shear:
    """Column x of an (H, W) image moved by ``pad - shift[x]`` rows: lines of ``slope`` run along rows.

    The gathers both ways are computed once (and kept for the next image of the same shape and slope:
    slopes come from a fixed grid): each orientation is sheared several times.
    """

    @classmethod
    @functools.lru_cache(maxsize=16)
    def of(cls, slope: float, shape: tuple[int, int]) -> "_Shear":
        return cls(slope, shape)

    def __init__(self, slope: float, shape: tuple[int, int]):
        height, width = shape
        self.slope, self.height, self.width = slope, height, width
        self.shift = np.rint(slope * (np.arange(width) - (width - 1) / 2)).astype(np.intp)
        self.pad = int(np.abs(self.shift).max(initial=0))
        self.rows = height + 2 * self.pad
        columns = np.arange(width, dtype=np.int32)
        source = np.arange(self.rows, dtype=np.int32)[:, None] - self.pad + self.shift.astype(np.int32)
        self._outside = (source < 0) | (source >= height)
        self._gather = (np.clip(source, 0, height - 1) * width + columns).ravel()
        self._scatter = ((np.arange(height, dtype=np.int32)[:, None] + (self.pad - self.shift).astype(np.int32))
                         * width + columns).ravel()

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(H, W) -> (H + 2 pad, W), zero where nothing maps."""
        out = np.ascontiguousarray(image).ravel().take(self._gather).reshape(self.rows, self.width)
        out[self._outside] = 0
        return out

    def undo(self, sheared: np.ndarray) -> np.ndarray:
        return sheared.ravel().take(self._scatter).reshape(self.height, self.width)

    def row_of(self, sheared_row, x) -> np.ndarray:
        """Image row of a sheared row at column x (fractional in, fractional out)."""
        return np.asarray(sheared_row) - self.pad + self.slope * (np.asarray(x) - (self.width - 1) / 2)


def _dominant_slope(mask: np.ndarray) -> float:
    """Slope (rows per column) within +-MAX_SLOPE that makes the row profile of ``mask`` sharpest.

    Searched coarse to fine: steps that move the line's ends by two rows, then by one around the best.
    """
    height, width = mask.shape
    strips = max(1, width // STRIP)
    step = width / strips
    profile = np.add.reduceat(mask, (np.arange(strips) * step).astype(np.intp), axis=1, dtype=np.int32)
    centres = (np.arange(strips) + 0.5) * step - width / 2
    coarse = np.linspace(-MAX_SLOPE, MAX_SLOPE, int(math.ceil(MAX_SLOPE * width)) + 1)
    best = _sharpest(profile, centres, coarse)
    fine = best + np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * (coarse[1] - coarse[0] if len(coarse) > 1 else 0.0)
    return _sharpest(profile, centres, np.clip(fine, -MAX_SLOPE, MAX_SLOPE))


def _sharpest(profile: np.ndarray, centres: np.ndarray, slopes: np.ndarray) -> float:
    height, strips = profile.shape
    shifts = np.rint(slopes[:, None] * centres).astype(np.intp)         # (slopes, strips)
    pad = int(np.abs(shifts).max(initial=0))
    columns = np.pad(profile, ((pad, pad), (0, 0))).T.astype(np.int64)  # (strips, rows + 2 pad)
    # Each strip's column at every shift is a window of it: whole rows gathered, strip by strip.
    windows = np.lib.stride_tricks.sliding_window_view(columns, height, axis=1)
    straightened = np.zeros((len(slopes), height), dtype=np.int64)     # (slopes, rows)
    for k in range(strips):
        straightened += windows[k, pad + shifts[:, k]]
    sharpness = (straightened.astype(np.float64) ** 2).sum(axis=1) - 1e-6 * np.abs(slopes)  # ties: level
    return float(slopes[np.argmax(sharpness)])


# ---------------------------------------------------------------------------------------------- candidates

@dataclass
class _Runs:
    """Candidate lines of one orientation, as bands of the sheared frame where they run along rows.

    ``r0``/``r1`` band rows (sheared), ``c0``/``c1`` columns, end-exclusive; ``ink`` the sheared ink.
    """

    shear: _Shear
    ink: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    _widened: dict = field(default_factory=dict)  # candidate -> its band with the rim (measured once)

    @classmethod
    def none(cls, shape: tuple[int, int]) -> "_Runs":
        nothing = np.zeros(0, dtype=np.intp)
        return cls(_Shear.of(0.0, shape), None, nothing, nothing, nothing, nothing)

    def __len__(self) -> int:
        return len(self.r0)

    @property
    def thickness(self) -> np.ndarray:
        return self.r1 - self.r0

    @property
    def length(self) -> np.ndarray:
        return self.c1 - self.c0

    def across(self, along) -> np.ndarray:
        """Each candidate's centre line, in image coordinates across it, at ``along`` (broadcast)."""
        return self.shear.row_of((self.r0 + self.r1 - 1) / 2, along)

    def bands(self, keep: np.ndarray) -> np.ndarray:
        """(top, bottom, left, right) of the kept candidates' bands, widened by their blurred rims."""
        out = np.zeros((int(keep.sum()), 4), dtype=np.intp)
        for row, k in enumerate(np.flatnonzero(keep)):
            if k not in self._widened:
                top, bottom = _rim(self.ink, self.r0[k], self.r1[k], self.c0[k], self.c1[k])
                ends = (bottom - top) // 2  # a line's ends are blurred as far as its sides
                self._widened[k] = top, bottom, max(0, self.c0[k] - ends), min(self.shear.width, self.c1[k] + ends)
            out[row] = self._widened[k]
        return out

    def mask(self, keep: np.ndarray) -> np.ndarray:
        """The kept candidates' widened bands, in image coordinates (rows = this frame's rows)."""
        sheared = np.zeros((self.shear.rows, self.shear.width), dtype=bool)
        for top, bottom, left, right in self.bands(keep):
            sheared[top:bottom, left:right] = True
        return self.shear.undo(sheared)


def _candidates(strong: np.ndarray, ink: np.ndarray, min_length: int, thin_ratio: float,
                slope: float | None = None) -> _Runs:
    """Long thin straight runs of the ``strong`` ink mask along its rows, tilted by ``slope`` (rows per
    column; measured when None)."""
    shear = _Shear.of(_dominant_slope(strong) if slope is None else slope, strong.shape)
    straight = shear.apply(strong)
    # The whole-row shift of a thin tilted line leaves it stepping between two rows; one row of
    # overlap mends the steps so that the run is continuous.
    mended = straight.copy()
    mended[1:] |= straight[:-1]
    runs = _thin_runs(mended, min_length, MAX_THICKNESS + 1)
    sheared_ink = shear.apply(ink)
    r0, r1, c0, c1 = _bands(runs)
    thin_enough = r1 - r0 <= MAX_THICKNESS + 1  # thicker pieces can be no part of a line
    r0, r1, c0, c1 = _join_collinear(r0[thin_enough], r1[thin_enough], c0[thin_enough], c1[thin_enough],
                                     sheared_ink, min_length)
    thickness, length = r1 - r0, c1 - c0
    thin = (length >= min_length) & (thickness <= MAX_THICKNESS + 1) & (thickness <= thin_ratio * length)
    return _Runs(shear, sheared_ink, r0[thin], r1[thin], c0[thin], c1[thin])


def _thin_runs(mask: np.ndarray, length: int, thickness: int) -> np.ndarray:
    """Pixels on runs of at least ``length`` along the rows, where those runs lie at most ``thickness`` deep.

    Where a thick stroke lies against a line, its long runs widen the line: those columns are cut out
    (the pieces are joined again later), so that a line is never measured together with a stroke.
    """
    runs = runs_along_rows(_gaps_closed(mask), length)
    # A stroke with holes leaves long runs on every other row: one thick thing, not thin lines.
    runs[..., 1:-1, :] |= runs[..., :-2, :] & runs[..., 2:, :]
    runs &= ~runs_along_rows(np.swapaxes(runs, -1, -2), thickness + 1).swapaxes(-1, -2)
    return runs


def _rows_either_side(mask: np.ndarray) -> np.ndarray:
    """Each pixel or the one above or below it is set (the last two axes are rows and columns)."""
    out = mask.copy()
    out[..., 1:, :] |= mask[..., :-1, :]
    out[..., :-1, :] |= mask[..., 1:, :]
    return out


def _gaps_closed(mask: np.ndarray) -> np.ndarray:
    """Gaps of one or two pixels along the rows filled: light print dips below INK_LEVEL here and there."""
    left1, left2, right1, right2 = (np.zeros_like(mask) for _ in range(4))
    left1[..., 1:], left2[..., 2:] = mask[..., :-1], mask[..., :-2]
    right1[..., :-1], right2[..., :-2] = mask[..., 1:], mask[..., 2:]
    return mask | (left1 & (right1 | right2)) | (left2 & right1)


def _bands(runs: np.ndarray):
    """(r0, r1, c0, c1) of each connected piece: its columns, and the rows it covers over BAND_COVER of them."""
    labels, count, boxes = label(runs)
    if count == 0:
        return (np.zeros(0, dtype=np.intp),) * 4
    c0, c1 = boxes[:, 0].astype(np.intp), boxes[:, 2].astype(np.intp)
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs] - 1
    rows = labels.shape[0]
    per_row = np.bincount(ids * rows + ys, minlength=count * rows).reshape(count, rows)
    covered = per_row >= BAND_COVER * (c1 - c0)[:, None]
    any_row = covered.any(axis=1)
    r0 = np.where(any_row, covered.argmax(axis=1), 0)
    r1 = np.where(any_row, rows - covered[:, ::-1].argmax(axis=1), 0)
    # A band with uncovered rows inside is two things side by side, not one line.
    solid = any_row & (covered.sum(axis=1) == r1 - r0)
    return r0[solid], r1[solid], c0[solid], c1[solid]


def _join_collinear(r0, r1, c0, c1, ink: np.ndarray, min_length: int):
    """Join the pieces of one line: rows alike, and the gap between them inked all along.

    A thick stroke lying on a line cuts it into pieces (see _candidates) with the stroke's own piece
    between them, and light print fades below INK_LEVEL here and there; the line's pieces are joined
    past both, keeping their band. Separate boxes in a row have collinear borders too, but with blank
    paper between them. A line holds at least one piece ``min_length`` long: the cut-off rims of a
    thick digit are short, and joined across it they would make a line through it.
    """
    joined: list[list[int]] = []   # r0, r1, c0, c1, and whether a piece was long enough
    for k in np.argsort(c0, kind="stable"):
        piece = [int(r0[k]), int(r1[k]), int(c0[k]), int(c1[k]), int(c1[k] - c0[k] >= min_length)]
        for line in joined:
            if piece[2] >= line[3] - 1 and _alike(line, piece) and _inked(ink, line, piece):
                keep = line if line[3] - line[2] >= piece[3] - piece[2] else piece
                line[:] = keep[0], keep[1], line[2], piece[3], line[4] | piece[4]
                break
        else:
            joined.append(piece)
    out = np.array([line[:4] for line in joined if line[4]], dtype=np.intp).reshape(-1, 4)
    return out[:, 0], out[:, 1], out[:, 2], out[:, 3]


def _alike(a: list[int], b: list[int]) -> bool:
    """Bands of one line: overlapping by most of the thinner, of about one thickness."""
    shared = min(a[1], b[1]) - max(a[0], b[0])
    thin, thick = sorted((a[1] - a[0], b[1] - b[0]))
    return shared >= 0.5 * thin and thick <= 1.5 * thin + 1


def _inked(ink: np.ndarray, a: list[int], b: list[int]) -> bool:
    gap = ink[max(a[0], b[0]):min(a[1], b[1]), a[3]:b[2]]
    return gap.shape[1] <= 2 or (gap.max(axis=0) > 2 * RIM_LEVEL).mean() >= 0.9


def _rim(straight: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int]:
    """A band's rows widened by the blurred rim beside it: rows whose median ink along the line is visible."""
    lo, hi = max(0, r0 - RIM_ROWS), min(straight.shape[0], r1 + RIM_ROWS)
    visible = np.median(straight[lo:hi, c0:c1], axis=1) > RIM_LEVEL
    above, below = visible[:r0 - lo][::-1], visible[r1 - lo:]
    top = r0 - (int(above.argmin()) if not above.all() else len(above))
    bottom = r1 + (int(below.argmin()) if not below.all() else len(below))
    return max(0, top - 1), min(straight.shape[0], bottom + 1)  # one more row: the anti-aliased edge


# ---------------------------------------------------------------------------------------------- printed lines

@dataclass
class _Meetings:
    """Where each horizontal candidate i meets each vertical one j of about its thickness: (nh, nv) arrays.

    A pen stroke is no part of a printed form, and is usually much thicker than its lines: candidates
    of unlike thickness never meet.
    """

    x: np.ndarray
    y: np.ndarray
    tolerance: np.ndarray  # how near counts as meeting (px)
    meet: np.ndarray       # the two touch or cross
    v_top: np.ndarray      # j ends (its top) at i
    v_bottom: np.ndarray   # j ends (its bottom) at i


def _meetings(h: _Runs, v: _Runs) -> _Meetings:
    """Crossing points of the candidates' centre lines, and whether each reaches the other."""
    width, height = h.shear.width, v.shear.width
    # h: y = ah + sh (x - xc);  v: x = av + sv (y - yc);  solved for the crossing.
    xc, yc = (width - 1) / 2, (height - 1) / 2
    ah, sh = h.across(xc)[:, None], h.shear.slope
    av, sv = v.across(yc)[None, :], v.shear.slope
    y = (ah + sh * (av - xc - sv * yc)) / (1 - sh * sv)
    x = av + sv * (y - yc)
    th, tv = h.thickness[:, None], v.thickness[None, :]
    alike = np.abs(th - tv) <= np.maximum(2, ALIKE * np.maximum(th, tv))
    tolerance = 3 + np.maximum(th, tv)
    reach_h = alike & (x >= h.c0[:, None] - tolerance) & (x <= h.c1[:, None] + tolerance)
    reach_v = (y >= v.c0[None, :] - tolerance) & (y <= v.c1[None, :] + tolerance)
    v_top = reach_h & (np.abs(y - v.c0[None, :]) <= tolerance)
    v_bottom = reach_h & (np.abs(y - v.c1[None, :]) <= tolerance)
    return _Meetings(x, y, tolerance, reach_h & reach_v, v_top, v_bottom)


def _walls(h: _Runs, v: _Runs, m: _Meetings, top: int, height: int, width: int) -> np.ndarray:
    """Vertical candidates that end at horizontal ones or at the image border at both ends.

    ``top``: the window's first row in the image of ``height`` x ``width``.
    """
    # A rotated page leaves blank wedges at its edges: lines there stop short of the border.
    margin = 3 + v.thickness + abs(h.shear.slope) * width / 2
    top_done = m.v_top.any(axis=0) | (v.c0 + top <= margin)
    bottom_done = m.v_bottom.any(axis=0) | (v.c1 + top >= height - margin)
    return top_done & bottom_done & m.meet.any(axis=0)


def _roomy(size: float, thickness: np.ndarray) -> bool:
    """A printed cell is many times wider than its lines; the hole of a squarish "0" is not."""
    return size >= max(MIN_CELL, CELL_PER_LINE * float(thickness.max()))


def _closed_cells(h: _Runs, v: _Runs, m: _Meetings, walls: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(left wall, right wall, top line, bottom line) of each closed box: walls next to each other
    along a line, and lines next to each other between the two walls.

    A side of a box is at the ends of its walls (a box's border) or runs on past both (grid paper):
    the bar of a "4" or the top of a "0" that touches both walls of its box is neither.
    """
    found = set()
    for i in range(m.meet.shape[0]):
        along = np.flatnonzero(m.meet[i] & walls)
        along = along[np.argsort(m.x[i, along])]
        for j, k in zip(along[:-1], along[1:]):
            if not _roomy(m.x[i, k] - m.x[i, j], v.thickness[[j, k]]):
                continue
            at_ends = (m.v_top[:, j] | m.v_bottom[:, j]) & (m.v_top[:, k] | m.v_bottom[:, k])
            past = (h.c0 < m.x[:, j] - m.tolerance[:, j]) & (h.c1 > m.x[:, k] + m.tolerance[:, k])
            sides = np.flatnonzero(m.meet[:, j] & m.meet[:, k] & (at_ends | past))
            sides = sides[np.argsort(m.y[sides, j])]
            found.update((int(j), int(k), int(p), int(q)) for p, q in zip(sides[:-1], sides[1:])
                         if _roomy(m.y[q, j] - m.y[p, j], h.thickness[[p, q]]))
    return sorted(found)


def _comb_cells(v: _Runs, m: _Meetings, taken: np.ndarray, baselines: np.ndarray) -> list[tuple[int, int, int, bool]]:
    """(left tick, right tick, baseline, ticks point up) of each cell of each comb field.

    Ticks are the vertical candidates (not already walls of boxes) with one end on the baseline, of
    about one length: a "1" standing on the line is longer than the ticks. ``baselines``: which
    horizontal candidates may be one.
    """
    found = []
    for i in np.flatnonzero(baselines):
        for ends, up in ((m.v_bottom[i], True), (m.v_top[i], False)):
            ticks = np.flatnonzero(ends & ~taken)
            if len(ticks) < MIN_COMB_CELLS + 1:
                continue
            lengths = v.length[ticks]
            ticks = ticks[np.abs(lengths - np.median(lengths)) <= TICK_LIKE * np.median(lengths)]
            ticks = ticks[np.argsort(m.x[i, ticks])]
            ticks = ticks[_at_the_pitch(m.x[i, ticks])]
            cells = [(int(j), int(k), i, up) for j, k in zip(ticks[:-1], ticks[1:])
                     if _roomy(m.x[i, k] - m.x[i, j], v.thickness[[j, k]])]
            if len(cells) >= MIN_COMB_CELLS:
                found += cells
    return found


def _at_the_pitch(xs: np.ndarray) -> np.ndarray:
    """Which of a comb's ticks (at columns ``xs``, left to right) stand at its pitch.

    The ticks of a comb are printed one cell apart. A stroke standing on the baseline inside a cell, the
    stem of a "1" or a "7" as long as the ticks, looks like one more tick, but it cuts its cell into two
    narrow ones that together are one cell wide: it is not a tick. (A tick a digit hides leaves a cell
    twice as wide instead; _complete_rows cuts that one in two.)
    """
    keep = np.ones(len(xs), dtype=bool)
    gaps = np.diff(xs.astype(np.float64))
    if len(gaps) < 3:
        return keep
    pitch = float(np.median(gaps))
    for t in range(1, len(xs) - 1):
        left, right = gaps[t - 1], gaps[t]
        if max(left, right) < (1 - SPLIT_CELL) * pitch and abs(left + right - pitch) <= PITCH_TOLERANCE * pitch:
            keep[t] = False
    return keep


def _inner_box(left: float, right: float, top: float, bottom: float) -> Box:
    return int(math.ceil(left)), int(math.ceil(top)), int(math.floor(right)) + 1, int(math.floor(bottom)) + 1


def _cells(h: _Runs, v: _Runs, origin: tuple[int, int], full: tuple[int, int]):
    """(which horizontal, which vertical candidates are sides of cells; the cells' boxes, unordered,
    in window coordinates).

    The window is at ``origin`` (y, x) of an image of shape ``full``: comb cells open onto its border.
    """
    keep_h, keep_v = np.zeros(len(h), dtype=bool), np.zeros(len(v), dtype=bool)
    if not len(h) or not len(v):
        return keep_h, keep_v, []
    m = _meetings(h, v)
    walls = _walls(h, v, m, origin[0], *full)
    boxes, spans = [], []  # each cell, and how far the lines along it reach (x0, x1)
    for j, k, p, q in _closed_cells(h, v, m, walls):
        keep_h[[p, q]], keep_v[[j, k]] = True, True
        # Inside the lines: corners averaged, half a line's thickness in from each centre line.
        left, right = (m.x[p, j] + m.x[q, j] + v.thickness[j]) / 2, (m.x[p, k] + m.x[q, k] - v.thickness[k]) / 2
        top, bottom = (m.y[p, j] + m.y[p, k] + h.thickness[p]) / 2, (m.y[q, j] + m.y[q, k] - h.thickness[q]) / 2
        boxes.append(_inner_box(left, right, top, bottom))
        spans.append((max(h.c0[p], h.c0[q]), min(h.c1[p], h.c1[q])))
    for j, k, i, up in _comb_cells(v, m, keep_v, _off_the_edge(h, origin[0], full[0])):
        keep_h[i], keep_v[[j, k]] = True, True
        line = (m.y[i, j] + m.y[i, k]) / 2
        top, bottom = ((-origin[0], line - h.thickness[i] / 2) if up
                       else (line + h.thickness[i] / 2, full[0] - origin[0]))
        boxes.append(_inner_box(m.x[i, j] + v.thickness[j] / 2, m.x[i, k] - v.thickness[k] / 2, top, bottom))
        spans.append((h.c0[i], h.c1[i]))
    return keep_h, keep_v, _complete_rows(boxes, spans)


def _complete_rows(boxes: list[Box], spans: list[tuple[int, int]]) -> list[Box]:
    """Cells whose wall a digit hides, recovered from the row's regularity.

    The cells of a row of boxes or of a comb are of one width. A digit written over a wall or tick
    (drawn on top of it, thicker than it) hides it: its two cells are found as one, twice as wide,
    which is cut in two; at the end of a row the line runs on past the last wall found, by a cell.
    """
    out = []
    for row in _rows(list(zip(boxes, spans))):
        if len(row) < 2:
            out += [box for box, _ in row]
            continue
        widths = np.array([box[2] - box[0] for box, _ in row], dtype=np.float64)
        # Each cell is a whole number of true cells wide (most often one): half the row may be doubles.
        width = float(np.median(widths / np.maximum(1, np.round(widths / widths.min()))))
        for (x0, y0, x1, y1), _ in row:
            count = int(round((x1 - x0) / width))
            count = count if count >= 2 and abs((x1 - x0) / width - count) <= 0.3 else 1
            edges = np.linspace(x0, x1, count + 1).round().astype(int)
            out += [(int(a), y0, int(b), y1) for a, b in zip(edges[:-1], edges[1:])]
        (first, first_span), (last, last_span) = row[0], row[-1]
        for k in range(1, int((first[0] - first_span[0]) / width + 0.25) + 1):
            out.append((int(first[0] - k * width), first[1], int(first[0] - (k - 1) * width), first[3]))
        for k in range(1, int((last_span[1] - last[2]) / width + 0.25) + 1):
            out.append((int(last[2] + (k - 1) * width), last[1], int(last[2] + k * width), last[3]))
    return out


def _rows(cells: list) -> list[list]:
    """Items whose first element is a cell box, grouped in rows (top to bottom), each left to right."""
    rows: list[list] = []
    for item in sorted(cells, key=lambda c: (c[0][1] + c[0][3]) / 2):
        centre = (item[0][1] + item[0][3]) / 2
        if rows and centre < min(c[0][3] for c in rows[-1]):
            rows[-1].append(item)
        else:
            rows.append([item])
    return [sorted(row, key=lambda c: c[0][0]) for row in rows]


def _off_the_edge(h: _Runs, top: int, height: int) -> np.ndarray:
    """Horizontal candidates away from the image's top and bottom edge.

    A photo's edge is often shaded or vignetted, and its noise there lines up along the edge; a rule or
    a comb's baseline lies on the paper, not on its edge. (A box's sides may: a box cropped tightly.)
    """
    centre = h.across(h.shear.width / 2) + top
    return (centre >= MIN_TICK) & (centre <= height - 1 - MIN_TICK)


def _rule_like(h: _Runs, in_cells: np.ndarray) -> np.ndarray:
    return ~in_cells & (h.thickness <= RULE_RATIO * h.length)


def _rules(h: _Runs, rule_like: np.ndarray, other_ink: np.ndarray, top: int, full: tuple[int, int]) -> np.ndarray:
    """Which rule-like horizontal candidates are underlines or ruled lines (see the module docstring).

    ``other_ink``: the ink that is neither a cell's side nor rule-like - the handwriting, mostly; the
    window searched starts at row ``top`` of an image of shape ``full``.
    """
    height, width = full
    spanning = rule_like & (h.length >= SPANNING * width)
    inside = rule_like & _off_the_edge(h, top, height)
    # Ruled paper: two lines at least on the paper, far apart; those at its edge are then rules too.
    if (spanning & inside).sum() >= 2 and np.ptp(h.r0[spanning & inside]) >= MIN_CELL:
        return spanning
    columns = np.flatnonzero(other_ink.sum(axis=0) >= 2)  # a speck's single pixels are no ink to reach past
    if not columns.size:
        return np.zeros(len(h), dtype=bool)
    left, right = columns[0], columns[-1] + 1
    rows = np.flatnonzero(other_ink.any(axis=1))  # never empty where the columns are not
    stroke = _stroke_width(other_ink)
    # The band's rows count one row more than the ink (the mended steps of a tilted line).
    thinner = h.thickness - 1 <= RULE_STROKE * stroke
    reach = max(3.0, 0.01 * width)
    past = (h.c0 <= left - reach) & (h.c1 >= right + reach)
    # An underline drawn to the width of the number, which its first or last digit may overhang: it
    # still ends within a reach of the ink's ends, and no stroke of one digit is that long.
    along = ((h.c0 <= left + reach) & (h.c1 >= right - reach)
             & (h.length >= UNDERLINE_DIGITS * (rows[-1] + 1 - rows[0])))
    rules = inside & thinner & (past | along)
    return rules | spanning if (rules & spanning).any() else rules


def _stroke_width(ink: np.ndarray) -> float:
    """Typical stroke width of a binary ink mask: twice its area over its outline's length."""
    inner = ink.copy()
    inner[1:] &= ink[:-1]
    inner[:-1] &= ink[1:]
    inner[:, 1:] &= ink[:, :-1]
    inner[:, :-1] &= ink[:, 1:]
    outline = int(ink.sum()) - int(inner.sum())
    return 2.0 * float(ink.sum()) / max(outline, 1)


def _find(ink: np.ndarray, strong: np.ndarray, origin: tuple[int, int], full: tuple[int, int]):
    """find_lines in a window of the image at ``origin`` (y, x) of an image of shape ``full``.

    Returns the structure in window coordinates, and for each orientation its candidates and the
    kept ones' bands (for bridging).
    """
    nothing = Structure(np.zeros(ink.shape, dtype=bool)), []
    h = _candidates(strong, ink, MIN_RUN, CELL_SIDE_RATIO)  # the precheck found a long thin run
    if not len(h):
        return nothing
    strong_t = np.ascontiguousarray(strong.T)
    # A rotated page turns its vertical lines as much as its horizontal ones. Without even a thin
    # vertical run (three columns together), the slope and shear need not be paid for.
    v = (_candidates(strong_t, np.ascontiguousarray(ink.T), MIN_TICK, THIN_RATIO, -h.shear.slope)
         if _may_hold_runs(strong_t[None], MIN_TICK)[0] else _Runs.none(strong_t.shape))
    keep_h, keep_v, cells = _cells(h, v, origin, full)
    walls = v.mask(keep_v).T
    rule_like = _rule_like(h, keep_h)
    if rule_like.any():
        keep_h |= _rules(h, rule_like, strong & ~walls & ~h.mask(keep_h | rule_like), origin[0], full)
    if not keep_h.any():
        return nothing
    mask = h.mask(keep_h) | walls
    lines = _describe(h, keep_h, False) + _describe(v, keep_v, True)
    return Structure(mask, lines, _reading_order(cells)), [(h, h.bands(keep_h)), (v, v.bands(keep_v))]


def _describe(runs: _Runs, keep: np.ndarray, vertical: bool) -> list[Line]:
    """The kept candidates as Lines: their bands' bounding boxes in (window) image coordinates."""
    out = []
    for k in np.flatnonzero(keep):
        ends = np.array([runs.c0[k], runs.c1[k] - 1], dtype=np.float64)
        top = runs.shear.row_of(np.array(runs.r0[k], dtype=np.float64), ends)
        bottom = runs.shear.row_of(np.array(runs.r1[k], dtype=np.float64), ends)
        a0, a1 = int(runs.c0[k]), int(runs.c1[k])
        b0, b1 = int(math.floor(min(top.min(), bottom.min()))), int(math.ceil(max(top.max(), bottom.max())))
        box = (b0, a0, b1, a1) if vertical else (a0, b0, a1, b1)
        out.append(Line(box, int(runs.thickness[k]), vertical))
    return out


def _boxes_by_pitch(ink: np.ndarray, structure: Structure) -> tuple[list[Box], np.ndarray]:
    """Boxes of a row that the line search missed, recovered from the row's pitch: (their cells, their
    borders' pixels).

    A digit that touches or crosses a box's border makes that border no thin line, and faint print
    fades below the ink level in places: the box is not found, and its digit would be lost with the
    ink outside the cells. The boxes of one row are printed alike, at one pitch: at each place a
    whole number of pitches from the row's boxes, within the image and clear of the cells found, a
    box of the row's size whose four sides are inked at the strength of the row's lines along most of
    their length is one of them.
    """
    borders = np.zeros(ink.shape, dtype=bool)
    if len(structure.cells) < 2 or not structure.mask.any():
        return [], borders
    thickness = int(np.median([line.thickness for line in structure.lines]))
    level = max(2 * RIM_LEVEL, 0.5 * float(np.percentile(ink[structure.mask], 90)))
    found: list[Box] = []
    for row in _rows([(c,) for c in structure.cells]):
        cells = [cell for (cell,) in row]
        for box in _pitch_places(cells, ink.shape):
            ring = _inked_ring(ink, box, thickness, level, _row_slope(cells))
            if ring is not None and not any(_overlaps(box, c) for c in structure.cells + found):
                found.append(box)
                borders |= ring
    return found, borders


def _pitch_places(cells: list[Box], shape) -> list[Box]:
    """Boxes of the row's size a whole number of pitches from its cells: in its gaps and past its ends."""
    widths = np.array([c[2] - c[0] for c in cells], dtype=np.float64)
    if len(cells) < 2 or np.ptp(widths) > 2 * PITCH_TOLERANCE * widths.mean():
        return []
    steps = np.diff([c[0] for c in cells]).astype(np.float64)
    pitch = float(steps.min())
    if pitch < widths.mean() or np.any(np.abs(steps / pitch - np.round(steps / pitch)) > PITCH_TOLERANCE):
        return []
    width, height = int(round(widths.mean())), int(round(np.mean([c[3] - c[1] for c in cells])))
    centres = np.array([[(c[0] + c[2]) / 2, (c[1] + c[3]) / 2] for c in cells])
    slope = _row_slope(cells)
    starts = set()
    for (a, _), step in zip(centres, steps):
        count = int(round(step / pitch))
        starts.update(a + k * step / count for k in range(1, count))
    before = np.arange(centres[0, 0] - pitch, width / 2 - 1, -pitch)
    after = np.arange(centres[-1, 0] + pitch, shape[1] - width / 2 + 1, pitch)
    starts.update(before.tolist() + after.tolist())
    places = []
    for x in sorted(starts):
        y = float(np.mean(centres[:, 1] + slope * (x - centres[:, 0])))
        x0, y0 = int(round(x - width / 2)), int(round(y - height / 2))
        places.append((x0, y0, x0 + width, y0 + height))
    return places


def _row_slope(cells: list[Box]) -> float:
    """Rows per column of a row of cells (a rotated form)."""
    xs = np.array([(c[0] + c[2]) / 2 for c in cells])
    ys = np.array([(c[1] + c[3]) / 2 for c in cells])
    return float(np.polyfit(xs, ys, 1)[0]) if np.ptp(xs) > 0 else 0.0


def _inked_ring(ink: np.ndarray, box: Box, thickness: int, level: float, slope: float) -> np.ndarray | None:
    """The pixels of the border around the inner ``box`` when its four sides are inked, else None."""
    x0, y0, x1, y1 = box
    height, width = ink.shape
    depth = thickness + 2  # the line, and its blurred rim
    if x0 - depth < 0 or y0 - depth < 0 or x1 + depth > width or y1 + depth > height:
        return None
    ring = np.zeros(ink.shape, dtype=bool)
    xs, ys = np.arange(x0, x1), np.arange(y0, y1)
    tilt_x = np.rint(slope * (xs - (x0 + x1) / 2)).astype(np.intp)   # rows a horizontal side drifts
    tilt_y = np.rint(-slope * (ys - (y0 + y1) / 2)).astype(np.intp)  # columns a vertical side drifts
    offsets = np.arange(-depth, 1)
    cover = []
    for edge, outward in ((y0, -1), (y1 - 1, 1)):
        rows = np.clip(edge + outward * -offsets[:, None] + tilt_x[None, :], 0, height - 1)
        cover.append((ink[rows, xs[None, :]].max(axis=0) >= level).mean())
        ring[rows, np.broadcast_to(xs, rows.shape)] = True
    for edge, outward in ((x0, -1), (x1 - 1, 1)):
        cols = np.clip(edge + outward * -offsets[:, None] + tilt_y[None, :], 0, width - 1)
        cover.append((ink[ys[None, :], cols].max(axis=0) >= level).mean())
        ring[np.broadcast_to(ys, cols.shape), cols] = True
    return ring if np.mean(cover) >= SIDE_COVER and min(cover) >= SIDE_LEAST else None


def _overlaps(a: Box, b: Box) -> bool:
    """The two boxes share over a third of the smaller one's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w > 0 and h > 0 and w * h > smaller / 3


def _reading_order(cells: list[Box]) -> list[Box]:
    """Cells row by row (top to bottom), each row left to right; duplicates dropped."""
    return [cell for row in _rows([(c,) for c in set(cells)]) for (cell,) in row]


# ---------------------------------------------------------------------------------------------- bridging

def _bridge(clean: np.ndarray, shear: _Shear, bands: np.ndarray) -> np.ndarray:
    """Ink for the cleared bands of one orientation: the strokes that crossed them, bridged.

    In the frame where the lines run along rows, a stroke that crossed a band left ink on the row just
    above it and the row just below. Each band pixel takes the weaker of the two ends of the best
    bridge through it - straight across, or slanted by up to twice the band's height, as a stroke
    crossing at an angle is. Where another line crosses, both ends are cleared, and nothing is bridged.
    """
    ink = shear.apply(clean)
    rows, width = ink.shape
    inside = (bands[:, 0] > 0) & (bands[:, 1] < rows) & (bands[:, 1] - bands[:, 0] <= MAX_BRIDGE)
    bands = bands[inside]
    out = np.zeros_like(ink)
    if not len(bands):
        return shear.undo(out)
    widest = int(2 * (bands[:, 1] - bands[:, 0] + 1).max())
    padded = np.zeros((rows, width + widest), dtype=bool)
    padded[:, :width] = ink > INK_LEVEL
    near = spread_along_rows(padded, 2 * widest + 1)[:, widest:]  # ink within ``widest`` columns either side
    ys, xs, top, bottom = _band_pixels(bands, near)
    if len(ys):
        fraction, reach = (ys - top) / (bottom - top), 2 * (bottom - top)
        best = np.zeros(len(ys), dtype=np.float32)
        for slant in range(-int(reach.max()), int(reach.max()) + 1):
            x_top = xs + np.rint(slant * fraction).astype(np.intp)
            x_bottom = xs - np.rint(slant * (1 - fraction)).astype(np.intp)
            usable = (abs(slant) <= reach) & (x_top >= 0) & (x_top < width) & (x_bottom >= 0) & (x_bottom < width)
            joined = np.minimum(ink[top, x_top % width], ink[bottom, x_bottom % width])
            np.maximum(best, np.where(usable, joined, np.float32(0)), out=best)
        out[ys, xs] = best
    return shear.undo(out)


def _band_pixels(bands: np.ndarray, near: np.ndarray):
    """(row, column, row above the band, row below) of each band pixel in a column with ink near both ends."""
    pieces = []
    for top, bottom, left, right in bands:
        columns = np.arange(left, right)
        columns = columns[near[top - 1, left:right] & near[bottom, left:right]]
        ys = np.repeat(np.arange(top, bottom), len(columns))
        xs = np.tile(columns, bottom - top)
        pieces.append((ys, xs, np.full(len(ys), top - 1), np.full(len(ys), bottom)))
    return [np.concatenate(p) for p in zip(*pieces)]

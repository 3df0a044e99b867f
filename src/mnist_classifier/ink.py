"""A grayscale image -> its ink: light strokes on a 0 background, whatever the paper, pen, light or polarity.

    ink_map(gray)    -> InkMap: ink 0..1 at the decoded resolution, printed lines and specks removed, or
                        the reason there is no digit (blank, a single colour, noise, scattered dots)
    ink_maps(grays)  -> the same for many images: those of one shape take every step together

Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .decode import reduce_by_blocks
from .lines import Structure, remove_lines_in_stack
from .morphology import box_blur, grey_opening, label, max_of_neighbours

MIN_CONTRAST = 0.08  # ink must differ from the paper by 8% of its brightness, else the page is blank
MIN_COHERENCE = 0.3  # neighbouring pixels of real strokes are correlated; noise is not
STROKE_PEAK = 0.6    # a blob whose strongest pixel is under 60% of the typical stroke is shading, not ink
LABEL_LEVEL = 0.25   # blobs are cut at a quarter of stroke strength; their fainter rims join afterwards
SPECK_FRACTION = 0.05  # ink blobs lighter than 5% of the largest blob's ink are dust, not strokes
PAGE_EDGE_COVER = 0.5  # in a photo, a border column (row) inked along half its length is the page's edge
ALONG_THE_EDGE = 2.0   # ink touching one side runs along it when twice as long there as deep into the image


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
    lines: Structure | None = None  # printed lines (boxes, rules) removed from ``ink``, if there were any


UNIFORM = "uniform image (a single colour, no ink)"
BLANK = "blank image (no ink darker or lighter than the background)"
FLAT_NOISE = "only paper and noise, no strokes standing out from the background"
NOISE = "the image looks like noise, not pen strokes"
DOTS = "ink is scattered dots, not strokes"
SCATTER_BLOBS = 8  # scattered dots: the 8 largest blobs hold under half the ink (the digits of a number hold most)

STACK_PIXELS = 1 << 17  # images of one shape are processed together, this many pixels at a time (cache-sized)
SAMPLE_PIXELS = 16384   # statistics of bigger images use an evenly strided sample of this many pixels
EDGE_INK_SHARE = 0.02   # strokes run into the border of a tight crop on at least 2% of its border pixels ...
EDGE_INK_CONTRAST = 0.3  # ... ink and paper differ by at least 30% of full scale (a shadow is fainter) ...
FLAT_PAPER = 0.15       # ... and the paper's robust spread is under 15% of that difference (no uneven light)
CROP_SIDE = 128         # ... in an image no larger than this: a cut-out digit, not a page in uneven light
_OTSU_BINS = 64
_OTSU_CENTRES = (np.arange(_OTSU_BINS) + 0.5) / _OTSU_BINS


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
    for indices, stack_maps in ink_stacks(grays):
        for i, m in zip(indices, stack_maps):
            maps[i] = m
    return maps


def ink_stacks(grays: list[np.ndarray]):
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
    return _normalize_contrast(ink, clean, reason, edge_ink)


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
    return reduce_by_blocks(g, max(g.shape) // factor) if factor > 1 else g


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
    field = grey_opening(small, window)
    # Opening keeps shadow edges sharp; smooth only its blocks, not the edges, or they come back as "ink".
    field = box_blur(field, max(3, window // 3))
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


def _normalize_contrast(ink: np.ndarray, clean: np.ndarray, reason: np.ndarray,
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
        return [InkMap(np.zeros_like(image), reason=why) for image, why in zip(ink, reason)]
    span = np.where(alive, level - floor, 1.0).astype(np.float32)[:, None, None]
    norm = np.clip((ink - floor[:, None, None]) / span, 0.0, 1.0)
    reason[alive & (_coherence(norm) < MIN_COHERENCE)] = NOISE
    raw = np.minimum(ink, 1.0)
    found_lines = remove_lines_in_stack(norm, _undecided(reason))  # box borders and rules are not strokes
    maps = _drop_specks(norm, reason, photo=~clean)
    for i, m in enumerate(maps):
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
    frames = _clear_page_edges(ink, photo & alive)
    labels, count, boxes = label((ink > LABEL_LEVEL) & alive[:, None, None])
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
    off_image = _runs_off_the_image(boxes, frames[owner]) & photo[owner] if photo.any() else np.zeros(count, dtype=bool)
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
        keep = major | (_inside_strokes(boxes, owner, major, n) & (peak >= STROKE_PEAK / 2) & accepted)
    kept_labels = np.concatenate([[0], np.where(keep, np.arange(1, count + 1), 0)]).astype(labels.dtype)[labels]
    # Give each kept blob its rim: the faint edge pixels next to it (one pixel out).
    grown = max_of_neighbours(kept_labels)
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


def _runs_off_the_image(boxes: np.ndarray, frames) -> np.ndarray:
    """Which blobs (by their boxes) run off their image like the edge of a shadow or of the page: reaching
    two sides of their image's frame, or lying along one (twice as long along it as deep into the image).
    A digit cut by the edge (a "7" crossing the underline at the bottom of a form, a "5" touching the side
    of a photo) is about as deep as it is long there. ``frames``: (x0, y0, x1, y1) of the image within any
    cleared page-edge bands, one for all blobs or one per blob."""
    x0, y0, x1, y1 = boxes.T
    left, top, right, bottom = np.asarray(frames).T
    tall, wide = y1 - y0, x1 - x0
    on_rows, on_cols = (y0 <= top).astype(int) + (y1 >= bottom), (x0 <= left).astype(int) + (x1 >= right)
    return ((on_rows + on_cols >= 2) | ((on_rows > 0) & (wide >= ALONG_THE_EDGE * tall))
            | ((on_cols > 0) & (tall >= ALONG_THE_EDGE * wide)))


def _clear_page_edges(ink: np.ndarray, photos: np.ndarray) -> np.ndarray:
    """In place, for each photo of an (N, H, W) stack: clear the outermost columns and rows that are inked
    along half their length or more, and one more for their rim. They are the edge of the page (the table
    beyond it), which a digit written near the border would otherwise touch and be read with.

    Returns each image's frame (x0, y0, x1, y1) inside the cleared bands: a shadow that reached the page's
    edge still runs off the image there, though its outermost columns are gone."""
    n, height, width = ink.shape
    frames = np.tile(np.array([0, 0, width, height]), (n, 1))
    for i in np.flatnonzero(photos):
        strong = ink[i] > LABEL_LEVEL
        (left, right), (top, bottom) = (_inner_span(strong.mean(axis=axis) >= PAGE_EDGE_COVER) for axis in (0, 1))
        ink[i][:, :left], ink[i][:, right:] = 0, 0
        ink[i][:top], ink[i][bottom:] = 0, 0
        frames[i] = (left, top, right, bottom)
    return frames


def _inner_span(covered: np.ndarray) -> tuple[int, int]:
    """(first, one past the last) index left when the runs of ``covered`` at either end, each widened by
    one, are cleared; the whole length when it is covered end to end."""
    n = len(covered)
    if covered.all():
        return 0, n
    lead, trail = int(np.argmin(covered)), int(np.argmin(covered[::-1]))
    return lead + (lead > 0), n - trail - (trail > 0)


def _per_image(ufunc, owner: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float64)
    ufunc.at(out, owner, values)
    return out


def _inside_strokes(boxes: np.ndarray, owner: np.ndarray, major: np.ndarray, n: int) -> np.ndarray:
    """Which blobs (by their boxes) lie inside their image's box of major strokes, widened by 10% on each side."""
    x0, y0, x1, y1 = boxes.T
    outer = np.iinfo(boxes.dtype).max
    bx0, by0, bx1, by1 = np.full(n, outer), np.full(n, outer), np.zeros(n, boxes.dtype), np.zeros(n, boxes.dtype)
    np.minimum.at(bx0, owner[major], x0[major]), np.minimum.at(by0, owner[major], y0[major])
    np.maximum.at(bx1, owner[major], x1[major]), np.maximum.at(by1, owner[major], y1[major])
    margin_x, margin_y = 0.1 * (bx1 - bx0)[owner], 0.1 * (by1 - by0)[owner]
    return ((x0 >= bx0[owner] - margin_x) & (y0 >= by0[owner] - margin_y)
            & (x1 <= bx1[owner] + margin_x) & (y1 <= by1[owner] + margin_y))

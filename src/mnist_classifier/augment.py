"""Training augmentations that make MNIST digits look like other people's handwriting, batched on tensors.

MNIST was written by American Census Bureau staff and high-school students; people elsewhere write some
digits differently (a "1" with a long flag, a crossed "7", a "9" whose tail curls), and everyone varies in
slant, width and pen. A model trained on MNIST alone reads those far worse than MNIST itself. Each function
here turns a batch (N, 1, H, W) of light ink on 0 into a plausible other writer's version of the same digit:

    geometry(x, gen, slant, aspect)  shear (slant) and a wider or narrower digit (aspect)
    elastic(x, gen, alpha, sigma)    Simard-style smooth random displacement: a wobbly hand
    warp(x, gen, ...)                both of the above, each for its own share, in one resampling
    stroke_width(x, gen)             a thicker or thinner pen
    styles(x, y, gen)                flagged 1s (some with a foot), crossed 7s, 9s with a curled tail
    open_fours(x, y, gen)            4s redrawn with an open top and a slanted or rounded back
    partial_crop(x, gen)             1-3 px of ink cut off one side, as a tight crop of a photo does
    refit(x)                         re-frame exactly as fit.fit_to_mnist frames a real image

    augment_batch(x, y, gen, recipe) one training batch, as a Recipe (or a name in RECIPES) says

A real image only ever reaches the model through fit_to_mnist (ink box, longer side 20 px, centred by mass),
so whatever changes a digit's ink box is followed by ``refit``: the model trains on what the preprocessing
would hand it, never on a digit pushed out of the MNIST framing. Heavier distortion of every image lowers
every score, MNIST's included, so ``augment_batch`` sends only a share of each batch (``p_writer``) through
these and leaves the rest exactly as the "affine" recipe trains it; magnitudes stay within what real
writers do.

Every function takes a ``torch.Generator`` and a per-sample probability ``p``; a probability of exactly 0
or 1 draws no random numbers for the choice, so the "affine" recipe reproduces ``random_affine`` bit for
bit. There is no per-sample Python: each transform is a few whole-batch tensor operations. Transforms
other than ``random_affine`` and ``refit`` work on any H x W; ``augment_batch`` gives them a canvas with
CANVAS_MARGIN px of room on each side.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .fit import DIGIT_BOX, MNIST_CENTRE, MNIST_SIDE

INK_LEVEL = 0.05    # fainter values are resampling fringe around strokes, which a scan's noise floor hides
STROKE_LEVEL = 0.3  # where a stroke is, for finding a digit's top, bottom and stem
CANVAS_MARGIN = 4   # px of room on each side while transforming, so slant or a flag is never clipped
PEN_RAMP = 0.3      # share of a stroke's peak over which a re-drawn edge fades out: about a pixel, as in MNIST
FLAG_STEEPEST = 65  # degrees from vertical at most: a flatter flag is a 7's bar


# ---------------------------------------------------------------------------------------------- draws

def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=device)


def choose(n: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    """Which of n samples a transform applies to; p of 0 or 1 draws nothing (seeded streams stay as they were)."""
    if p <= 0:
        return torch.zeros(n, dtype=torch.bool, device=device)
    if p >= 1:
        return torch.ones(n, dtype=torch.bool, device=device)
    return torch.rand(n, generator=gen, device=device) < p


def _on_chosen(x: torch.Tensor, chosen: torch.Tensor, transform) -> torch.Tensor:
    """transform(x[chosen]) put back in place; the others are returned unchanged (and cost nothing)."""
    if not chosen.any():
        return x
    if chosen.all():
        return transform(x)
    index = chosen.nonzero().squeeze(1)
    return x.index_copy(0, index, transform(x.index_select(0, index)))


# ---------------------------------------------------------------------------------------------- geometry

def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, scale: float = 0.1,
                  shift: float = 2.0 / 28) -> torch.Tensor:
    """One random rotation/scale/shift per image, applied to the whole batch in a single grid_sample."""
    n = x.shape[0]

    def uniform(limit):
        return (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * limit

    angle = uniform(math.radians(degrees))
    zoom = 1 + uniform(scale)
    tx, ty = uniform(2 * shift), uniform(2 * shift)  # affine_grid works in [-1, 1], i.e. 2 units per image
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def geometry(x: torch.Tensor, gen: torch.Generator, slant: float = 0.3, aspect: float = 0.25,
             p: float = 1.0) -> torch.Tensor:
    """Shear by up to ``slant`` (horizontal shift per unit of height) and scale the width by up to
    exp(+-``aspect``), about the image centre. Follow with ``refit``: the ink box changes."""
    chosen = choose(x.shape[0], p, gen, x.device)
    return _on_chosen(x, chosen, lambda batch: warp(batch, gen, slant, aspect, p_slant=1.0, p_aspect=1.0))


def elastic(x: torch.Tensor, gen: torch.Generator, alpha: float = 34.0, sigma: float = 4.0,
            p: float = 1.0) -> torch.Tensor:
    """Simard et al. (2003): uniform(-1, 1) displacements per pixel, Gaussian-smoothed (``sigma`` px) and
    scaled by ``alpha`` px; at their 34 and 4, strokes move about 1.4 px (root mean square)."""
    return warp(x, gen, alpha=alpha, sigma=sigma, p_elastic=p)


def warp(x: torch.Tensor, gen: torch.Generator, slant: float = 0.0, aspect: float = 0.0, alpha: float = 0.0,
         sigma: float = 4.0, p_slant: float = 0.0, p_aspect: float = 0.0, p_elastic: float = 0.0) -> torch.Tensor:
    """Slant, aspect and elastic distortion, each for its own share of the batch, in one grid_sample:
    every resampling blurs a little, so a digit that gets all three is resampled once, not three times."""
    n, device = x.shape[0], x.device
    slanted, widened, wobbly = (choose(n, p, gen, device) for p in (p_slant, p_aspect, p_elastic))
    moved = slanted | widened | wobbly

    def transform(batch):
        m = batch.shape[0]
        shear = torch.where(slanted[moved], _uniform(m, -slant, slant, gen, device), 0.0)
        width = torch.where(widened[moved], torch.exp(_uniform(m, -aspect, aspect, gen, device)), 1.0)
        grid = _slant_aspect_grid(shear, width, batch.shape)
        if wobbly.any():
            grid = grid + _elastic_shift(batch.shape, alpha, sigma, gen, device) * wobbly[moved].view(-1, 1, 1, 1)
        return F.grid_sample(batch, grid, align_corners=False, padding_mode="zeros")

    return _on_chosen(x, moved, transform)


def _slant_aspect_grid(shear: torch.Tensor, width: torch.Tensor, shape) -> torch.Tensor:
    # affine_grid wants output -> input: the inverse of (x, y) -> (width * x + shear * y, y).
    zero, one = torch.zeros_like(shear), torch.ones_like(shear)
    theta = torch.stack([torch.stack([1 / width, -shear / width, zero], 1), torch.stack([zero, one, zero], 1)], 1)
    n, _, height, width_px = shape
    return (_base_grid(height, width_px, shear.device) @ theta.transpose(1, 2)).view(n, height, width_px, 2)


@functools.lru_cache(maxsize=8)
def _base_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(1, H*W, 3) pixel centres in affine_grid's units and a 1 for the shift: affine_grid's base, built once."""
    centres = F.affine_grid(torch.eye(2, 3).unsqueeze(0), [1, 1, height, width], align_corners=False)
    return torch.cat([centres.view(1, -1, 2), torch.ones(1, height * width, 1)], -1).to(device)


def _elastic_shift(shape, alpha: float, sigma: float, gen: torch.Generator, device) -> torch.Tensor:
    """(N, H, W, 2) Simard displacements in affine_grid's units.

    The noise is drawn at half resolution: after a smoothing of several pixels nothing finer survives
    anyway. Smoothing and the bilinear upsampling are both linear, so along each axis they are one small
    matrix, and the whole field is two matrix products per component.
    """
    n, _, height, width = shape
    coarse_h, coarse_w = max(2, height // 2), max(2, width // 2)
    noise = torch.rand(n, 2, coarse_h, coarse_w, generator=gen, device=device) * 2 - 1
    down = _smooth_and_upsample(coarse_h, height, sigma / 2, device)
    across = _smooth_and_upsample(coarse_w, width, sigma / 2, device)
    field = (down @ noise @ across.T).permute(0, 2, 3, 1)  # (N, H, W, 2), as grid_sample's grid
    # White noise smoothed over sigma/2 coarse pixels comes out twice as strong as over sigma fine ones;
    # pixels -> affine_grid's [-1, 1] units (2 units per image side).
    return field * torch.tensor([alpha / width, alpha / height], device=device)


@functools.lru_cache(maxsize=8)
def _smooth_and_upsample(coarse: int, fine: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(fine, coarse) matrix: Gaussian smoothing (reflected at the edges) then bilinear upsampling."""
    radius = max(1, min(coarse - 1, int(math.ceil(2 * sigma))))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    basis = torch.eye(coarse, dtype=torch.float64).unsqueeze(1)  # each coarse pixel alone, through the same steps
    smoothed = F.conv1d(F.pad(basis, (radius, radius), mode="reflect"), (kernel / kernel.sum()).view(1, 1, -1))
    upsampled = F.interpolate(smoothed, size=fine, mode="linear", align_corners=False)
    return upsampled[:, 0].T.float().contiguous().to(device)


# ---------------------------------------------------------------------------------------------- pen

def _blur(x: torch.Tensor) -> torch.Tensor:
    """The [1 2 1] x [1 2 1] / 16 kernel (a Gaussian of about 0.85 px) as shifted sums, which are cheaper
    than a one-channel convolution."""
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., :-2, :] + 2 * padded[..., 1:-1, :] + padded[..., 2:, :]
    return (rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]) / 16


def stroke_width(x: torch.Tensor, gen: torch.Generator, thicker: float = 0.5, p: float = 1.0) -> torch.Tensor:
    """A thicker pen for a ``thicker`` share of the chosen, a thinner one for the rest, by re-drawing each
    stroke's outline at another level of the blurred digit.

    A stroke's edge lies where the blurred ink crosses half its peak; cutting at a lower level moves the
    edge out (up to about a pixel each side), a higher one moves it in. The cut is a soft ramp, so the
    new edge is anti-aliased like MNIST's own rather than a grey halo.
    """

    def transform(batch):
        n = batch.shape[0]
        grow = torch.rand(n, generator=gen, device=batch.device) < thicker
        level = torch.where(grow, _uniform(n, 0.12, 0.4, gen, batch.device), _uniform(n, 0.55, 0.7, gen, batch.device))
        blurred = _blur(batch)
        peak = blurred.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
        level = level.view(n, 1, 1, 1)
        ramp = torch.minimum(torch.full_like(level, PEN_RAMP), 2 * level)  # the paper must stay at 0
        return ((blurred / peak - level) / ramp + 0.5).clamp(0, 1)

    return _on_chosen(x, choose(x.shape[0], p, gen, x.device), transform)


# ---------------------------------------------------------------------------------------------- framing

@dataclass
class InkBox:
    """Per-sample ink box, end-exclusive, in pixel indices; ``empty`` where a sample has no ink."""

    x0: torch.Tensor
    y0: torch.Tensor
    x1: torch.Tensor
    y1: torch.Tensor
    empty: torch.Tensor


def ink_box(x: torch.Tensor, level: float = INK_LEVEL) -> InkBox:
    """The box around each sample's pixels above ``level``."""
    rows, cols = x[:, 0].amax(2) > level, x[:, 0].amax(1) > level
    y0, y1 = _first(rows), rows.shape[1] - _first(rows.flip(1))
    x0, x1 = _first(cols), cols.shape[1] - _first(cols.flip(1))
    return InkBox(x0, y0, x1, y1, ~rows.any(1))


def _first(occupied: torch.Tensor) -> torch.Tensor:
    """Index of the first True of each row (0 where none)."""
    return occupied.to(torch.uint8).argmax(1)


def refit(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 1, 28, 28) framed exactly as fit.fit_to_mnist frames a real image.

    The ink box (values above INK_LEVEL) is resized so its longer side is 20 px keeping the aspect
    ratio, with Pillow's own resampling weights (BOX when shrinking, BILINEAR when enlarging), then
    shifted by whole pixels so the centre of mass sits at (14, 14). Resizing is separable, so each
    sample is two small matrix products: rows, then columns.
    """
    x = F.threshold(x, INK_LEVEL, 0.0)
    box = ink_box(x)
    height, width = box.y1 - box.y0, box.x1 - box.x0
    scale = DIGIT_BOX / torch.maximum(height, width).clamp_min(1).double()
    new_h = torch.round(height * scale).clamp(1, DIGIT_BOX).long()  # Python's round: half to even, as torch's
    new_w = torch.round(width * scale).clamp(1, DIGIT_BOX).long()
    enlarge = (scale >= 1).long()  # fit_to_mnist: BOX when shrinking, BILINEAR otherwise
    rows = _resize_table(x.shape[2], MNIST_SIDE, DIGIT_BOX, x.device)[enlarge, height, new_h]
    cols = _resize_table(x.shape[3], MNIST_SIDE, DIGIT_BOX, x.device)[enlarge, width, new_w]
    patch = _shift(rows, box.y0, dim=2) @ x[:, 0] @ _shift(cols, box.x0, dim=2).transpose(1, 2)
    top, left = _placement(patch, new_h, new_w, MNIST_CENTRE)  # patch: the resized box at the top left
    placed = _shift(_shift(patch, top, dim=1), left, dim=2)
    return torch.where(box.empty.view(-1, 1, 1), 0.0, placed.clamp(0, 1)).unsqueeze(1)


@functools.lru_cache(maxsize=8)
def _resize_table(in_size: int, out_size: int, longest: int, device: torch.device) -> torch.Tensor:
    """Pillow's resampling weights for every way a box can be resized: [bilinear, length, new length]
    -> (out_size, in_size) matrix, output pixel <- pixel of a box starting at 0. There are few distinct
    cases, so they are worked out once rather than per sample."""
    length = torch.arange(in_size + 1, dtype=torch.float64).view(1, -1, 1)
    new_length = torch.arange(longest + 1, dtype=torch.float64).view(1, 1, -1)
    bilinear = torch.tensor([False, True]).view(-1, 1, 1)
    cases = torch.broadcast_shapes(bilinear.shape, length.shape, new_length.shape)
    weights = _pillow_weights(*(t.expand(cases).reshape(-1) for t in (length, new_length.clamp_min(1), bilinear)),
                              in_size, out_size)
    return weights.view(*cases, out_size, in_size).to(device)


def _pillow_weights(length, new_length, bilinear, in_size: int, out_size: int) -> torch.Tensor:
    """(M, out_size, in_size) resampling weights: output pixel o of the resized box <- its pixel j.

    A transcription of Pillow's precompute_coeffs (Resample.c) for its BOX and BILINEAR filters, so
    refit resamples as fit_to_mnist does; rows past the new length are zero.
    """
    out = torch.arange(out_size, dtype=torch.float64).view(1, -1, 1)
    inside = torch.arange(in_size, dtype=torch.float64).view(1, 1, -1)
    length, new_length, bilinear = length.view(-1, 1, 1), new_length.view(-1, 1, 1), bilinear.view(-1, 1, 1)
    scale = length / new_length
    filter_scale = scale.clamp_min(1.0)
    support = torch.where(bilinear, 1.0, 0.5) * filter_scale
    centre = (out + 0.5) * scale
    first = torch.trunc(centre - support + 0.5).clamp_min(0)
    last = torch.minimum(torch.trunc(centre + support + 0.5), length)
    at = (inside - centre + 0.5) / filter_scale
    weight = torch.where(bilinear, (1 - at.abs()).clamp_min(0), ((at > -0.5) & (at <= 0.5)).double())
    weight = weight * ((inside >= first) & (inside < last) & (out < new_length))
    total = weight.sum(2, keepdim=True)
    return (weight / torch.where(total > 0, total, 1.0)).float()


def _placement(patch: torch.Tensor, new_h, new_w, centre: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fit_to_mnist's whole-pixel offsets: centre of mass to (centre, centre), the digit kept inside the field."""
    side = patch.shape[1]
    index = torch.arange(side, dtype=torch.float64, device=patch.device)
    mass = patch.double()
    total = mass.sum((1, 2))
    has_ink = total > 0
    cy = torch.where(has_ink, mass.sum(2) @ index / total.clamp_min(1e-12), (new_h - 1) / 2)
    cx = torch.where(has_ink, mass.sum(1) @ index / total.clamp_min(1e-12), (new_w - 1) / 2)
    top = torch.minimum(torch.floor(centre - cy + 0.5).clamp_min(0), side - new_h)
    left = torch.minimum(torch.floor(centre - cx + 0.5).clamp_min(0), side - new_w)
    return top.long(), left.long()


def _shift(images: torch.Tensor, offset: torch.Tensor, dim: int) -> torch.Tensor:
    """Move each (A, B) matrix of (N, A, B) down (dim 1) or right (dim 2) by its own whole number of places."""
    side = images.shape[dim]
    source = torch.arange(side, device=images.device).view(1, -1) - offset.view(-1, 1)
    valid = source >= 0
    shape = (-1, side, 1) if dim == 1 else (-1, 1, side)
    gathered = images.gather(dim, source.clamp_min(0).view(shape).expand_as(images))
    return gathered * valid.view(shape)


def partial_crop(x: torch.Tensor, gen: torch.Generator, most: int = 3, p: float = 1.0) -> torch.Tensor:
    """Cut 1..``most`` px of ink off one side (top, bottom, left or right), as a crop that clips strokes
    would; never more than a fifth of the digit's extent across that side, so a narrow 1 keeps its stem.
    Follow with ``refit``."""

    def transform(batch):
        n = batch.shape[0]
        box = ink_box(batch)
        side = torch.randint(0, 4, (n,), generator=gen, device=batch.device)
        depth = torch.randint(1, most + 1, (n,), generator=gen, device=batch.device)
        extent = torch.where(side < 2, box.y1 - box.y0, box.x1 - box.x0)
        depth = torch.minimum(depth, extent // 5).view(n, 1, 1)
        ys = torch.arange(batch.shape[2], device=batch.device).view(1, -1, 1)
        xs = torch.arange(batch.shape[3], device=batch.device).view(1, 1, -1)
        side = side.view(n, 1, 1)
        cut = (((side == 0) & (ys < box.y0.view(n, 1, 1) + depth))
               | ((side == 1) & (ys >= box.y1.view(n, 1, 1) - depth))
               | ((side == 2) & (xs < box.x0.view(n, 1, 1) + depth))
               | ((side == 3) & (xs >= box.x1.view(n, 1, 1) - depth)))
        return batch * ~cut.unsqueeze(1)

    return _on_chosen(x, choose(x.shape[0], p, gen, x.device), transform)


# ---------------------------------------------------------------------------------------------- styles

@dataclass
class DigitShape:
    """What the styles need to know about each digit, measured from its ink (pixel coordinates: x right, y down)."""

    top: torch.Tensor        # first and last row with stroke
    bottom: torch.Tensor
    top_x: torch.Tensor      # mean column of the stroke in the top and bottom two rows
    bottom_x: torch.Tensor
    height: torch.Tensor     # bottom - top + 1
    stroke: torch.Tensor     # the pen's width in px


def measure(x: torch.Tensor) -> DigitShape:
    """Where each digit's strokes start and end, and how wide its pen is."""
    rows = x[:, 0].amax(2) > STROKE_LEVEL
    top = _first(rows).float()
    bottom = (rows.shape[1] - 1 - _first(rows.flip(1))).float()
    return DigitShape(top, bottom, _mean_column(x, top, 0, 2), _mean_column(x, bottom, -1, 2),
                      bottom - top + 1, stroke_width_px(x))


def _mean_column(x: torch.Tensor, row: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """Ink-weighted mean column of rows row+first .. row+first+count-1 of each sample."""
    ink = x[:, 0]
    xs = torch.arange(ink.shape[2], device=x.device, dtype=ink.dtype)
    ys = torch.arange(ink.shape[1], device=x.device, dtype=ink.dtype).view(1, -1)
    start = (row + first).view(-1, 1)
    band = (ys >= start) & (ys < start + count)
    mass, moment = (ink.sum(2) * band).sum(1), ((ink @ xs) * band).sum(1)
    return torch.where(mass > 0, moment / mass.clamp_min(1e-6), (ink.shape[2] - 1) / 2)


def stroke_width_px(x: torch.Tensor) -> torch.Tensor:
    """Pen width from area and outline: a stroke of length L and width w has ink L*w and outline 2L,
    and the summed gradient magnitude of a soft image is its outline length. Central differences, as
    forward ones see less outline along diagonal strokes than along straight ones."""
    dx = F.pad(x[..., :, 2:] - x[..., :, :-2], (1, 1)) / 2
    dy = F.pad(x[..., 2:, :] - x[..., :-2, :], (0, 0, 1, 1)) / 2
    outline = torch.sqrt(dx ** 2 + dy ** 2).sum((1, 2, 3))
    return (2 * x.sum((1, 2, 3)) / outline.clamp_min(1e-6)).clamp(1.0, 6.0)


def draw_segments(side: tuple[int, int], start: torch.Tensor, end: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Anti-aliased pen strokes: (N, S, 2) start and end points (x, y), widths (N,) or (N, S) -> (N, 1, H, W)
    ink in [0, 1].

    Ink falls from 1 to 0 over one pixel around distance width/2 from the segment, so a stroke's
    cross-section holds ``width`` of ink, as the digit's own strokes do by stroke_width_px.
    """
    height, width_px = side
    xs = torch.arange(width_px, dtype=start.dtype, device=start.device).view(1, 1, 1, -1)
    ys = torch.arange(height, dtype=start.dtype, device=start.device).view(1, 1, -1, 1)
    ax, ay = start[..., 0, None, None], start[..., 1, None, None]
    ux, uy = end[..., 0, None, None] - ax, end[..., 1, None, None] - ay
    dx, dy = xs - ax, ys - ay  # (N, S, 1, W) and (N, S, H, 1): pixel centres relative to the start
    t = ((dx * ux + dy * uy) / (ux ** 2 + uy ** 2).clamp_min(1e-6)).clamp(0, 1)
    distance = torch.sqrt((dx - t * ux) ** 2 + (dy - t * uy) ** 2)
    ink = (width.reshape(width.shape[0], -1, 1, 1) / 2 - distance + 0.5).clamp(0, 1)
    return ink.amax(1, keepdim=True)


def _direction(angle: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``base`` (N, 2) unit vectors turned by ``angle``: positive turns 'down' towards 'left' (y points down)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([cos * base[:, 0] - sin * base[:, 1], sin * base[:, 0] + cos * base[:, 1]], 1)


def _pair(x_coord: torch.Tensor, y_coord: torch.Tensor) -> torch.Tensor:
    return torch.stack([x_coord, y_coord], -1)


@dataclass
class Strokes:
    """Pen strokes to add, per sample: (N, S, 2) start and end points (x, y), (N, S) widths (negative: none)."""

    start: torch.Tensor
    end: torch.Tensor
    width: torch.Tensor


def add_strokes(x: torch.Tensor, strokes: Strokes) -> torch.Tensor:
    """The digits with the strokes drawn over them (ink adds up to full strength, never beyond)."""
    return torch.maximum(x, draw_segments(x.shape[2:], strokes.start, strokes.end, strokes.width))


def flag_strokes(x: torch.Tensor, shape: DigitShape, gen: torch.Generator, p_foot: float = 0.3) -> Strokes:
    """A continental 1: a straight flag from the top of the stem, down and to the left, 25-50% of the
    digit's height long and 30-60 degrees off the stem; a ``p_foot`` share also gets a foot (a short bar
    under the stem). Both with the digit's own pen."""
    n, device = x.shape[0], x.device
    length = _uniform(n, 0.25, 0.5, gen, device) * shape.height
    off_stem = torch.deg2rad(_uniform(n, 30.0, 60.0, gen, device))
    foot = torch.rand(n, generator=gen, device=device) < p_foot
    foot_half = _uniform(n, 0.15, 0.3, gen, device) * shape.height
    head = _pair(shape.top_x, shape.top + shape.stroke / 2)
    tail = _pair(shape.bottom_x, shape.bottom - shape.stroke / 2)
    down_stem = F.normalize(tail - head, dim=1)
    lean = torch.atan2(-down_stem[:, 0], down_stem[:, 1])  # > 0: the top leans right
    # On a 1 that leans right, 60 degrees off the stem is almost level: a 7's bar, not a flag.
    off_vertical = (lean + off_stem).clamp(max=math.radians(FLAG_STEEPEST))
    flag_end = head + length.view(-1, 1) * _pair(-torch.sin(off_vertical), torch.cos(off_vertical))
    half = _pair(foot_half, torch.zeros_like(foot_half))
    return Strokes(torch.stack([head, tail - half], 1), torch.stack([flag_end, tail + half], 1),
                   torch.stack([shape.stroke, torch.where(foot, shape.stroke, -1.0)], 1))


def crossbar_strokes(x: torch.Tensor, shape: DigitShape, gen: torch.Generator) -> Strokes:
    """A continental 7: a short bar across the stem at 45-60% of the height, 30-50% of the height long,
    tilted by up to 8 degrees and off centre by up to a tenth of the height, with the digit's own pen."""
    n, device = x.shape[0], x.device
    at = shape.top + _uniform(n, 0.45, 0.6, gen, device) * (shape.height - 1)
    half = _uniform(n, 0.15, 0.25, gen, device) * shape.height
    tilt = torch.deg2rad(_uniform(n, -8.0, 8.0, gen, device))
    offset = _uniform(n, -0.1, 0.1, gen, device) * shape.height
    stem_x = _mean_column(x * (x > STROKE_LEVEL), torch.round(at), -1, 3)  # at mid-height a 7 is only its stem
    centre = _pair(stem_x + offset, at)
    along = _pair(torch.cos(tilt), torch.sin(tilt)) * half.view(-1, 1)
    return Strokes((centre - along).unsqueeze(1), (centre + along).unsqueeze(1), shape.stroke.view(-1, 1))


def curl_strokes(x: torch.Tensor, shape: DigitShape, gen: torch.Generator, pieces: int = 5) -> Strokes:
    """A 9 whose tail curls to the left at its end: an arc of 110-180 degrees, radius 15-28% of the height,
    leaving the tail's end in the tail's own direction, drawn as a few straight pieces with the digit's pen."""
    n, device = x.shape[0], x.device
    radius = _uniform(n, 0.15, 0.28, gen, device) * shape.height
    sweep = torch.deg2rad(_uniform(n, 110.0, 180.0, gen, device))
    end = _pair(shape.bottom_x, shape.bottom - shape.stroke / 2)
    above = torch.round(shape.bottom - 0.3 * shape.height)
    tail = F.normalize(end - _pair(_mean_column(x * (x > STROKE_LEVEL), above, -1, 3), above), dim=1)
    centre = end + radius.view(-1, 1) * _direction(torch.full_like(radius, math.pi / 2), tail)
    start_angle = torch.atan2(end[:, 1] - centre[:, 1], end[:, 0] - centre[:, 0]).view(-1, 1)
    # y points down, so growing angles turn under the tail and then to the left.
    angles = start_angle + torch.linspace(0, 1, pieces + 1, device=device).view(1, -1) * sweep.view(-1, 1)
    points = centre.unsqueeze(1) + radius.view(-1, 1, 1) * torch.stack([torch.cos(angles), torch.sin(angles)], -1)
    return Strokes(points[:, :-1], points[:, 1:], shape.stroke.view(-1, 1).expand(-1, pieces))


def flagged_one(x: torch.Tensor, gen: torch.Generator, p_foot: float = 0.3) -> torch.Tensor:
    return add_strokes(x, flag_strokes(x, measure(x), gen, p_foot))


def crossed_seven(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return add_strokes(x, crossbar_strokes(x, measure(x), gen))


def curled_nine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return add_strokes(x, curl_strokes(x, measure(x), gen))


STYLED_DIGITS = (1, 7, 9)  # flag_strokes, crossbar_strokes, curl_strokes


def styles(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, p: float = 1.0, p_foot: float = 0.3) -> torch.Tensor:
    """Redraw a ``p`` share of the 1s, 7s and 9s in their continental styles; other digits are untouched.
    Follow with ``refit``: the ink box grows.

    Every chosen digit is measured once and all their strokes are drawn in one pass; each digit keeps
    the strokes of its own class.
    """
    chosen = choose(x.shape[0], p, gen, x.device) & torch.isin(y, torch.tensor(STYLED_DIGITS, device=y.device))

    def transform(batch):
        shape, labels = measure(batch), y[chosen]
        options = [flag_strokes(batch, shape, gen, p_foot), crossbar_strokes(batch, shape, gen),
                   curl_strokes(batch, shape, gen)]
        most = max(option.width.shape[1] for option in options)
        start = batch.new_zeros(batch.shape[0], most, 2)
        end = batch.new_zeros(batch.shape[0], most, 2)
        width = batch.new_full((batch.shape[0], most), -1.0)  # unused slots draw nothing
        for digit, option in zip(STYLED_DIGITS, options):
            mine, count = labels == digit, option.width.shape[1]
            start[:, :count][mine], end[:, :count][mine] = option.start[mine], option.end[mine]
            width[:, :count][mine] = option.width[mine]
        return add_strokes(batch, Strokes(start, end, width))

    return _on_chosen(x, chosen, transform)


def open_four_strokes(x: torch.Tensor, shape: DigitShape, gen: torch.Generator, pieces: int = 4) -> Strokes:
    """A 4 as many people outside MNIST write it: a stem on the right, a bar across at 55-72% of the
    height reaching past the stem, and a back stroke from near the top of the stem down and out to the
    bar's left end. The back's top stands 0-30% of the digit's width left of the stem (an open top, or
    nearly closed), and the back bows out to the lower left by up to a third of its length (a rounded
    join). In the digit's own ink box height and centre, 0.55-0.85 times as wide as high, with its pen."""
    n, device = x.shape[0], x.device
    box = ink_box(x, STROKE_LEVEL)
    height, top, bottom, pen = shape.height, shape.top, shape.bottom, shape.stroke
    width = _uniform(n, 0.55, 0.85, gen, device) * height
    left = (box.x0 + box.x1 - 1) / 2 - width / 2
    stem_top = _pair(left + _uniform(n, 0.6, 0.8, gen, device) * width, top + pen / 2)
    lean = torch.tan(torch.deg2rad(_uniform(n, -3.0, 10.0, gen, device))) * height  # > 0: the top leans right
    stem_bottom = _pair(stem_top[:, 0] - lean, bottom - pen / 2)
    bar_at = _uniform(n, 0.55, 0.72, gen, device)
    stem_at_bar = stem_top + bar_at.view(-1, 1) * (stem_bottom - stem_top)
    bar_left = _pair(left + pen / 2, stem_at_bar[:, 1])
    bar_right = stem_at_bar + _pair(_uniform(n, 0.1, 0.3, gen, device) * width, torch.zeros_like(width))
    back_top = _pair(stem_top[:, 0] - _uniform(n, 0.0, 0.3, gen, device) * width,
                     top + pen / 2 + _uniform(n, 0.0, 0.1, gen, device) * height)
    # A quadratic curve from the back's top to the bar's left end, its control point pushed out to the
    # lower left of the straight line (y points down: the outward normal of a line going down-left).
    chord = bar_left - back_top
    outward = F.normalize(_pair(-chord[:, 1], chord[:, 0]), dim=1)
    bow = _uniform(n, 0.0, 0.35, gen, device) * chord.norm(dim=1)
    control = (back_top + bar_left) / 2 + bow.view(-1, 1) * outward
    t = torch.linspace(0, 1, pieces + 1, device=device).view(1, -1, 1)
    back = (1 - t) ** 2 * back_top.unsqueeze(1) + 2 * t * (1 - t) * control.unsqueeze(1) + t ** 2 * bar_left.unsqueeze(1)
    start = torch.cat([back[:, :-1], bar_left.unsqueeze(1), stem_top.unsqueeze(1)], 1)
    end = torch.cat([back[:, 1:], bar_right.unsqueeze(1), stem_bottom.unsqueeze(1)], 1)
    return Strokes(start, end, pen.view(-1, 1).expand(-1, pieces + 2))


def open_four(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each 4 redrawn as an open-top 4 (open_four_strokes) in place of its own strokes."""
    strokes = open_four_strokes(x, measure(x), gen)
    return draw_segments(x.shape[2:], strokes.start, strokes.end, strokes.width)


def open_fours(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Redraw a ``p`` share of the 4s as open-top 4s; other digits are untouched. Follow with ``refit``."""
    chosen = choose(x.shape[0], p, gen, x.device) & (y == 4)
    return _on_chosen(x, chosen, lambda batch: open_four(batch, gen))


# ---------------------------------------------------------------------------------------------- recipes

@dataclass(frozen=True)
class Recipe:
    """How a training batch is augmented; every value is JSON-serializable and goes into the model file."""

    p_affine: float = 1.0    # the small rotation/scale/shift on every image, as the shipped cnn was trained
    p_writer: float = 0.0    # share of each batch that also gets other writers' variation; the rest stays MNIST
    # Within the p_writer share, each of these independently:
    p_style: float = 0.0     # a 1, 7 or 9 drawn in its continental style (flag, crossbar, curled tail)
    p_foot: float = 0.0      # a flagged 1 that also gets a foot
    p_open_four: float = 0.0  # a 4 redrawn with an open top and a slanted or rounded back (no recipe below uses it)
    p_slant: float = 0.0     # shear by up to +-slant
    slant: float = 0.0
    p_aspect: float = 0.0    # width scaled by up to exp(+-aspect)
    aspect: float = 0.0
    p_elastic: float = 0.0   # Simard elastic distortion
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    p_stroke: float = 0.0    # thicker or thinner pen (half each)
    p_crop: float = 0.0      # a few px cut off one side ...
    crop_px: int = 3         # ... at most this many

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"augmentation recipe: {name} must be a number >= 0, got {value!r}")
            if name.startswith("p_") and value > 1:
                raise ConfigError(f"augmentation recipe: {name} is a probability (0 to 1), got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    # Exactly train.random_affine on every image: the presets' augmentation, seeded results unchanged.
    "affine": Recipe(),
    "writers": Recipe(
        p_writer=0.5,       # half of every batch stays exactly as "affine" trains it: MNIST keeps its footing
        p_style=0.7,        # ~35% of all 1s, 7s and 9s continental: both styles common, neither dominant
        p_foot=0.3,         # feet are rarer than flags in continental handwriting
        p_slant=0.5, slant=0.3,      # up to ~17 degrees either way: upright and left-leaning writers
        p_aspect=0.4, aspect=0.25,   # 0.78x-1.28x wide: narrow and round hands
        p_elastic=0.4, elastic_alpha=24.0, elastic_sigma=4.0,  # ~1 px smooth wobble; Simard's 34 smudges some
        p_stroke=0.5,       # pens and scan resolutions vary more than anything else
        p_crop=0.15, crop_px=2,  # tight crops are occasional; 3 px off a 7's bar or a 9's tail can change the digit
    ),
    # MNIST's own variation, plus the continental 1s, 7s and 9s and nothing else: a member tuned to MNIST
    # that still knows a flagged 1 from a 7, so that it does not outvote a writers member on them.
    "styles": Recipe(p_writer=0.25, p_style=0.7, p_foot=0.3),
}


def recipe_named(recipe: "Recipe | str | dict") -> Recipe:
    """A Recipe from a name in RECIPES, a dict of its fields (as stored in a model file), or itself."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        unknown = set(recipe) - set(Recipe.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"augmentation recipe has no field {', '.join(sorted(unknown))} "
                              f"(fields: {', '.join(Recipe.__dataclass_fields__)})")
        return replace(Recipe(), **recipe)
    try:
        return RECIPES[recipe]
    except KeyError:
        raise ConfigError(f"unknown augmentation recipe {recipe!r} (choose from {', '.join(RECIPES)})") from None


def augment_batch(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                  recipe: "Recipe | str | dict") -> torch.Tensor:
    """Augment one training batch (N, 1, 28, 28) with labels (N,) as ``recipe`` says.

    The p_writer share is put on a larger canvas, varied (style, slant, aspect, wobble, pen, crop) and
    re-framed by ``refit``, as the preprocessing frames a real image; then the small random affine.
    """
    recipe = recipe_named(recipe)
    writer = choose(x.shape[0], recipe.p_writer, gen, x.device)
    x = _on_chosen(x, writer, lambda batch: _other_writer(batch, y[writer], gen, recipe))
    return _on_chosen(x, choose(x.shape[0], recipe.p_affine, gen, x.device), lambda batch: random_affine(batch, gen))


def _other_writer(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, recipe: Recipe) -> torch.Tensor:
    canvas = F.pad(x, (CANVAS_MARGIN,) * 4)
    canvas = styles(canvas, y, gen, recipe.p_style, recipe.p_foot)
    canvas = open_fours(canvas, y, gen, recipe.p_open_four)
    canvas = warp(canvas, gen, recipe.slant, recipe.aspect, recipe.elastic_alpha, recipe.elastic_sigma,
                  recipe.p_slant, recipe.p_aspect, recipe.p_elastic)
    canvas = partial_crop(canvas, gen, int(recipe.crop_px), p=recipe.p_crop)
    canvas = stroke_width(canvas, gen, p=recipe.p_stroke)
    return refit(canvas)

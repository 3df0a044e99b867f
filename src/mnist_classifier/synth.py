"""Synthetic "real world" images made from MNIST digits: dark ink on uneven paper, photos, numbers.

Used by the tests, the image benchmark and scripts/make_sample_digits.py, so that every claim about
reading people's images is measured on the same kind of picture:

    rng = np.random.default_rng(0)
    img = render_on_paper(mnist.test_images[0], rng)                       # 300x300 RGB "scan"
    img = render_on_paper(digit, rng, canvas=(1000, 1000), **PHOTO)        # a phone photo
    ink = compose_number([d1, d2, d3, d4], rng); render_on_paper(ink, rng, canvas=(640, 240))
    img = render_form([d1, d2, None, d4], rng, style="comb")           # one digit per box of a form
    jpeg = to_jpeg(img, quality=75)

Ink arrays are MNIST-style: light ink (255 or 1.0) on a 0 background.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

# Scanned or flat-lit paper: mild everything.
PAPER = dict(height_fraction=(0.3, 0.75), rotation=10.0, blur=(0.0, 1.2), noise=(0.005, 0.03),
             shadow=(0.0, 0.25), stroke=(0.0, 0.0))
# A phone photo: smaller digit, stronger lighting gradient and shadow, more sensor noise.
PHOTO = dict(height_fraction=(0.2, 0.5), rotation=10.0, blur=(0.5, 2.0), noise=(0.01, 0.04),
             shadow=(0.15, 0.45), stroke=(0.0, 0.0))


def as_unit(ink: np.ndarray) -> np.ndarray:
    ink = np.asarray(ink)
    return ink.astype(np.float32) / 255.0 if ink.dtype == np.uint8 else ink.astype(np.float32)


def _uniform(rng: np.random.Generator, bounds) -> float:
    low, high = bounds if isinstance(bounds, (tuple, list)) else (bounds, bounds)
    return float(rng.uniform(low, high)) if high > low else float(low)


def render_on_paper(ink: np.ndarray, rng: np.random.Generator, canvas: tuple[int, int] = (300, 300),
                    height_fraction=(0.3, 0.75), rotation: float = 10.0, blur=(0.0, 1.2), noise=(0.005, 0.03),
                    shadow=(0.0, 0.25), stroke=(0.0, 0.0), ink_rgb=None, paper_rgb=None) -> Image.Image:
    """Draw MNIST-style ``ink`` as dark pen on light, unevenly lit paper; returns an RGB image.

    The digit is scaled so its 28-px field is ``height_fraction`` of the canvas height (random within
    the bounds), rotated by up to ``rotation`` degrees, placed at a random offset that keeps it inside,
    thickened (``stroke`` > 0) or thinned (< 0) by that many MNIST pixels, then blurred, lit by a
    gradient with a soft shadow, and given sensor noise.
    """
    width, height = canvas
    alpha = _place_ink(as_unit(ink), rng, canvas, height_fraction, rotation, stroke)
    paper = _paper(rng, canvas, shadow, paper_rgb)
    pen = np.array(ink_rgb if ink_rgb is not None else _pen_colour(rng), dtype=np.float32)
    # Ink absorbs light: it is darkened by the same lighting as the paper around it.
    lighting = paper.mean(axis=2, keepdims=True) / max(float(paper.mean()), 1e-3)
    image = paper * (1.0 - alpha[..., None]) + (pen * np.clip(lighting, 0, 1.2)) * alpha[..., None]
    sigma = _uniform(rng, blur)
    img = Image.fromarray(np.clip(image * 255.0, 0, 255).astype(np.uint8), "RGB")
    if sigma > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(sigma * max(width, height) / 300))
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0.0, _uniform(rng, noise) * 255.0, size=(height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _pen_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    darkness = rng.uniform(0.05, 0.3)
    blue = rng.uniform(0.0, 0.15)  # ballpoint blue to pencil grey
    return darkness, darkness, min(1.0, darkness + blue)


def _paper(rng: np.random.Generator, canvas, shadow, paper_rgb) -> np.ndarray:
    width, height = canvas
    base = np.array(paper_rgb if paper_rgb is not None else
                    (rng.uniform(0.78, 0.97),) * 2 + (rng.uniform(0.72, 0.95),), dtype=np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys /= height
    xs /= width
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1.0 - 0.15 * rng.uniform() * ((xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle) + 0.5)
    # A soft shadow edge (a hand or a phone) across one side of the page.
    depth = _uniform(rng, shadow)
    edge_angle = rng.uniform(0, 2 * np.pi)
    distance = (xs - 0.5) * np.cos(edge_angle) + (ys - 0.5) * np.sin(edge_angle) - rng.uniform(0.1, 0.45)
    gradient *= 1.0 - depth / (1.0 + np.exp(-distance * 25.0))
    texture = ndimage.gaussian_filter(rng.normal(0, 1, size=(height // 4 + 1, width // 4 + 1)), 1.0)
    texture = np.kron(texture, np.ones((4, 4)))[:height, :width].astype(np.float32)
    return base * (gradient * (1.0 + 0.02 * texture))[..., None]


def _place_ink(ink: np.ndarray, rng: np.random.Generator, canvas, height_fraction, rotation, stroke) -> np.ndarray:
    width, height = canvas
    field_height = max(8, int(round(height * _uniform(rng, height_fraction))))
    scale = field_height / ink.shape[0]
    size = (max(8, int(round(ink.shape[1] * scale))), field_height)
    big = Image.fromarray(ink, mode="F").resize(size, Image.BICUBIC)
    amount = _uniform(rng, stroke) * scale
    if abs(amount) >= 1:
        arr = np.asarray(big)
        footprint = _disk(int(round(abs(amount) / 2)))
        morph = ndimage.grey_dilation if amount > 0 else ndimage.grey_erosion
        arr = morph(arr, footprint=footprint)
        big = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    big = big.rotate(rng.uniform(-rotation, rotation), resample=Image.BICUBIC, expand=True)
    arr = np.clip(np.asarray(big, dtype=np.float32), 0, 1)
    arr = _crop_to_ink(arr)
    if arr.shape[0] > height or arr.shape[1] > width:
        factor = min(height / arr.shape[0], width / arr.shape[1]) * 0.95
        arr = np.asarray(Image.fromarray(arr, mode="F").resize(
            (max(1, int(arr.shape[1] * factor)), max(1, int(arr.shape[0] * factor))), Image.BOX))
    top = int(rng.integers(0, height - arr.shape[0] + 1))
    left = int(rng.integers(0, width - arr.shape[1] + 1))
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[top:top + arr.shape[0], left:left + arr.shape[1]] = arr
    return alpha


def _disk(radius: int) -> np.ndarray:
    ys, xs = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xs * xs + ys * ys <= radius * radius + radius


def _crop_to_ink(arr: np.ndarray, margin: int = 2) -> np.ndarray:
    rows, cols = np.flatnonzero(arr.max(axis=1) > 0.02), np.flatnonzero(arr.max(axis=0) > 0.02)
    if rows.size == 0:
        return arr
    return arr[max(0, rows[0] - margin):rows[-1] + 1 + margin, max(0, cols[0] - margin):cols[-1] + 1 + margin]


def compose_number(digits, rng: np.random.Generator, gap=(2, 7), jitter: int = 2) -> np.ndarray:
    """Digits (MNIST-style 28x28) side by side on one line, ``gap`` MNIST pixels between their ink.

    Returns a float (28 + 2*jitter, W) ink array; each digit moves up or down by up to ``jitter`` px.
    A negative gap makes digits touch or overlap.
    """
    parts = []
    for digit in digits:
        ink = as_unit(digit)
        cols = np.flatnonzero(ink.max(axis=0) > 0)
        parts.append(ink[:, cols[0]:cols[-1] + 1] if cols.size else ink)
    gaps = [int(rng.integers(gap[0], gap[1] + 1)) for _ in parts[1:]]
    width = sum(p.shape[1] for p in parts) + sum(gaps) + 8
    out = np.zeros((28 + 2 * jitter, width), dtype=np.float32)
    x = 4
    for k, part in enumerate(parts):
        dy = jitter + int(rng.integers(-jitter, jitter + 1))
        region = out[dy:dy + 28, x:x + part.shape[1]]
        np.maximum(region, part, out=region)
        x += part.shape[1] + (gaps[k] if k < len(gaps) else 0)
    return out


def to_jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def blank_images(rng: np.random.Generator, count: int, size: int = 300) -> list[tuple[str, np.ndarray]]:
    """Images with no digit: blank paper (with lighting and noise), uniform colours, and pure noise."""
    out = []
    for i in range(count):
        kind = i % 5
        if kind == 0:  # blank paper photo: lighting, texture and sensor noise, but no ink
            img = render_on_paper(np.zeros((28, 28), np.float32), rng, canvas=(size, size), **PAPER)
            out.append(("blank paper", np.asarray(img)))
        elif kind == 1:
            out.append(("uniform", np.full((size, size), rng.integers(0, 256), dtype=np.uint8)))
        elif kind == 2:
            out.append(("uniform noise", rng.integers(0, 256, size=(size, size), dtype=np.uint8)))
        elif kind == 3:
            mean, std = rng.uniform(60, 200), rng.uniform(10, 60)
            out.append(("gaussian noise", np.clip(rng.normal(mean, std, (size, size)), 0, 255).astype(np.uint8)))
        else:
            density = rng.uniform(0.01, 0.5)
            out.append(("salt and pepper", ((rng.random((size, size)) > density) * 255).astype(np.uint8)))
    return out


# ---------------------------------------------------------------------------------------------- forms

# Printed form lines; their colour only sets how strong they are as ink (blue and red are dark enough
# to matter in gray).
LINE_INKS = {"black": (0.1, 0.1, 0.12), "grey": (0.5, 0.5, 0.52), "blue": (0.2, 0.35, 0.8), "red": (0.85, 0.2, 0.2)}
FORM_STYLES = ("boxes", "cells", "comb", "grid", "ruled", "underline")


def render_form(digits, rng: np.random.Generator, style: str = "cells", canvas: tuple[int, int] = (640, 220),
                line_ink=None, thickness=(1.0, 4.0), rotation: float = 2.0, cross: float = 0.25,
                fill=(0.8, 1.0), blur=(0.0, 0.8), noise=(0.005, 0.02), shadow=(0.0, 0.2),
                lines: bool = True) -> Image.Image:
    """Digits written one per printed box of a form, or on printed lines; returns an RGB image.

    ``digits`` are MNIST-style 28x28 arrays, left to right; ``None`` leaves its box empty. Styles:
    ``boxes`` separate closed boxes, ``cells`` adjacent cells sharing their borders, ``comb`` a baseline
    with ticks between the cells, ``grid`` grid paper, ``ruled`` ruled paper with the number written on a
    line, ``underline`` one line under the number, longer than it. ``line_ink`` is a LINE_INKS name or an
    RGB triple (random when None), ``thickness`` the lines' width in pixels (random within the bounds).
    Each digit is pushed over its box's border with probability ``cross``. The page is rotated by up
    to ``rotation`` degrees, then lit, blurred and noised as render_on_paper does.

    ``lines=False`` draws the same page (the same random draws) without its printed lines: what a
    perfect line remover would leave. One digit in a box or on a line, as a single-digit image:
    ``render_form([digit], rng, style="boxes", canvas=(300, 300))``.
    """
    if style not in FORM_STYLES:
        raise ValueError(f"unknown form style {style!r} (expected one of {', '.join(FORM_STYLES)})")
    cells, rules = _form_layout(len(digits), rng, style, canvas, _uniform(rng, fill))
    pen_layer = _digits_in_cells(digits, cells, rng, style, cross, canvas)
    line_layer = _draw_rects(rules, _uniform(rng, thickness), canvas)
    angle = rng.uniform(-rotation, rotation)
    pen_layer, line_layer = (_rotated(layer, angle) for layer in (pen_layer, line_layer))
    if not lines:
        line_layer[:] = 0.0
    name = line_ink if line_ink is not None else rng.choice(list(LINE_INKS))
    line_rgb = np.array(LINE_INKS[name] if isinstance(name, str) else name, dtype=np.float32)
    paper = _paper(rng, canvas, shadow, None)
    pen = np.array(_pen_colour(rng), dtype=np.float32)
    lighting = np.clip(paper.mean(axis=2, keepdims=True) / max(float(paper.mean()), 1e-3), 0, 1.2)
    image = paper * (1.0 - line_layer[..., None]) + line_rgb * lighting * line_layer[..., None]
    image = image * (1.0 - pen_layer[..., None]) + pen * lighting * pen_layer[..., None]
    return _photographed(image, rng, blur, noise)


def _form_layout(count: int, rng: np.random.Generator, style: str, canvas, fill: float):
    """Where the digits go (one cell each) and the printed lines, as (x0, y0, x1, y1) float rectangles
    of zero width or height (the line's centre), for _draw_rects."""
    width, height = canvas
    written_on_a_line = style in ("ruled", "underline")
    gap = rng.uniform(0.15, 0.5) if style == "boxes" else rng.uniform(0.0, 0.15) if written_on_a_line else 0.0
    aspect = 1.0 if style == "grid" else rng.uniform(1.0, 1.3)          # cell height / width
    if written_on_a_line:
        aspect = rng.uniform(1.3, 1.6)  # digits side by side, narrower than tall
    cell_w = min(0.9 * width / (count + (count - 1) * gap), 0.7 * height / aspect) * fill
    cell_h = cell_w * aspect
    row_w = count * cell_w + (count - 1) * gap * cell_w
    x_start = (width - row_w) / 2 + rng.uniform(-0.4, 0.4) * (width - row_w) / 2
    y_top = (height - cell_h) / 2 + rng.uniform(-0.3, 0.3) * (height - cell_h) / 2
    cells = [(x_start + k * cell_w * (1 + gap), y_top, x_start + k * cell_w * (1 + gap) + cell_w, y_top + cell_h)
             for k in range(count)]
    y_bottom, x_end = y_top + cell_h, cells[-1][2]
    if style == "boxes":
        rules = [r for x0, y0, x1, y1 in cells
                 for r in ((x0, y0, x1, y0), (x0, y1, x1, y1), (x0, y0, x0, y1), (x1, y0, x1, y1))]
    elif style == "cells":
        rules = [(x_start, y_top, x_end, y_top), (x_start, y_bottom, x_end, y_bottom)]
        rules += [(x, y_top, x, y_bottom) for x in [c[0] for c in cells] + [x_end]]
    elif style == "comb":
        tick = cell_h * rng.uniform(0.25, 0.5)
        walls = [c[0] for c in cells] + [x_end]
        rules = [(x_start, y_bottom, x_end, y_bottom)] + [(x, y_bottom - tick, x, y_bottom) for x in walls]
    elif style == "grid":
        xs = np.arange(x_start % cell_w, width, cell_w)
        ys = np.arange(y_top % cell_h, height, cell_h)
        rules = [(0.0, y, float(width), y) for y in ys] + [(x, 0.0, x, float(height)) for x in xs]
    else:
        line_y = y_bottom + cell_h * rng.uniform(-0.05, 0.08 if style == "ruled" else 0.15)
        if style == "ruled":
            spacing = cell_h * rng.uniform(1.15, 1.5)
            rules = [(0.0, y, float(width), y) for y in np.arange(line_y % spacing, height, spacing)]
        else:
            over = cell_w * rng.uniform(0.1, 0.5, size=2)
            rules = [(max(0.0, x_start - over[0]), line_y, min(float(width), x_end + over[1]), line_y)]
    return cells, rules


def _digits_in_cells(digits, cells, rng: np.random.Generator, style: str, cross: float, canvas) -> np.ndarray:
    """The pen layer: each digit scaled to its cell and placed in it, some pushed over a border."""
    width, height = canvas
    layer = np.zeros((height, width), dtype=np.float32)
    on_a_line = style in ("ruled", "underline")
    for digit, (x0, y0, x1, y1) in zip(digits, cells):
        cell_w, cell_h = x1 - x0, y1 - y0
        side = max(8, int(round(cell_h * rng.uniform(0.85, 1.05))))  # the 28 px field; the ink is 20/28 of it
        tilt = rng.uniform(-6, 6)
        dx, dy = rng.normal(0, 0.04) * cell_w, rng.normal(0, 0.04) * cell_h
        if rng.uniform() < cross:
            if rng.uniform() < 0.5 and not on_a_line:
                dx += rng.choice([-1, 1]) * rng.uniform(0.25, 0.4) * cell_w
            else:
                dy += rng.choice([-1, 1]) * rng.uniform(0.12, 0.25) * cell_h
        if on_a_line:
            dy += 0.1 * cell_h  # written on the line: the ink's bottom, not the field's, sits on it
        if digit is None:
            continue
        field = Image.fromarray(as_unit(digit), mode="F").resize((side, side), Image.BICUBIC)
        field = np.clip(np.asarray(field.rotate(tilt, resample=Image.BICUBIC), dtype=np.float32), 0, 1)
        left = int(round((x0 + x1) / 2 + dx - side / 2))
        top = int(round((y0 + y1) / 2 + dy - side / 2))
        _paste_max(layer, field, left, top)
    return layer


def _paste_max(layer: np.ndarray, patch: np.ndarray, left: int, top: int) -> None:
    height, width = layer.shape
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(height, top + patch.shape[0]), min(width, left + patch.shape[1])
    if y1 > y0 and x1 > x0:
        region = layer[y0:y1, x0:x1]
        np.maximum(region, patch[y0 - top:y1 - top, x0 - left:x1 - left], out=region)


def _draw_rects(rules, thickness: float, canvas) -> np.ndarray:
    """Anti-aliased straight lines ``thickness`` px wide centred on each (x0, y0, x1, y1) rectangle."""
    width, height = canvas
    layer = np.zeros((height, width), dtype=np.float32)
    half = thickness / 2
    xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
    for x0, y0, x1, y1 in rules:
        # Coverage of each pixel row and column by the (widened) rectangle; their product is the pixel's.
        cover_x = np.clip(np.minimum(xs + 0.5, x1 + half) - np.maximum(xs - 0.5, x0 - half), 0, 1)
        cover_y = np.clip(np.minimum(ys + 0.5, y1 + half) - np.maximum(ys - 0.5, y0 - half), 0, 1)
        np.maximum(layer, np.outer(cover_y, cover_x), out=layer)
    return layer


def _rotated(layer: np.ndarray, angle: float) -> np.ndarray:
    out = Image.fromarray(layer, mode="F").rotate(angle, resample=Image.BICUBIC)
    return np.clip(np.asarray(out, dtype=np.float32), 0, 1)


def _photographed(image: np.ndarray, rng: np.random.Generator, blur, noise) -> Image.Image:
    """Blur and sensor noise, scaled to the canvas as render_on_paper does."""
    height, width = image.shape[:2]
    img = Image.fromarray(np.clip(image * 255.0, 0, 255).astype(np.uint8), "RGB")
    sigma = _uniform(rng, blur)
    if sigma > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(sigma * max(width, height) / 300))
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0.0, _uniform(rng, noise) * 255.0, size=(height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")

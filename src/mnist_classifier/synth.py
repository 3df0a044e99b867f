"""Synthetic "real world" images made from MNIST digits: dark ink on uneven paper, photos, numbers.

Used by the tests, the image benchmark and scripts/make_sample_digits.py, so that every claim about
reading people's images is measured on the same kind of picture:

    rng = np.random.default_rng(0)
    img = render_on_paper(mnist.test_images[0], rng)                       # 300x300 RGB "scan"
    img = render_on_paper(digit, rng, canvas=(1000, 1000), **PHOTO)        # a phone photo
    ink = compose_number([d1, d2, d3, d4], rng); render_on_paper(ink, rng, canvas=(640, 240))
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

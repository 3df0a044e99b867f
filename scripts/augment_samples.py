"""Before/after grids of every augmentation, to judge by eye whether they look like real handwriting.

    PYTHONPATH=src MNIST_DATA=../shared/mnist python scripts/augment_samples.py [OUT.png]

Each block is one transform: the top row holds MNIST test digits, the row under it the same digits after
the transform (and refit, where the training recipe refits). Writes aug_samples.png by default.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from mnist_classifier import augment
from mnist_classifier.data import load_mnist

PER_ROW = 16
ZOOM = 3
LABEL_WIDTH = 150


def _framed(transform):
    """Run a transform on the recipe's larger canvas and refit, as augment_batch does."""
    return lambda x, y, gen: augment.refit(transform(F.pad(x, (augment.CANVAS_MARGIN,) * 4), y, gen))


BLOCKS = [
    ("flagged 1", (1,), _framed(lambda x, y, g: augment.styles(x, y, g, p_foot=0.0))),
    ("flagged 1 + foot", (1,), _framed(lambda x, y, g: augment.styles(x, y, g, p_foot=1.0))),
    ("crossed 7", (7,), _framed(lambda x, y, g: augment.styles(x, y, g))),
    ("curled 9", (9,), _framed(lambda x, y, g: augment.styles(x, y, g))),
    ("slant", None, _framed(lambda x, y, g: augment.geometry(x, g, 0.3, 0.0))),
    ("aspect", None, _framed(lambda x, y, g: augment.geometry(x, g, 0.0, 0.25))),
    ("elastic", None, _framed(lambda x, y, g: augment.elastic(x, g, 24.0, 4.0))),
    ("thicker pen", None, _framed(lambda x, y, g: augment.stroke_width(x, g, thicker=1.0))),
    ("thinner pen", None, _framed(lambda x, y, g: augment.stroke_width(x, g, thicker=0.0))),
    ("partial crop", None, _framed(lambda x, y, g: augment.partial_crop(x, g))),
    ("writers recipe", None, lambda x, y, g: augment.augment_batch(x, y, g, "writers")),
    ("writers, 1 7 9", (1, 7, 9), lambda x, y, g: augment.augment_batch(x, y, g, "writers")),
]


def _tile(images: torch.Tensor) -> Image.Image:
    row = (images[:, 0].clamp(0, 1).numpy() * 255).astype(np.uint8)
    strip = np.concatenate([np.pad(im, 1, constant_values=60) for im in row], axis=1)
    return Image.fromarray(strip).resize((strip.shape[1] * ZOOM, strip.shape[0] * ZOOM), Image.NEAREST)


def main(out: str = "aug_samples.png") -> None:
    data = load_mnist(progress=False)
    x_all = torch.as_tensor(data.test_images).float().div(255).unsqueeze(1)
    y_all = torch.as_tensor(data.test_labels).long()
    rows = []
    for block, (name, digits, transform) in enumerate(BLOCKS):
        wanted = torch.ones_like(y_all, dtype=torch.bool) if digits is None else torch.isin(y_all, torch.tensor(digits))
        pick = torch.nonzero(wanted)[:, 0]
        pick = pick[torch.randperm(len(pick), generator=torch.Generator().manual_seed(block))[:PER_ROW]]
        x, y = x_all[pick], y_all[pick]
        after = transform(x, y, torch.Generator().manual_seed(100 + block))
        rows.append((name, _tile(x), _tile(after)))
    tile_h, tile_w = rows[0][1].height, rows[0][1].width
    sheet = Image.new("L", (LABEL_WIDTH + tile_w, len(rows) * (2 * tile_h + 8)), 30)
    draw = ImageDraw.Draw(sheet)
    for i, (name, before, after) in enumerate(rows):
        top = i * (2 * tile_h + 8)
        draw.text((6, top + tile_h - 6), name, fill=255)
        sheet.paste(before, (LABEL_WIDTH, top))
        sheet.paste(after, (LABEL_WIDTH, top + tile_h))
    sheet.save(out)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:])

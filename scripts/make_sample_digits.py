"""Write assets/sample_digits/: a few images of MNIST test digits as people would photograph or draw them.

    python scripts/make_sample_digits.py [--out assets/sample_digits]

Each digit is the most typical test image of its class (closest to the class mean), so the samples do
not depend on any model. labels.json lists what each file shows (null: no digit).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mnist_classifier.data import load_mnist  # noqa: E402
from mnist_classifier.synth import PAPER, PHOTO, compose_number, render_on_paper  # noqa: E402


def typical_digits(images: np.ndarray, labels: np.ndarray) -> dict[int, list[int]]:
    """Test-set indices per class, most typical first (smallest distance to the class mean)."""
    out = {}
    x = images.reshape(len(images), -1).astype(np.float32)
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        distance = ((x[idx] - x[idx].mean(axis=0)) ** 2).sum(axis=1)
        out[digit] = [int(i) for i in idx[np.argsort(distance)]]
    return out


def make(out: Path) -> dict:
    data = load_mnist(progress=False)
    pick = typical_digits(data.test_images, data.test_labels)
    digit = {d: data.test_images[pick[d][0]] for d in range(10)}
    rng = np.random.default_rng(2026)
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, int | str | None] = {}

    def save(name, img, label, **kw):
        img.save(out / name, **kw)
        labels[name] = label

    save("mnist_3.png", Image.fromarray(digit[3]), 3)
    save("paper_7.png", render_on_paper(digit[7], rng, canvas=(300, 300), **PAPER).convert("L"), 7)
    save("paper_2_small_corner.jpg", render_on_paper(digit[2], rng, canvas=(400, 300), height_fraction=(0.25, 0.25),
                                                     rotation=4.0), 2, quality=85)
    save("paper_5_large.jpg", render_on_paper(digit[5], rng, canvas=(600, 600), height_fraction=(0.9, 0.9),
                                              rotation=5.0), 5, quality=85)
    save("photo_8.jpg", render_on_paper(digit[8], rng, canvas=(800, 800), **PHOTO), 8, quality=80)
    chalk = 255 - np.asarray(render_on_paper(digit[4], rng, canvas=(300, 300), **PAPER).convert("L"))
    save("chalk_4_light_on_dark.png", Image.fromarray(chalk), 4)
    rgba = np.zeros((200, 200, 4), dtype=np.uint8)  # black ink on a transparent canvas, as drawing apps export
    rgba[..., 3] = np.asarray(Image.fromarray(digit[9]).resize((200, 200), Image.BICUBIC))
    save("drawn_9_transparent.png", Image.fromarray(rgba, "RGBA"), 9)
    number = compose_number([digit[2], digit[0], data.test_images[pick[2][1]], digit[6]], rng, gap=(4, 6))
    save("number_2026.jpg", render_on_paper(number, rng, canvas=(640, 220), height_fraction=(0.6, 0.6),
                                            rotation=2.0, shadow=(0.1, 0.1)), "2026", quality=85)
    save("blank_paper.jpg", render_on_paper(np.zeros((28, 28), np.float32), rng, canvas=(300, 300), **PAPER),
         None, quality=85)
    (out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    return labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "assets" / "sample_digits"))
    args = parser.parse_args(argv)
    labels = make(Path(args.out))
    print(f"wrote {len(labels)} images and labels.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

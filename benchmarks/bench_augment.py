"""Augmentation cost: milliseconds per training batch of 128 for each transform and each recipe.

One thread (the training loop's per-batch work is what is measured), MNIST training digits, the median
and the fastest of several runs after a warm-up (on a shared machine the fastest is the cleaner figure).
Prints a table and writes benchmarks/results/augment.json; asserts nothing.

    MNIST_DATA=../shared/mnist .venv/bin/python benchmarks/bench_augment.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, write_result  # noqa: E402

BATCH = 128


def transforms():
    import torch.nn.functional as F

    from mnist_classifier import augment as A

    def canvas(x):
        return F.pad(x, (A.CANVAS_MARGIN,) * 4)

    return {
        "random_affine (recipe 'affine')": lambda x, y, g: A.random_affine(x, g),
        "geometry (slant + aspect)": lambda x, y, g: A.geometry(canvas(x), g),
        "elastic": lambda x, y, g: A.elastic(canvas(x), g, 24.0, 4.0),
        "warp (slant + aspect + elastic, one grid_sample)": lambda x, y, g: A.warp(
            canvas(x), g, 0.3, 0.25, 24.0, 4.0, 1.0, 1.0, 1.0),
        "stroke_width": lambda x, y, g: A.stroke_width(canvas(x), g),
        "styles (every 1, 7, 9 of the batch)": lambda x, y, g: A.styles(canvas(x), y, g),
        "partial_crop": lambda x, y, g: A.partial_crop(canvas(x), g),
        "refit (36x36 canvas -> 28x28)": lambda x, y, g: A.refit(canvas(x)),
        "augment_batch 'affine'": lambda x, y, g: A.augment_batch(x, y, g, "affine"),
        "augment_batch 'writers'": lambda x, y, g: A.augment_batch(x, y, g, "writers"),
    }


def timings_ms(fn, x, y, repeats: int) -> dict:
    import torch

    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        fn(x, y, gen)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(x, y, gen)
        times.append((time.perf_counter() - started) * 1000)
    return {"median": round(statistics.median(times), 3), "min": round(min(times), 3)}


def main() -> None:
    import torch

    from mnist_classifier.data import load_mnist
    from mnist_classifier.inference import to_model_input

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_mnist(progress=False)
    x = to_model_input(data.train_images[:BATCH])
    y = torch.as_tensor(data.train_labels[:BATCH]).long()
    rows = {name: timings_ms(fn, x, y, args.repeats) for name, fn in transforms().items()}
    width = max(map(len, rows))
    print(f"{'ms per batch of ' + str(BATCH):<{width}}   median      min")
    for name, ms in rows.items():
        print(f"{name:<{width}}  {ms['median']:7.2f}  {ms['min']:7.2f}")
    write_result("augment", {"machine": machine_info(), "batch": BATCH, "repeats": args.repeats,
                             "ms_per_batch": rows})


if __name__ == "__main__":
    main()

"""Reading people's images: accuracy and throughput for every target of the image pipeline.

    python benchmarks/bench_images.py                 # full run (10k PNGs, 10k paper JPEGs, ...)
    python benchmarks/bench_images.py --quick         # a few minutes: smaller sets, same measurements
    python benchmarks/bench_images.py --model models/cnn.safetensors

All data is generated from the MNIST test set into a temporary folder (removed afterwards) with
mnist_classifier.synth, the same renderer the tests and assets/sample_digits use. Prints a table and
writes benchmarks/results/images.json. Never asserts: the targets are listed next to the figures.

Measured:
  mnist_png      the 10k test digits as PNG files: accuracy vs the model's in-memory accuracy, and
                 end-to-end images/s (paths in, predictions out), with process and thread pools, plus
                 the decode-only and model-only rates that bound it, and the CLI on the folder
                 (``predict FOLDER --json`` from process start to exit, with its peak memory, also
                 on a folder of 10x as many files)
  paper          the same digits drawn as dark ink on 300x300 uneven paper (offset, scale, rotation,
                 blur, noise, JPEG): accuracy
  photo          1000x1000 JPEG "phone photos": images/s end to end (and accuracy)
  no_digit       blank paper, uniform colours and noise: share answered "no digit"; MNIST digits
                 wrongly answered "no digit"
  numbers        4-digit numbers of test digits on paper: share read exactly
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "benchmarks"))
from _machine import machine_info, run_measured  # noqa: E402
from mnist_classifier.data import load_mnist  # noqa: E402
from mnist_classifier.predict import Predictor  # noqa: E402
from mnist_classifier.preprocess import prepare_batch  # noqa: E402
from mnist_classifier.engines import DEFAULT_ENGINE  # noqa: E402
from mnist_classifier.synth import PAPER, PHOTO, blank_images, compose_number, render_on_paper  # noqa: E402

TARGETS = {
    "mnist_png_accuracy_gap_pp": "<= 0.2",
    "mnist_png_images_per_s": ">= 5000 (2 cores)",
    "mnist_png_cli_images_per_s": "(no target: the CLI, process start to exit)",
    "mnist_png_cli_peak_rss_mb": "(no target: the CLI's peak memory)",
    "mnist_png_cli_10x_files_peak_rss_mb": "(no target: the same, 10x the files)",
    "paper_accuracy": ">= 0.985",
    "photo_images_per_s": ">= 300 (2 cores)",
    "no_digit_rate": "1.0",
    "mnist_false_rejection": "<= 0.005",
    "numbers_exact": ">= 0.95",
}


# ---------------------------------------------------------------------------------------------- data

def _write_pngs(args):
    images, names = args
    for image, name in zip(images, names):
        Image.fromarray(image).save(name, optimize=False)


def _write_paper(args):
    images, names, seed, kind = args
    rng = np.random.default_rng(seed)
    for image, name in zip(images, names):
        if kind == "photo":
            img = render_on_paper(image, rng, canvas=(1000, 1000), **PHOTO)
        else:
            img = render_on_paper(image, rng, canvas=(300, 300), **PAPER)
        img.save(name, format="JPEG", quality=int(rng.integers(60, 96)))


def _write_numbers(args):
    groups, names, seed = args
    rng = np.random.default_rng(seed)
    for digits, name in zip(groups, names):
        ink = compose_number(digits, rng)
        img = render_on_paper(ink, rng, canvas=(640, 240), height_fraction=(0.35, 0.7), rotation=3.0,
                              blur=(0.0, 1.2), noise=(0.005, 0.03), shadow=(0.0, 0.25))
        img.save(name, format="JPEG", quality=int(rng.integers(60, 96)))


def _parallel(fn, items, names, chunk=250, extra=()):
    jobs = []
    for k, start in enumerate(range(0, len(items), chunk)):
        settings = tuple(e(k) if callable(e) else e for e in extra)  # e.g. a seed per chunk
        job = (items[start:start + chunk], names[start:start + chunk]) + settings
        jobs.append(job)
    with ProcessPoolExecutor() as pool:
        list(pool.map(fn, jobs))


# ---------------------------------------------------------------------------------------------- measures

def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def accuracy(predictions, labels) -> float:
    return float(np.mean([p.digit == int(y) for p, y in zip(predictions, labels)]))


def bench_mnist_png(predictor, data, folder: Path, n: int) -> dict:
    images, labels = data.test_images[:n], data.test_labels[:n]
    paths = [str(folder / f"{i:05d}.png") for i in range(n)]
    _parallel(_write_pngs, list(images), paths)
    in_memory = float((predictor.probabilities(images).argmax(1) == labels).mean())
    _, model_s = timed(lambda: predictor.probabilities(images.astype(np.float32) / 255))
    _, decode_s = timed(lambda: prepare_batch(paths[:2000]))
    out = {"n": n, "in_memory_accuracy": in_memory, "model_only_images_per_s": n / model_s,
           "decode_normalize_one_core_images_per_s": 2000 / decode_s}
    for pool in ("process", "thread"):
        p = Predictor(predictor.engine, pool=pool, workers=predictor.workers)
        predictions, seconds = timed(lambda: p.predict_many(paths))
        out[f"{pool}_pool_images_per_s"] = n / seconds
        out["accuracy"] = accuracy(predictions, labels)
        out["rejected"] = sum(p.digit is None for p in predictions)
        out["errors"] = sum(p.error is not None for p in predictions)
    out["images_per_s"] = max(out["process_pool_images_per_s"], out["thread_pool_images_per_s"])
    out["cli"] = bench_cli_folder(folder, dict(zip(paths, labels)))
    out["accuracy_gap_pp"] = 100 * (in_memory - out["accuracy"])
    out["false_rejection"] = out["rejected"] / n
    return out


def bench_cli_folder(folder: Path, labels: dict, copies: int = 10) -> dict:
    """What a user sees: ``mnist-classifier predict FOLDER --json`` in a fresh process, start to exit, and its
    peak memory; then a folder ``copies`` times larger (hard links to the same files), to show that memory
    does not grow with the number of files."""
    out = {"command": "mnist-classifier predict FOLDER --json --quiet", "n": len(labels), **_run_cli(folder, labels)}
    large = folder / "large"
    large.mkdir()
    try:
        large_labels = {}
        for k in range(copies):
            for path, label in labels.items():
                link = large / f"{k}_{Path(path).name}"
                os.link(path, link)
                large_labels[str(link)] = label
        out["large_folder"] = {"n": len(large_labels), **_run_cli(large, large_labels)}
    finally:
        shutil.rmtree(large)
    return out


def _run_cli(folder: Path, labels: dict) -> dict:
    with tempfile.TemporaryFile(mode="w+") as answers:
        seconds, peak_mb, _ = run_measured(["mnist_classifier.cli", "predict", str(folder), "--json", "--quiet"],
                                           stdout=answers, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        answers.seek(0)
        rows = json.load(answers)
    return {"seconds": seconds, "images_per_s": len(rows) / seconds, "peak_rss_mb": peak_mb,
            "accuracy": float(np.mean([r["digit"] == labels[r["path"]] for r in rows]))}


def bench_paper(predictor, data, folder: Path, n: int, seed: int) -> dict:
    paths = [str(folder / f"paper_{i:05d}.jpg") for i in range(n)]
    _parallel(_write_paper, list(data.test_images[:n]), paths, extra=(lambda k: seed + k, "paper"))
    predictions, seconds = timed(lambda: predictor.predict_many(paths))
    return {"n": n, "accuracy": accuracy(predictions, data.test_labels[:n]),
            "no_digit": sum(p.digit is None for p in predictions), "images_per_s": n / seconds}


def bench_photo(predictor, data, folder: Path, n: int, seed: int) -> dict:
    paths = [str(folder / f"photo_{i:05d}.jpg") for i in range(n)]
    _parallel(_write_paper, list(data.test_images[:n]), paths, chunk=25, extra=(lambda k: seed + 1000 + k, "photo"))
    predictor.predict_many(paths[:50])  # warm the page cache, as a folder someone just copied would be
    predictions, seconds = timed(lambda: predictor.predict_many(paths))
    return {"n": n, "size": "1000x1000 JPEG", "images_per_s": n / seconds,
            "accuracy": accuracy(predictions, data.test_labels[:n])}


def bench_no_digit(predictor, n: int, seed: int) -> dict:
    samples = blank_images(np.random.default_rng(seed), n)
    predictions = predictor.predict_many([image for _, image in samples], names=[k for k, _ in samples])
    by_kind: dict[str, list[bool]] = {}
    for (kind, _), p in zip(samples, predictions):
        by_kind.setdefault(kind, []).append(p.digit is None and p.error is None)
    return {"n": n, "no_digit_rate": float(np.mean([p.digit is None for p in predictions])),
            "by_kind": {k: float(np.mean(v)) for k, v in by_kind.items()}}


def bench_numbers(predictor, data, folder: Path, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(data.test_images), 4, replace=False) for _ in range(n)]
    paths = [str(folder / f"number_{i:05d}.jpg") for i in range(n)]
    _parallel(_write_numbers, [data.test_images[p] for p in picks], paths, extra=(lambda k: seed + 2000 + k,))
    results, seconds = timed(lambda: predictor.read_numbers(paths))
    truth = ["".join(str(int(d)) for d in data.test_labels[p]) for p in picks]
    exact = [r.number == t for r, t in zip(results, truth)]
    right_length = [r.number is not None and len(r.number) == 4 for r in results]
    return {"n": n, "exact": float(np.mean(exact)), "four_digits_found": float(np.mean(right_length)),
            "numbers_per_s": n / seconds}


# ---------------------------------------------------------------------------------------------- report

def machine() -> dict:
    import PIL

    return {**machine_info(), "pillow": PIL.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--quick", action="store_true", help="smaller sets (2000 PNG, 1000 paper, ...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", default=DEFAULT_ENGINE, help="what runs the model (default: as predict's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "images.json"))
    args = parser.parse_args(argv)
    sizes = dict(png=2000, paper=1000, photo=200, blank=500, numbers=300) if args.quick else \
        dict(png=10000, paper=10000, photo=1000, blank=1000, numbers=1000)
    data = load_mnist(progress=False)
    predictor = Predictor(args.model, device="cpu", engine=args.engine)
    results = {"machine": machine(), "model": predictor.model_path, "engine": predictor.engine.name,
               "model_architecture": predictor.metadata.get("architecture"),
               "model_test_accuracy": predictor.metadata.get("metrics", {}).get("accuracy"),
               "quick": args.quick, "sizes": sizes, "targets": TARGETS}
    folder = Path(tempfile.mkdtemp(prefix="bench_images_"))
    try:
        steps = [("mnist_png", lambda: bench_mnist_png(predictor, data, folder, sizes["png"])),
                 ("paper", lambda: bench_paper(predictor, data, folder, sizes["paper"], args.seed)),
                 ("photo", lambda: bench_photo(predictor, data, folder, sizes["photo"], args.seed)),
                 ("no_digit", lambda: bench_no_digit(predictor, sizes["blank"], args.seed)),
                 ("numbers", lambda: bench_numbers(predictor, data, folder, sizes["numbers"], args.seed))]
        for name, step in steps:
            results[name], seconds = timed(step)
            print(f"{name:<10} {json.dumps(results[name])}  ({seconds:.0f}s)", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results["summary"] = {
        "mnist_png_accuracy_gap_pp": round(results["mnist_png"]["accuracy_gap_pp"], 3),
        "mnist_png_images_per_s": round(results["mnist_png"]["images_per_s"]),
        "mnist_png_cli_images_per_s": round(results["mnist_png"]["cli"]["images_per_s"]),
        "mnist_png_cli_peak_rss_mb": round(results["mnist_png"]["cli"]["peak_rss_mb"]),
        "mnist_png_cli_10x_files_peak_rss_mb": round(results["mnist_png"]["cli"]["large_folder"]["peak_rss_mb"]),
        "paper_accuracy": round(results["paper"]["accuracy"], 4),
        "photo_images_per_s": round(results["photo"]["images_per_s"]),
        "no_digit_rate": results["no_digit"]["no_digit_rate"],
        "mnist_false_rejection": results["mnist_png"]["false_rejection"],
        "numbers_exact": round(results["numbers"]["exact"], 4),
    }
    print(f"\n{'measure':<28} {'value':>10}   target")
    for key, value in results["summary"].items():
        print(f"{key:<28} {value:>10}   {TARGETS[key]}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

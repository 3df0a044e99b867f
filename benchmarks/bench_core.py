"""Core benchmark: training time/accuracy per preset, in-memory inference throughput, peak training memory.

Each training run is the real CLI in a fresh process, timed from process start to finished evaluation
(data loading, model building, training, test-set evaluation and saving included). Peak memory is the
command's own peak RSS (VmHWM, which it reports as it exits; see _machine.run_measured). Prints a table
and writes benchmarks/results/core.json; asserts nothing.

    MNIST_DATA=../shared/mnist .venv/bin/python benchmarks/bench_core.py            # everything (~6 min on 2 cores)
    MNIST_DATA=../shared/mnist .venv/bin/python benchmarks/bench_core.py --only cnn-fast inference
    MNIST_DATA=../shared/mnist .venv/bin/python benchmarks/bench_core.py --only fast-vs-seed   # the issue's ratio
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, machine_info, run_measured, write_result  # noqa: E402

# What each training run is compared against (issue targets and the seeds' published figures).
TRAIN_RUNS = {
    "cnn-fast": {"target_accuracy": 0.990, "target_seconds": 15},
    "cnn": {"target_accuracy": 0.996, "target_seconds": 180},
    "mlp": {"reference_accuracy": 0.978, "reference": "seed 000, ~30 s on this machine"},
    "mlp-bn": {"reference_accuracy": 0.982, "reference": "seed 001"},
}
PEAK_MEMORY_TARGET_MB = 1536
REPEATS = {"cnn-fast": 3}  # a 15 s run varies by a second or two between runs: report the median of 3


def train_command(architecture: str, seed: int, out: Path) -> list[str]:
    return ["mnist_classifier.cli", "train", "--architecture", architecture, "--seed", str(seed), "--out", str(out),
            "--json", "--quiet"]


def train_run(architecture: str, seed: int, workdir: Path) -> dict:
    """Train in a fresh process; short runs are repeated and the median wall time is reported."""
    command = train_command(architecture, seed, workdir / f"{architecture}.safetensors") + ["--no-report"]
    runs = [run_measured(command) for _ in range(REPEATS.get(architecture, 1))]
    walls = sorted(wall for wall, _, _ in runs)
    wall, peak_mb, stdout = next(run for run in runs if run[0] == walls[len(walls) // 2])
    summary = json.loads(stdout)
    return {"architecture": architecture,
            "command": f"mnist-classifier train --architecture {architecture} --seed {seed} --json --quiet --no-report",
            "wall_seconds": round(wall, 2), "wall_seconds_runs": [round(w, 2) for w in walls],
            "train_seconds": summary["train_seconds"],
            "accuracy": summary["accuracy"], "loss": round(summary["loss"], 5), "epochs": summary["epochs"],
            "peak_rss_mb": round(peak_mb, 1), **TRAIN_RUNS[architecture]}


def fast_vs_seed(seed: int, workdir: Path, pairs: int = 3) -> dict:
    """``train -a cnn-fast`` as a user runs it (default flags: its report included) beside the seed's model,
    ``train -a mlp`` with the same flags, in alternating fresh processes; the issue's target is the ratio of
    their walls, <= 0.5, at >= 99.0% for cnn-fast. Each run's JSON says what its report cost (target ~1 s)."""
    rows = {"cnn-fast": [], "mlp": []}
    report_seconds = []
    for _ in range(pairs):
        for architecture in rows:
            wall, _, stdout = run_measured(train_command(architecture, seed,
                                                         workdir / f"{architecture}-default.safetensors"))
            summary = json.loads(stdout)
            rows[architecture].append((wall, summary["accuracy"]))
            if architecture == "cnn-fast":
                report_seconds.append(summary["report_seconds"])
    median = {a: sorted(w for w, _ in runs)[len(runs) // 2] for a, runs in rows.items()}
    return {"command": "mnist-classifier train --architecture ARCH --seed 0 --json --quiet (report included)",
            "walls": {a: [round(w, 2) for w, _ in runs] for a, runs in rows.items()},
            "accuracy": {a: runs[0][1] for a, runs in rows.items()},
            "ratios": [round(f / m, 3) for (f, _), (m, _) in zip(rows["cnn-fast"], rows["mlp"])],
            "ratio_of_medians": round(median["cnn-fast"] / median["mlp"], 3), "target_ratio": 0.5,
            "report_seconds": sorted(report_seconds)[len(report_seconds) // 2],
            "report_seconds_runs": report_seconds, "target_report_seconds": 1.0}


def inference_throughput(passes: int = 5) -> dict:
    """Images/s of the shipped model over the 10k test digits held in memory (batched, BN folded)."""
    import numpy as np
    import torch

    from mnist_classifier.data import load_mnist
    from mnist_classifier.inference import predict_proba, prepare_for_inference
    from mnist_classifier.persist import load_model, pretrained_path

    images = load_mnist(progress=False).test_images
    model = prepare_for_inference(load_model(pretrained_path()).model)
    predict_proba(model, images[:2048])  # warm-up: oneDNN picks its kernels on the first call
    started = time.perf_counter()
    for _ in range(passes):
        probabilities = predict_proba(model, images)
    seconds = time.perf_counter() - started
    assert np.isfinite(probabilities).all()
    return {"images": passes * len(images), "seconds": round(seconds, 3),
            "images_per_second": round(passes * len(images) / seconds), "target_images_per_second": 20000,
            "threads": torch.get_num_threads(), "command": "benchmarks/bench_core.py --only inference"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=[*TRAIN_RUNS, "fast-vs-seed", "inference"],
                        help="run just these parts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    parts = args.only or [*TRAIN_RUNS, "fast-vs-seed", "inference"]

    results = {"machine": machine_info(), "training": [], "peak_memory_target_mb": PEAK_MEMORY_TARGET_MB}
    if args.only:  # a partial run updates its rows and keeps the others
        previous = RESULTS / "core.json"
        if previous.is_file():
            kept = json.loads(previous.read_text())
            results["training"] = [r for r in kept.get("training", []) if r["architecture"] not in parts]
            for part in ("fast-vs-seed", "inference"):
                if part not in parts and part in kept:
                    results[part] = kept[part]
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in [p for p in parts if p in TRAIN_RUNS]:
            row = train_run(architecture, args.seed, Path(tmp))
            results["training"] = [r for r in results["training"] if r["architecture"] != architecture] + [row]
            print(f"{architecture:9s} accuracy {row['accuracy']:.4f}  wall {row['wall_seconds']:6.1f}s  "
                  f"(train {row['train_seconds']:.1f}s, {row['epochs']} epochs)  peak RSS {row['peak_rss_mb']:.0f} MB",
                  flush=True)
        if "fast-vs-seed" in parts:
            results["fast-vs-seed"] = row = fast_vs_seed(args.seed, Path(tmp))
            print(f"cnn-fast / mlp, report included: {row['ratio_of_medians']} (pairs {row['ratios']}; walls "
                  f"{row['walls']}); the report after training: {row['report_seconds']} s", flush=True)
    if "inference" in parts:
        results["inference"] = inference_throughput()
        print(f"inference: {results['inference']['images_per_second']:,} images/s", flush=True)
    write_result("core", results)


if __name__ == "__main__":
    main()

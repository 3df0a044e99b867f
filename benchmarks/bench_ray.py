"""predict --engine ray against the local engine: same answers, throughput, memory, and what N nodes would do.

    python benchmarks/bench_ray.py            # 10k MNIST test PNGs + samples checked, 100k PNGs timed
    python benchmarks/bench_ray.py --n 20000  # a shorter run

Steps, each a fresh `mnist-classifier` process measured from start to exit:
  same_answers  the 10,000 MNIST test digits as PNG plus the shipped sample images and three bad files: the
                Ray engine's Parquet rows against the local engine's (in this process): digit, error, reason
                equal, largest probability difference;
  throughput    N PNGs (the 10k tiled by hard links, in a temporary folder): `predict DIR --json` (local
                engine) and `predict --engine ray DIR --parquet OUT` (a local Ray on every core), wall time
                and the peak memory of the whole process tree (PSS, so shared memory counts once);
  costs         the per-image CPU cost of decoding and of classifying on one core (the same functions the
                Ray tasks and actors run), Ray's start-up, and Ray's own cost per image: the CPU-seconds of
                the Ray job beyond decoding and classifying (the slope between the two Ray runs' CPU-seconds).
                From these, the estimate for N nodes.
Writes benchmarks/results/ray.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "sample_digits"
CLI = [sys.executable, "-m", "mnist_classifier.cli"]
TARGETS = {"same_answers": "every row's digit and error equal, probabilities within 1e-6",
           "ray_vs_local_throughput": ">= 0.5 (100,000 PNGs, 2 cores, local Ray)",
           "peak_memory": "bounded (reported)"}
NODES = (1, 2, 4, 8, 16, 32)


# ---------------------------------------------------------------------------------------------- data

def _write_pngs(job):
    images, paths = job
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)


def write_test_pngs(images: np.ndarray, folder: Path) -> list[str]:
    folder.mkdir()
    paths = [str(folder / f"{i:05d}.png") for i in range(len(images))]
    jobs = [(images[i:i + 500], paths[i:i + 500]) for i in range(0, len(paths), 500)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write_pngs, jobs))
    return paths


def tile(paths: list[str], folder: Path, n: int) -> Path:
    """n files in ``folder``: hard links to ``paths`` over and over (no extra disk)."""
    folder.mkdir()
    for i in range(n):
        os.link(paths[i % len(paths)], folder / f"{i:06d}.png")
    return folder


def add_samples_and_bad_files(folder: Path) -> None:
    for sample in SAMPLES.iterdir():
        if sample.suffix != ".json":
            (folder / f"sample_{sample.name}").write_bytes(sample.read_bytes())
    (folder / "bad_truncated.png").write_bytes((folder / "00000.png").read_bytes()[:60])
    (folder / "bad_text.png").write_text("not an image\n")
    (folder / "bad_empty.png").write_bytes(b"")


# ---------------------------------------------------------------------------------------------- measuring

def _descendants(pid: int) -> list[int]:
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def _pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_tree_measured(args: list[str], stdout=subprocess.DEVNULL) -> dict:
    """Run a command; wall seconds, and over it and every process it starts (Ray's too) the peak PSS and the
    CPU-seconds (the latter unaffected by other work on a shared machine)."""
    started = time.perf_counter()
    child = subprocess.Popen(["nice", *args], stdout=stdout, stderr=subprocess.PIPE, text=True)
    peak, cpu = [0.0], {}

    def sample():
        while child.poll() is None:
            pids = _descendants(child.pid)
            peak[0] = max(peak[0], _pss_mb(pids))
            cpu.update({p: max(cpu.get(p, 0.0), _cpu_seconds(p)) for p in pids})
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = child.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if child.returncode not in (0, 1):  # 1: some files could not be read, as intended
        raise SystemExit(f"{' '.join(args)} failed with code {child.returncode}: {err.strip()[-600:]}")
    return {"seconds": round(wall, 2), "cpu_seconds": round(sum(cpu.values()), 2), "peak_pss_mb": round(peak[0]),
            "load_average_after": os.getloadavg()[0]}


# ---------------------------------------------------------------------------------------------- steps

def same_answers(folder: Path, out: Path) -> dict:
    import pyarrow.parquet as pq

    from mnist_classifier.predict import Predictor, collect_images

    run = run_tree_measured([*CLI, "predict", "--engine", "ray", str(folder), "--parquet", str(out)])
    ray_rows = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    local = {p.path: p for p in Predictor().predict_many(collect_images([str(folder)]))}
    assert set(ray_rows) == set(local), "the engines read different files"
    differ = [p for p, r in ray_rows.items()
              if (r["digit"], r["error"], r["reason"]) != (local[p].digit, local[p].error, local[p].reason)]
    gap = max(float(np.abs(np.array(r["probabilities"]) - local[p].probabilities).max()) for p, r in ray_rows.items())
    return {"files": len(local), "errors": sum(r["error"] is not None for r in ray_rows.values()),
            "rows_differing": len(differ), "max_probability_difference": gap,
            "same_answers": not differ and gap <= 1e-6, "ray_run": run}


def throughput(folder: Path, out: Path, n: int) -> dict:
    local = run_tree_measured([*CLI, "predict", str(folder), "--json", "--quiet"])
    ray = run_tree_measured([*CLI, "predict", "--engine", "ray", str(folder), "--parquet", str(out)])
    for run in (local, ray):
        run["images_per_s"] = round(n / run["seconds"], 1)
    return {"n": n, "local": local, "ray": ray, "ray_vs_local": round(local["seconds"] / ray["seconds"], 3),
            "ray_vs_local_by_cpu_seconds": round(local["cpu_seconds"] / ray["cpu_seconds"], 3)}


def per_image_costs(paths: list[str]) -> dict:
    """One core, no Ray: reading+decoding+normalizing, and classifying (the Ray tasks' and actors' work)."""
    import torch

    from mnist_classifier.predict import Predictor
    from mnist_classifier.preprocess import prepare_batch

    torch.set_num_threads(1)
    data = [Path(p).read_bytes() for p in paths[:3000]]
    started = time.process_time()
    prepared = prepare_batch(paths[:3000])  # as a decoding task does: opening the files too
    decode = (time.process_time() - started) / len(data)
    predictor = Predictor(workers=1)
    predictor._classify(paths[:64], prepared[:64])  # warm-up
    started = time.process_time()
    predictor._classify(paths[:3000], prepared)
    classify = (time.process_time() - started) / len(data)
    return {"decode_cpu_s_per_image": decode, "classify_cpu_s_per_image": classify,
            "bytes_per_image": float(np.mean([len(d) for d in data]))}


def ray_startup() -> dict:
    """Starting a local Ray (and importing it and the package), then shutting it down, in a fresh process."""
    code = "from mnist_classifier import distributed; distributed.start()"
    return run_tree_measured([sys.executable, "-c", code])


def estimate(costs: dict, small: dict, large: dict, startup: dict) -> dict:
    """Ray's cost as a fixed part and a part per image, from two measured jobs (the answers check and the
    throughput run): the per-image part beyond decoding and classifying is Ray's own. Then N nodes, with the
    per-image work spread evenly over every core and the fixed part paid once."""
    per_image = (large["cpu_seconds"] - small["cpu_seconds"]) / (large["n"] - small["n"])
    fixed_cpu = large["cpu_seconds"] - per_image * large["n"]
    work = costs["decode_cpu_s_per_image"] + costs["classify_cpu_s_per_image"]
    table = []
    for nodes in NODES:
        for node_cores in (2, 16):
            rate = nodes * node_cores / per_image
            table.append({"nodes": nodes, "cores_per_node": node_cores, "images_per_s": round(rate),
                          "million_images_minutes": round((startup["seconds"] + 1e6 / rate) / 60, 1),
                          "storage_mb_per_s": round(rate * costs["bytes_per_image"] / 1e6, 2)})
    return {"cpu_s_per_image": per_image, "work_cpu_s_per_image": work,
            "ray_overhead_cpu_s_per_image": per_image - work, "overhead_share": (per_image - work) / per_image,
            "fixed_cpu_s": fixed_cpu, "startup": startup, "nodes": table}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="PNGs in the throughput run")
    parser.add_argument("--check", type=int, default=10_000, help="MNIST test digits in the answers check")
    args = parser.parse_args(argv)
    from mnist_classifier.data import load_mnist

    data = load_mnist(os.environ.get("MNIST_DATA"), progress=False)
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        tmp = Path(tmp)
        paths = write_test_pngs(data.test_images[:args.check], tmp / "check")
        add_samples_and_bad_files(tmp / "check")
        results = {"machine": machine_info(), "targets": TARGETS}
        results["same_answers"] = same_answers(tmp / "check", tmp / "check_out")
        print("same answers:", results["same_answers"], flush=True)
        results["throughput"] = throughput(tile(paths, tmp / "many", args.n), tmp / "many_out", args.n)
        print("throughput:", results["throughput"], flush=True)
        results["costs"] = per_image_costs(paths)
        small = {"n": results["same_answers"]["files"], **results["same_answers"]["ray_run"]}
        large = {"n": args.n, **results["throughput"]["ray"]}
        results["scaling"] = estimate(results["costs"], small, large, ray_startup())
        print("scaling:", results["scaling"], flush=True)
    write_result("ray", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

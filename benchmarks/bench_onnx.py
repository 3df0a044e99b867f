"""The torch and onnx engines side by side: cold start of `predict one.png`, and in-memory throughput by batch size.

    MNIST_DATA=../shared/mnist .venv/bin/python benchmarks/bench_onnx.py            # -> benchmarks/results/onnx.json
    MNIST_DATA=../shared/mnist .venv/bin/python benchmarks/bench_onnx.py --runs 7 --seconds 3

Cold start: the real CLI in a fresh process, process start to exit, reading one image, the median of
--runs: on the default engine (auto, which runs the shipped model's shipped export on onnxruntime), on
torch, on onnx with an exported .onnx file, and once with a .safetensors model of one's own from an empty
cache (exported on the fly). The same reading is also timed from Python (`Predictor(...).predict`), which
imports no more than the engine needs, to show what the engine itself costs apart from the CLI.
Throughput: the shipped model on MNIST test digits held in memory, batches of 1, 64 and 1,024, each engine
in this process, for --seconds per figure. Beside it, the arithmetic ceiling: the model's multiply-adds
per digit, and how many digits a second this machine's float32 matrix multiply (torch, every core) could
feed at that count if convolutions ran as fast as one large matmul. Prints a table and writes JSON;
asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, run_measured, write_result  # noqa: E402
from mnist_classifier.engines import pretrained_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ONE_IMAGE = ROOT / "assets" / "sample_digits" / "paper_7.png"  # a photographed digit, as a user has one
BATCHES = (1, 64, 1024)
PYTHON_READ = ("import sys; from mnist_classifier.predict import Predictor; "
               "p = Predictor({model!r}, engine={engine!r}, workers=1).predict({image!r}); "
               "print(p.digit, 'torch' in sys.modules)")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_start(label: str, module_args: list[str], runs: int, env: dict) -> dict:
    """Wall seconds (and CPU seconds, which a busy machine distorts less) of a fresh `python -m` process."""
    walls, cpus, peaks = [], [], []
    for _ in range(runs):
        cpu = children_cpu()
        wall, peak_mb, _ = run_measured(module_args, env=env)
        walls.append(wall)
        cpus.append(children_cpu() - cpu)
        peaks.append(peak_mb)
    row = {"what": label, "command": "python -m " + " ".join(module_args),
           "median_seconds": round(statistics.median(walls), 3), "runs_seconds": [round(w, 3) for w in walls],
           "median_cpu_seconds": round(statistics.median(cpus), 3), "peak_rss_mb": round(statistics.median(peaks), 1)}
    print(f"  {label:<52} {row['median_seconds']:6.2f} s  cpu {row['median_cpu_seconds']:5.2f} s  "
          f"{row['peak_rss_mb']:5.0f} MB", flush=True)
    return row


def cold_starts(onnx_file: Path, runs: int) -> list[dict]:
    cache = tempfile.mkdtemp(prefix="bench-onnx-cache-")
    env = {**os.environ, "XDG_CACHE_HOME": cache}
    predict = ["mnist_classifier.cli", "predict", str(ONE_IMAGE), "--json"]
    print(f"cold start, process start to exit (median of {runs}):")
    own_model = Path(cache) / "own.safetensors"  # a .safetensors model of one's own: no export ships with it
    own_model.write_bytes(pretrained_path().read_bytes())
    rows = [cold_start("CLI, onnx, own .safetensors exported on the fly (empty cache)",
                       [*predict, "--engine", "onnx", "--model", str(own_model)], 1, env),
            cold_start("CLI, torch", [*predict, "--engine", "torch"], runs, env),
            cold_start("CLI, onnx, exported .onnx file", [*predict, "--engine", "onnx", "--model", str(onnx_file)],
                       runs, env),
            cold_start("CLI, default engine (auto: onnx), shipped model", predict, runs, env)]
    for engine, model in (("torch", None), ("onnx", str(onnx_file))):
        rows.append(python_cold_start(engine, model, runs, env))
    return rows


def python_cold_start(engine: str, model, runs: int, env: dict) -> dict:
    """One image read from Python in a fresh process, and whether torch was imported on the way."""
    code = PYTHON_READ.format(model=model, engine=engine, image=str(ONE_IMAGE))
    walls, cpus = [], []
    for _ in range(runs):
        cpu, started = children_cpu(), time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
        walls.append(time.perf_counter() - started)
        cpus.append(children_cpu() - cpu)
    label = f"Python Predictor, {engine}" + (", exported .onnx file" if model else "")
    row = {"what": label, "command": f"python -c {code!r}", "median_seconds": round(statistics.median(walls), 3),
           "runs_seconds": [round(w, 3) for w in walls], "median_cpu_seconds": round(statistics.median(cpus), 3),
           "imports_torch": out.split()[-1] == "True"}
    print(f"  {label:<52} {row['median_seconds']:6.2f} s  cpu {row['median_cpu_seconds']:5.2f} s  "
          f"imports torch: {row['imports_torch']}", flush=True)
    return row


def throughput(engine, images, batch: int, seconds: float) -> dict:
    """Images/s and the median milliseconds of one call, calling the engine on batches for ``seconds``."""
    engine.probabilities(images[:batch])  # warm-up: kernels are chosen on the first call
    calls, done, started, cpu = [], 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        start = (done * batch) % (len(images) - batch)
        begun = time.perf_counter()
        engine.probabilities(images[start:start + batch])
        calls.append(time.perf_counter() - begun)
        done += 1
    cpu = time.process_time() - cpu
    return {"batch": batch, "images_per_second": round(batch * len(calls) / sum(calls)),
            "ms_per_call_median": round(1000 * statistics.median(calls), 3), "calls": len(calls),
            "cpu_ms_per_image": round(1000 * cpu / (batch * len(calls)), 4)}


def throughputs(onnx_file: Path, seconds: float, threads: int | None) -> dict:
    """Per engine, images/s by batch size; ``threads`` None: each engine's default (torch's, every core)."""
    import torch

    from mnist_classifier.data import load_mnist
    from mnist_classifier.engines import available_cores, open_engine

    images = load_mnist(progress=False).test_images
    default_torch_threads = torch.get_num_threads()
    engines = {"torch": open_engine("torch", threads=threads), "onnx": open_engine("onnx", onnx_file, threads=threads)}
    result = {"threads": {"torch": threads or default_torch_threads, "onnx": threads or available_cores()}}
    print(f"in-memory throughput, shipped model, threads {result['threads']} ({seconds:.0f} s per figure):")
    for name, engine in engines.items():
        result[name] = [throughput(engine, images, batch, seconds) for batch in BATCHES]
        for row in result[name]:
            print(f"  {name:<6} batch {row['batch']:>5}: {row['images_per_second']:>8,} images/s   "
                  f"{row['ms_per_call_median']:8.3f} ms per call   cpu {row['cpu_ms_per_image']:.4f} ms per image",
                  flush=True)
    torch.set_num_threads(default_torch_threads)
    return result


def multiply_adds_per_digit(model) -> int:
    """Multiply-adds of one digit through every convolution and linear layer (what dominates a CNN's work)."""
    import torch

    counted = []

    def count(layer, inputs, output):  # each output value costs in_channels / groups * kernel area (or in_features)
        counted.append(output[0].numel() * layer.weight[0].numel())

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return sum(counted)


def arithmetic_ceiling(seconds: float) -> dict:
    """The shipped model's multiply-adds per digit against the machine's float32 matmul rate (torch)."""
    import torch

    from mnist_classifier.persist import load_model

    macs = multiply_adds_per_digit(load_model(pretrained_path()).model.eval())
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b  # warm-up
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    rate = runs * 1024 ** 3 / (time.perf_counter() - started)
    result = {"multiply_adds_per_digit": macs, "matmul_gmacs_per_second": round(rate / 1e9, 1),
              "digits_per_second_at_matmul_rate": round(rate / macs), "threads": torch.get_num_threads()}
    print(f"arithmetic ceiling: {macs / 1e6:.2f} M multiply-adds per digit; float32 matmul "
          f"{result['matmul_gmacs_per_second']} GMAC/s -> at most {result['digits_per_second_at_matmul_rate']:,} "
          f"digits/s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="cold starts per figure (the median is reported)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per throughput figure")
    parser.add_argument("--only", choices=["cold", "throughput"], help="measure just one of the two")
    args = parser.parse_args()

    from mnist_classifier.onnx_export import export_model

    with tempfile.TemporaryDirectory() as folder:
        onnx_file = Path(folder) / "digits.onnx"
        export = export_model(None, onnx_file)
        load_before = os.getloadavg()
        result = {"machine": machine_info(), "load_average_before": [round(x, 2) for x in load_before],
                  "image": str(ONE_IMAGE.relative_to(ROOT)), "onnx_bytes": export["bytes"]}
        kept = _previous()
        result["cold_start"] = cold_starts(onnx_file, args.runs) if args.only != "throughput" else kept.get("cold_start")
        # One thread each as well: on a shared machine a multi-threaded call waits for its slowest thread.
        result["throughput"] = ([throughputs(onnx_file, args.seconds, threads) for threads in (None, 1)]
                                if args.only != "cold" else kept.get("throughput"))
        result["ceiling"] = arithmetic_ceiling(args.seconds) if args.only != "cold" else kept.get("ceiling")
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    write_result("onnx", result)


def _previous() -> dict:
    """The last result file, whose other half a partial run (--only) keeps."""
    import json

    from _machine import RESULTS

    path = RESULTS / "onnx.json"
    return json.loads(path.read_text()) if path.is_file() else {}


if __name__ == "__main__":
    main()

"""How long `mnist-classifier report` takes for the shipped model (target: <= 20 s on 2 cores).

    python benchmarks/bench_report.py [--repeat 3] [--model MODEL] [--data-dir DIR]

Two measurements:
- end to end: the real command in a fresh process (interpreter start, imports, model and MNIST loading,
  scoring the 10,000 test digits, every figure, the page) -- what a user waits for;
- in process: the same work with imports already paid, split into steps (load, evaluate, each figure,
  html) to show where the time goes.
Prints a table and writes benchmarks/results/report.json. Never asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, write_result  # noqa: E402

TARGET_SECONDS = 20.0


def end_to_end(model, data_dir, out: Path) -> float:
    command = [sys.executable, "-m", "mnist_classifier.cli", "report", "--out", str(out), "--json"]
    command += [model] if model else []
    command += ["--data-dir", data_dir] if data_dir else []
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"bench_report.py: the report command failed: {proc.stderr.strip()}")
    json.loads(proc.stdout)  # it printed its JSON
    return seconds


def in_process(model, data_dir, out: Path) -> tuple[float, dict]:
    import matplotlib.backends.backend_agg  # noqa: F401  (imports are paid before the clock starts)
    import sklearn.metrics  # noqa: F401

    from mnist_classifier.report import build_report

    started = time.perf_counter()
    report = build_report(model, out, data_dir=data_dir)
    return time.perf_counter() - started, report.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default=None, help="default: the shipped pretrained model")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA"))
    args = parser.parse_args()

    from mnist_classifier.persist import pretrained_path, read_metadata

    with tempfile.TemporaryDirectory() as tmp:
        cold = [end_to_end(args.model, args.data_dir, Path(tmp) / f"e2e{i}") for i in range(args.repeat)]
        warm_runs = [in_process(args.model, args.data_dir, Path(tmp) / f"warm{i}") for i in range(args.repeat)]
    warm = [seconds for seconds, _ in warm_runs]
    steps = {name: round(statistics.median(run[1][name] for run in warm_runs), 3) for name in warm_runs[0][1]}

    result = {
        "benchmark": "report",
        "model": args.model or "shipped pretrained model",
        "architecture": read_metadata(args.model or pretrained_path())["architecture"],
        "target_seconds": TARGET_SECONDS,
        "end_to_end_seconds": {"median": round(statistics.median(cold), 2), "runs": [round(s, 2) for s in cold]},
        "in_process_seconds": {"median": round(statistics.median(warm), 2), "runs": [round(s, 2) for s in warm]},
        "steps_seconds_median": steps,
        "meets_target": statistics.median(cold) <= TARGET_SECONDS,
        "load_average_at_end": list(os.getloadavg()),
        "machine": machine_info(),
    }
    print(f"report of {result['model']}: end to end {result['end_to_end_seconds']['median']:.1f} s "
          f"(target <= {TARGET_SECONDS:.0f} s), in process {result['in_process_seconds']['median']:.1f} s")
    for name, seconds in sorted(steps.items(), key=lambda item: -item[1]):
        print(f"  {name:22s} {seconds:6.2f} s")
    write_result("report", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

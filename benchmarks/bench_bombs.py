"""Hostile images: what one pixel bomb costs the CLI, from process start to exit.

    python benchmarks/bench_bombs.py            # writes benchmarks/results/bombs.json

Each file is small on disk and huge when decoded: a digit drawn on a 9459x9459 canvas (just under
Pillow's own decompression-bomb limit), as RGBA and grey PNG and as JPEG. Every case runs
``mnist-classifier predict FILE --json`` in a fresh process and records its wall time, its own peak
memory (VmHWM), the peak and CPU time that wait4 reports for it (what ``/usr/bin/time -v`` prints;
CPU time is the steadier figure on a shared machine), and the answer: a digit, or the one-line error. The files are made by a separate process so that the
benchmark's own memory never counts towards a measured command's. Never asserts: the targets are
listed next to the figures.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _machine import _PEAK_PREAMBLE, machine_info, write_result  # noqa: E402
from mnist_classifier.preprocess import MAX_PIXELS  # noqa: E402

SIDE = 9459  # 89.47 million pixels: the largest square Pillow opens without a warning
TARGETS = {"peak_rss_mb": "<= 600 (or a one-line refusal)", "wall_s": "<= 3 (or a one-line refusal)"}

# (name, Pillow mode, file format): the canvas is filled from a small pattern, so the files stay small.
# small.png is the yardstick: what the CLI costs for an ordinary image (start-up, model, one digit);
# at_limit.png is the costliest image the default pixel budget accepts (square RGBA, the widest mode).
CASES = [("small.png", "L", "PNG"), ("at_limit.png", "RGBA", "PNG"), ("rgba.png", "RGBA", "PNG"),
         ("gray.png", "L", "PNG"), ("photo.jpg", "RGB", "JPEG")]

_MAKE = """
import sys
from PIL import Image, ImageDraw
big, at_limit, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for name, mode, fmt in [tuple(c.split(':')) for c in sys.argv[4:]]:
    side = {'small.png': 200, 'at_limit.png': at_limit}.get(name, big)
    paper = {'RGBA': (0, 0, 0, 0), 'L': 235, 'RGB': (235, 230, 220)}[mode]
    ink = {'RGBA': (0, 0, 0, 255), 'L': 20, 'RGB': (20, 20, 30)}[mode]
    canvas = Image.new(mode, (side, side), paper)
    draw = ImageDraw.Draw(canvas)  # a 7 across most of the canvas
    draw.line([(side // 5, side // 5), (4 * side // 5, side // 5), (2 * side // 5, 4 * side // 5)],
              fill=ink, width=side // 12)
    canvas.save(f'{folder}/{name}', fmt, **({'quality': 90} if fmt == 'JPEG' else {}))
    del canvas, draw
"""


def make_files(folder: Path) -> None:
    specs = [f"{name}:{mode}:{fmt}" for name, mode, fmt in CASES]
    at_limit = math.isqrt(MAX_PIXELS)
    subprocess.run([sys.executable, "-c", _MAKE, str(SIDE), str(at_limit), str(folder), *specs], check=True)


def measure(path: Path, env: dict) -> dict:
    """One ``predict FILE --json`` run: wall time, peaks, and the row it printed."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", _PEAK_PREAMBLE, "mnist_classifier.cli", "predict",
                                  str(path), "--json"], stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(child.pid, 0)  # reaped here, so its rusage is its own
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        printed, said = out.read(), err.read().splitlines()
    peaks = [int(line.split()[1]) for line in said if line.startswith("peak_rss_kb ")]
    row = json.loads(printed)[0] if printed.strip().startswith("[") else {}
    return {"file_kb": round(path.stat().st_size / 1024, 1), "wall_s": round(wall, 2),
            "peak_rss_mb": round(peaks[-1] / 1024, 1) if peaks else None,
            "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "exit_code": child.returncode,
            "digit": row.get("digit"), "error": row.get("error"),
            "stderr": [line for line in said if not line.startswith("peak_rss_kb ")][:3]}


def main() -> None:
    results: dict = {"side": SIDE, "targets": TARGETS, "max_pixels_env": os.environ.get("MNIST_CLASSIFIER_MAX_PIXELS"),
                     "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_files(folder)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        for name, _, _ in CASES:
            results["cases"][name] = row = measure(folder / name, env)
            print(f"{name:10s} {row['file_kb']:8.1f} KB  {row['wall_s']:5.2f} s (cpu {row['cpu_s']:5.2f} s)  peak {row['peak_rss_mb']} MB "
                  f"(wait4 {row['ru_maxrss_mb']} MB)  digit={row['digit']}  error={row['error']}")
    results["machine"] = machine_info()  # imports torch: only after the measured runs, which inherit no peak
    write_result(os.environ.get("BENCH_NAME", "bombs"), results)


if __name__ == "__main__":
    main()

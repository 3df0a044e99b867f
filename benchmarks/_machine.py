"""Shared by the benchmark scripts: describe the machine, run a command and measure it, write a result file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# Measured commands run under this preamble, which prints the process's own peak memory (VmHWM) on stderr
# as it exits. wait4's ru_maxrss will not do: on Linux a child's figure starts at its parent's peak (exec
# keeps the high-water mark of the address space it replaces), so a benchmark holding MNIST and a model
# would pass its own size on to every command it measures.
_PEAK_PREAMBLE = """
import atexit, runpy, sys
def report_peak():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                sys.stderr.write('peak_rss_kb ' + line.split()[1] + '\\n')
atexit.register(report_peak)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_result(name: str, result: dict) -> Path:
    """benchmarks/results/<name>.json, written via a temp file so a crash never leaves half a result."""
    from mnist_classifier.atomic import write_text

    target = write_text(RESULTS / f"{name}.json", json.dumps(result, indent=2) + "\n")
    print(f"wrote {target}")
    return target


def run_measured(module_args: list[str], stdout=subprocess.PIPE, env: dict | None = None) -> tuple[float, float, str]:
    """Run ``python -m MODULE ARGS...`` in a fresh process: (wall seconds, its own peak RSS in MB, its stdout
    when piped). Raises SystemExit with the command's last words if it fails."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _PEAK_PREAMBLE, *module_args], stdout=stdout,
                             stderr=subprocess.PIPE, text=True, env=env)
    out, err = child.communicate()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"python -m {' '.join(module_args)} failed with code {child.returncode}: {err.strip()[-400:]}")
    peaks = [int(line.split()[1]) for line in err.splitlines() if line.startswith("peak_rss_kb ")]
    return wall, peaks[-1] / 1024, out

"""Shared by the benchmark scripts: describe the machine, and write a result file atomically."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


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

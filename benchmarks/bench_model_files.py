"""Hostile model files: what loading each costs before it is refused.

    python benchmarks/bench_model_files.py      # writes benchmarks/results/model_files.json

Each bad file is loaded in a fresh process (``persist.load_model``) after torch and the package are
imported; recorded are the seconds the load took, how far it raised the process's peak memory (VmHWM)
above what the imports had already reached, and the one-line message. Never asserts: the targets are
listed next to the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _machine import machine_info, write_result  # noqa: E402

TARGETS = {"seconds": "< 1", "extra_peak_mb": "< 100", "message": "one line naming the file"}

_MAKE = """
import json, sys, torch
from safetensors.torch import save_file
from mnist_classifier.models import build_model
folder = sys.argv[1]
def write(name, meta, tensors):
    save_file(tensors, f"{folder}/{name}", metadata={"mnist_classifier": json.dumps(meta)})
def weights(arch, **config):
    torch.manual_seed(0)
    return {k: v.detach().clone().contiguous() for k, v in build_model(arch, **config).state_dict().items()}
meta = lambda arch, **config: {"format_version": 1, "architecture": arch, "config": config}
mlp = weights("mlp")
write("channels_abc.safetensors", meta("cnn-fast", channels="abc"), weights("cnn-fast"))
write("hidden_1e6.safetensors", meta("mlp", hidden_layers=[1e6]), mlp)
write("hidden_1e8.safetensors", meta("mlp", hidden_layers=[1e8]), mlp)
write("hidden_int_1e6.safetensors", meta("mlp", hidden_layers=[10**6]), mlp)
write("hidden_int_1e8.safetensors", meta("mlp", hidden_layers=[10**8]), mlp)
write("all_nan.safetensors", meta("cnn-fast"), {k: v.fill_(float("nan")) if v.is_floating_point() else v
                                                for k, v in weights("cnn-fast").items()})
write("float64.safetensors", meta("mlp"), {k: v.double() for k, v in mlp.items()})
write("ensemble_member_1e8.safetensors",
      meta("ensemble", members=[{"architecture": "mlp", "config": {"hidden_layers": [1e8]}}]), mlp)
torch.save(mlp, f"{folder}/pickle.safetensors")
good = f"{folder}/good.safetensors"
write("good.safetensors", meta("mlp"), mlp)
data = open(good, "rb").read()
open(f"{folder}/truncated.safetensors", "wb").write(data[: len(data) // 2])
"""

_LOAD = """
import json, sys, time
import torch
from mnist_classifier.persist import load_model
def peak_kb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1])
before, started = peak_kb(), time.perf_counter()
try:
    load_model(sys.argv[1])
    message = None
except Exception as exc:
    message = f"{type(exc).__name__}: {exc}"
print(json.dumps({"seconds": round(time.perf_counter() - started, 3),
                  "extra_peak_mb": round((peak_kb() - before) / 1024, 1), "message": message}))
"""


def main() -> None:
    src = os.environ.get("BENCH_SRC", str(ROOT / "src"))  # another checkout's src measures that version
    env = {**os.environ, "PYTHONPATH": src}
    results: dict = {"src": src, "targets": TARGETS, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", _MAKE, tmp], check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        for path in sorted(Path(tmp).glob("*.safetensors")):
            if path.name == "good.safetensors":
                continue
            try:
                done = subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True,
                                      env=env, timeout=120)
                row = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {
                    "message": f"crashed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"}
            except subprocess.TimeoutExpired:
                row = {"message": "still loading after 120 s"}
            if row.get("message"):
                row["message"] = row["message"].replace(tmp + "/", "")
                row["lines"] = len(row["message"].splitlines())
            results["cases"][path.name] = row
            print(f"{path.name:34s} {row.get('seconds', '-')!s:>7} s  +{row.get('extra_peak_mb', '-')} MB  {row['message']}")
    results["machine"] = machine_info()
    write_result(os.environ.get("BENCH_NAME", "model_files"), results)


if __name__ == "__main__":
    main()

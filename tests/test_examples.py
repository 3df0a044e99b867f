"""The example scripts run as a user would run them: as separate processes, printing what they promise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name, *args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def assert_png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert min(image.size) > 500


@pytest.mark.slow
def test_example_trains_evaluates_saves_and_draws(tmp_path, mnist_dir):
    proc = run_example("example.py", "--dry-run", "--quiet", "--data-dir", mnist_dir, "--output-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", proc.stdout).group(1))
    assert accuracy > 70  # 2,000 training digits, one epoch
    assert (tmp_path / "cnn-fast.safetensors").is_file()
    for name in ("training_history.png", "confusion_matrix.png", "predictions.png"):
        assert f"figure: {tmp_path / name}" in proc.stdout
        assert_png(tmp_path / name)


def test_example_reports_a_missing_data_folder_in_one_line(tmp_path):
    proc = run_example("example.py", "--data-dir", tmp_path / "no-mnist", "--output-dir", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("example.py: error: ") and len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture
def own_images(mnist, tmp_path):
    """A digit written in dark ink on light paper, a blank page, and a file that is not an image."""
    ink = np.asarray(Image.fromarray(mnist.test_images[1]).resize((180, 180), Image.BILINEAR)) / 255.0  # a 2
    paper = np.full((260, 320), 225.0)
    paper[40:220, 70:250] -= ink * 190
    Image.fromarray(paper.astype(np.uint8)).save(tmp_path / "two.jpg", quality=90)
    Image.new("L", (100, 100), 250).save(tmp_path / "blank.png")
    (tmp_path / "notes.png").write_text("not an image")
    return tmp_path


def test_classify_custom_images(own_images, tmp_path):
    out = tmp_path / "figures"
    proc = run_example("classify_custom_images.py", own_images, "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert re.match(r"two\.jpg\s+2\s+\d+\.\d%", lines["two.jpg"]), lines["two.jpg"]
    assert "no digit" in lines["blank.png"]
    assert "error:" in lines["notes.png"] and "notes.png" in lines["notes.png"].split("error:")[1]
    assert "1 of 3 images read\n" in proc.stdout
    assert_png(out / "custom_predictions.png")


def test_classify_the_sample_images(tmp_path):
    """The default run: every sample image in assets/sample_digits/ read as its labels.json says."""
    samples = ROOT / "assets" / "sample_digits"
    labels = json.loads((samples / "labels.json").read_text())
    proc = run_example("classify_custom_images.py", "--output-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    for name, expected in labels.items():
        assert lines[name].endswith("ok"), lines[name]
        if isinstance(expected, str) and len(expected) > 1:
            assert f"number {expected}" in lines[name]
    assert f"{len(labels)} of {len(labels)} as labelled" in proc.stdout
    assert_png(tmp_path / "custom_predictions.png")


def test_classify_custom_images_without_any_image(tmp_path):
    proc = run_example("classify_custom_images.py", tmp_path / "empty-*.png")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"classify_custom_images.py: error: no images found in {tmp_path / 'empty-*.png'}"

"""`mnist-classifier predict`: table, --json and --csv contracts, exit codes, folders, --number."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_classifier.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "sample_digits"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, mnist):
    root = tmp_path_factory.mktemp("predict_cli")
    for i in range(6):
        Image.fromarray(mnist.test_images[i]).save(root / f"digit_{i}.png")
    (root / "nested").mkdir()
    Image.fromarray(255 - mnist.test_images[6]).save(root / "nested" / "inverted.JPG", quality=95)
    return root


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_contract(capsys, folder, mnist):
    code, out, _ = run(capsys, folder, "--json")
    assert code == 0
    rows = json.loads(out)
    assert [Path(r["path"]).name for r in rows] == [f"digit_{i}.png" for i in range(6)]
    for row, label in zip(rows, mnist.test_labels[:6]):
        assert row["digit"] == int(label) and row["error"] is None
        assert 0.0 <= row["confidence"] <= 1.0 and len(row["probabilities"]) == 10


def test_recursive_and_extension_filter(capsys, folder):
    _, out, _ = run(capsys, folder, "--json", "--recursive")
    assert len(json.loads(out)) == 7
    _, out, _ = run(capsys, folder, "--json", "--recursive", "--ext", "jpg")
    rows = json.loads(out)
    assert [Path(r["path"]).name for r in rows] == ["inverted.JPG"] and rows[0]["digit"] is not None


def test_table_csv_and_exit_code_with_bad_files(capsys, folder, tmp_path, mnist):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    out_csv = tmp_path / "out" / "results.csv"
    code, out, err = run(capsys, folder / "digit_0.png", bad, empty, "--csv", out_csv)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["path", "digit", "confidence"]
    by_name = {Path(line.split()[0]).name: line for line in lines[1:]}
    assert "truncated or corrupt image data" in by_name["broken.png"] or "not an image" in by_name["broken.png"]
    assert by_name["empty.jpg"].endswith("  empty file (0 bytes)")  # the path once, in its column
    assert out.count("empty.jpg") == 1
    assert "2 of 3 files could not be read" in err
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [str(folder / "digit_0.png"), str(bad), str(empty)]
    assert rows[0]["digit"] == str(mnist.test_labels[0]) and rows[0]["error"] == ""
    assert float(rows[0]["confidence"]) == pytest.approx(max(float(rows[0][f"p{d}"]) for d in range(10)))
    assert rows[1]["digit"] == "" and rows[1]["error"].startswith(str(bad))
    assert not list(out_csv.parent.glob(".*.part"))  # the temp file was renamed, not left behind


def test_json_array_is_written_one_row_per_line(capsys, folder):
    _, out, _ = run(capsys, folder, "--json")
    lines = out.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 6 + 2
    assert all(line.startswith('{"path":') for line in lines[1:-1])
    assert [json.loads(line.rstrip(","))["path"] for line in lines[1:-1]] == [r["path"] for r in json.loads(out)]


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path, mnist):
    for i in range(800):  # enough rows to overflow the pipe's buffer
        Image.fromarray(mnist.test_images[i]).save(tmp_path / f"{i:04d}.png")
    command = [sys.executable, "-m", "mnist_classifier.cli", "predict", str(tmp_path), "--json", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.read(200).startswith(b'[\n{"path":')
    process.stdout.close()  # like `| head`
    assert process.wait(timeout=120) == 141
    assert process.stderr.read() == b""


def test_ctrl_c_stops_with_one_line(tmp_path, mnist):
    digit = tmp_path / "digit.png"
    Image.fromarray(mnist.test_images[0]).save(digit)
    for i in range(20000):  # quick to decode: the workers mostly wait for work, as on a big folder
        os.link(digit, tmp_path / f"copy_{i:05d}.png")
    command = [sys.executable, "-m", "mnist_classifier.cli", "predict", str(tmp_path), "--csv", str(tmp_path / "out.csv")]
    # A terminal's foreground job gets Ctrl-C's default action, even where this test runs as a background
    # job of a shell without job control, which starts its children with SIGINT ignored.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + 60
    while not children.read_text().strip() and time.monotonic() < deadline:  # the decoding workers started
        time.sleep(0.01)
    time.sleep(0.3)  # and are busy
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    assert process.wait(timeout=60) == 130
    assert process.stderr.read().decode() == "mnist-classifier predict: interrupted\n"
    assert not (tmp_path / "out.csv").exists() and not list(tmp_path.glob(".out.csv*"))  # no half-written CSV


def test_json_errors_and_no_digit(capsys, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(blank)
    (tmp_path / "dir.jpg").mkdir()  # found in the folder by its extension: reported, not skipped
    code, out, _ = run(capsys, tmp_path, "--json")
    rows = json.loads(out)
    assert code == 1
    assert [Path(r["path"]).name for r in rows] == ["blank.png", "dir.jpg"]
    assert rows[0]["digit"] is None and rows[0]["reason"] and rows[0]["error"] is None
    assert rows[1]["error"] == f"{tmp_path / 'dir.jpg'}: is a directory, not an image"


def test_number_mode(capsys, tmp_path):
    code, out, _ = run(capsys, SAMPLES / "number_2026.jpg", "--number", "--json", "--csv", tmp_path / "n.csv")
    assert code == 0
    row = json.loads(out)[0]
    assert row["number"] == "2026" and row["digit"] is None and len(row["digits"]) == 4
    assert all(len(d["box"]) == 4 for d in row["digits"])
    with open(tmp_path / "n.csv", newline="") as fh:
        assert list(csv.DictReader(fh))[0]["number"] == "2026"
    code, out, _ = run(capsys, SAMPLES / "number_2026.jpg", "--number")
    assert "2026" in out.splitlines()[2]


def test_top_k_threshold_and_options(capsys, folder):
    _, out, _ = run(capsys, folder / "digit_1.png", "--json", "--top-k", "5", "--threshold", "1.0")
    row = json.loads(out)[0]
    assert len(row["top_k"]) == 5 and row["uncertain"] is True
    _, out, _ = run(capsys, folder / "digit_1.png", "--threshold", "1.0")
    assert out.splitlines()[2].endswith("uncertain")
    assert main(["predict", str(folder), "--threshold", "2"]) == 1
    assert "threshold must be between 0 and 1, got 2.0" in capsys.readouterr().err


def test_nothing_found_is_one_line_error(capsys, tmp_path):
    assert main(["predict", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mnist-classifier predict: error: no images found: ") and "\n" not in err


def test_nothing_found_says_why_for_each_path(capsys, tmp_path):
    """A glob that matches nothing is not blamed on the extensions; a folder whose images are in subfolders
    points at --recursive."""
    (tmp_path / "scans" / "2024").mkdir(parents=True)
    (tmp_path / "scans" / "2024" / "a.png").write_bytes(b"")
    (tmp_path / "scans" / "notes.txt").write_text("")
    assert main(["predict", str(tmp_path / "scans"), str(tmp_path / "*.tif"), "--ext", "png,jpg"]) == 1
    assert capsys.readouterr().err == (
        f"mnist-classifier predict: error: no images found: {tmp_path / 'scans'} holds no file named *.{{png,jpg}} "
        f"(its subfolders are read with --recursive); {tmp_path / '*.tif'} matches no file\n")
    assert main(["predict", str(tmp_path / "scans"), "-r", "--ext", "tif"]) == 1
    assert capsys.readouterr().err == (
        f"mnist-classifier predict: error: no images found: {tmp_path / 'scans'} holds no file named *.{{tif}}\n")


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "mnist_classifier.cli", "predict", "--help"],
                            capture_output=True, text=True, check=True)
    for option in ("--json", "--csv", "--number", "--recursive", "--ext", "--threshold", "--top-k", "--model"):
        assert option in result.stdout


def test_arrays_in_samples_are_small():
    sizes = [p.stat().st_size for p in SAMPLES.iterdir()]
    assert sum(sizes) < 600_000 and np.max(sizes) < 200_000

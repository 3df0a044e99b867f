"""--engine ray: Ray Data on a local 2-CPU Ray gives the local engine's rows, bad files included, and its
output folder is complete or absent, even when a classifying actor is killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pyarrow.parquet as pq
import ray  # the [ray] extra, which the test command installs

from mnist_classifier import distributed
from mnist_classifier.errors import MNISTClassifierError
from mnist_classifier.formats import CSV_FIELDS, NUMBER_CSV_FIELDS
from mnist_classifier.predict import Predictor, collect_images

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "sample_digits"
N_DIGITS = 2000


@pytest.fixture(scope="module")
def local_ray():
    distributed.start(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, mnist) -> Path:
    """MNIST test digits as PNG, the shipped sample images, and three bad files."""
    out = tmp_path_factory.mktemp("ray_images")
    for i, image in enumerate(mnist.test_images[:N_DIGITS]):
        Image.fromarray(image).save(out / f"{i:05d}.png")
    for sample in SAMPLES.iterdir():
        if sample.suffix != ".json":
            (out / f"sample_{sample.name}").write_bytes(sample.read_bytes())
    (out / "truncated.png").write_bytes((out / "00000.png").read_bytes()[:60])
    (out / "text.png").write_text("this is not an image\n")
    (out / "empty.png").write_bytes(b"")
    return out


@pytest.fixture(scope="module")
def local_rows(folder) -> dict:
    """The local engine's answers, the oracle, by path."""
    paths = collect_images([str(folder)])
    return {p.path: p for p in Predictor(workers=1).predict_many(paths)}


def assert_same(rows, local_rows):
    assert sorted(r["path"] for r in rows) == sorted(local_rows)
    for row in rows:
        expected = local_rows[row["path"]]
        assert (row["digit"], row["error"], row["reason"], row["note"], row["uncertain"]) == \
            (expected.digit, expected.error, expected.reason, expected.note, expected.uncertain), row["path"]
        assert np.abs(np.array(row["probabilities"]) - expected.probabilities).max() <= 1e-6
        assert [row[f"p{d}"] for d in range(10)] == row["probabilities"]
        assert abs(row["confidence"] - expected.confidence) <= 1e-6


def test_rows_equal_the_local_engine_with_bad_files_as_error_rows(local_ray, folder, local_rows):
    rows = distributed.sorted_rows(distributed.predict_files([str(folder)]))
    assert_same(rows, local_rows)
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert errors == {"empty.png": f"{folder / 'empty.png'}: empty file (0 bytes)",
                      "text.png": f"{folder / 'text.png'}: not an image (unrecognised file format)",
                      "truncated.png": local_rows[str(folder / "truncated.png")].error}
    assert "truncated" in errors["truncated.png"]
    digits = [r["digit"] for r in rows if Path(r["path"]).stem.isdigit()]
    assert len(digits) == N_DIGITS and sum(d is not None for d in digits) >= N_DIGITS * 0.98


def test_predict_dataset_on_bytes_read_by_ray(local_ray, folder, local_rows):
    """The Python API over Ray's own reader (as for s3://): the bytes, not the paths, reach the decoders."""
    names = ["00001.png", "empty.png", "text.png", "truncated.png", "sample_number_2026.jpg"]
    ds = ray.data.read_binary_files([str(folder / n) for n in names], include_paths=True)
    rows = distributed.sorted_rows(distributed.predict_dataset(ds))
    assert_same(rows, {str(folder / n): local_rows[str(folder / n)] for n in names})


def test_numbers_match_the_local_engine(local_ray):
    paths = [str(SAMPLES / "number_2026.jpg"), str(SAMPLES / "paper_7.png")]
    rows = distributed.sorted_rows(distributed.predict_files(paths, number=True))
    expected = {r.path: r for r in Predictor(workers=1).read_numbers(paths)}
    assert [r["path"] for r in rows] == sorted(paths)
    for row in rows:
        local = expected[row["path"]]
        assert list(row)[:len(NUMBER_CSV_FIELDS)] == NUMBER_CSV_FIELDS
        assert (row["number"], row["boxes"], row["error"]) == \
            (local.number, " ".join(",".join(map(str, d.box)) for d in local.digits), local.error)
        assert abs(row["confidence"] - local.confidence) <= 1e-6
    assert expected[str(SAMPLES / "number_2026.jpg")].number == "2026"


def test_a_failed_job_leaves_no_output_and_keeps_the_previous_one(local_ray, tmp_path):
    out = tmp_path / "digits"
    out.mkdir()
    (out / "previous.parquet").write_bytes(b"the last complete run")
    no_bytes = ray.data.from_items([{"path": "a.png"}])  # rows without their bytes: every task fails
    with pytest.raises(MNISTClassifierError, match=f"^{out}: nothing written, the job failed"):
        distributed.write_parquet(distributed.predict_dataset(no_bytes), out)
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]
    assert [p.name for p in out.iterdir()] == ["previous.parquet"]


def test_an_unwritable_destination_fails_before_any_work(local_ray, folder, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "digits"
    with pytest.raises(MNISTClassifierError, match=f"^{out}: nothing written"):
        distributed.write_parquet(distributed.predict_files([str(folder / "00000.png")]), out)
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


def _classifier_pids() -> set[int]:
    """Ray names each worker process after what it runs: ``ray::MapWorker(MapBatches(Classifier))``."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::") and b"Classifier" in cmdline.read_bytes():
                pids.add(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            pass
    return pids


def test_parquet_is_complete_though_an_actor_is_killed_mid_run(local_ray, folder, local_rows, tmp_path):
    before = _classifier_pids()
    outcome = {}

    def run():
        try:
            outcome["counts"] = distributed.write_parquet(distributed.predict_files([str(folder)]), tmp_path / "o")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    job = threading.Thread(target=run)
    job.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and job.is_alive() and time.monotonic() < deadline:
        fresh = _classifier_pids() - before
        if fresh:
            time.sleep(0.5)  # let it load the model and take batches
            killed = min(fresh)
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    restarted = set()
    while job.is_alive():
        restarted |= _classifier_pids() - before - {killed}
        time.sleep(0.05)
    assert killed is not None, "no classifying actor was seen"
    assert restarted, "the killed actor was not replaced"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["counts"] == (len(local_rows), 3)
    table = pq.read_table(tmp_path / "o")
    assert table.column_names == CSV_FIELDS + ["probabilities"]  # the CSV's columns, typed
    assert_same(table.to_pylist(), local_rows)
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no staging folder left behind


def test_cli_engine_ray_json_and_parquet(local_ray, folder, tmp_path):
    """The command joins the running Ray: a small folder with a bad file and a missing one."""
    small = tmp_path / "small"
    small.mkdir()
    for name in ["00001.png", "00002.png", "text.png"]:
        (small / name).write_bytes((folder / name).read_bytes())
    missing = str(tmp_path / "missing.png")
    cmd = [sys.executable, "-m", "mnist_classifier.cli", "predict", "--engine", "ray", str(small), missing,
           "--parquet", str(tmp_path / "out"), "--json", "--ray-address", ray.get_runtime_context().gcs_address]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # some files could not be read, as with the local engine
    assert f"4 files read into {tmp_path / 'out'}; 2 could not be read" in done.stderr
    rows = json.loads(done.stdout)
    assert rows == sorted(pq.read_table(tmp_path / "out").to_pylist(), key=lambda r: r["path"])
    by_path = {r["path"]: r for r in rows}
    assert by_path[missing]["error"] == f"{missing}: file not found"
    assert by_path[str(small / "text.png")]["error"] == f"{small / 'text.png'}: not an image (unrecognised file format)"
    assert (by_path[str(small / "00001.png")]["digit"], by_path[str(small / "00002.png")]["digit"]) == (2, 1)


def test_paths_holding_no_image_are_named_in_one_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no digits here")
    with pytest.raises(MNISTClassifierError) as raised:
        distributed.predict_files([tmp_path])
    assert str(raised.value) == f"no images found: {tmp_path} holds no file named *.{{" + \
        ",".join(e.lstrip("*.") for e in distributed.IMAGE_EXTENSIONS) + "}"


def test_the_core_package_never_imports_ray():
    code = ("import sys, mnist_classifier, mnist_classifier.cli, mnist_classifier.predict, mnist_classifier.api; "
            "mnist_classifier.cli.build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

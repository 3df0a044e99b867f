"""ONNX: the export (CLI, checker, metadata, every architecture) and the onnx engine in predict, evaluate and
serve, each checked against torch as the oracle: probabilities within 1e-5, the same digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from mnist_classifier import engines, onnx_export
from mnist_classifier.cli import main
from mnist_classifier.engines import open_engine
from mnist_classifier.errors import ConfigError, ModelFileError
from mnist_classifier.models import MNIST_MEAN, MNIST_STD, REGISTRY, build_model
from mnist_classifier.persist import METADATA_KEY, read_metadata, save_model
from mnist_classifier.predict import Predictor
from helpers import perturb_batch_norm
from servers import free_port, wait_until_ready

TOLERANCE = 1e-5  # max |onnxruntime - torch| probability


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    """A user cache dir of the tests' own, for the commands run here and for this process."""
    folder = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = previous


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mnist_classifier.cli", *map(str, args)], capture_output=True,
                          text=True, env=dict(os.environ), timeout=timeout)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cache_home):
    """The shipped model exported by the CLI, as a user does: (its folder, the .onnx path, the --json answer)."""
    folder = tmp_path_factory.mktemp("export")
    proc = run_cli("export", "--out", folder / "digits.onnx", "--json")
    assert proc.returncode == 0, proc.stderr
    return folder, folder / "digits.onnx", json.loads(proc.stdout)


@pytest.fixture(scope="module")
def onnx_engine(exported):
    return open_engine("onnx", exported[1])


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory, mnist):
    """Scans of 12 test digits (dark ink on white, 3x size) and one file that is not an image."""
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for i in range(12):
        path = folder / f"{i:02d}.png"
        Image.fromarray(255 - mnist.test_images[i]).resize((84, 84), Image.Resampling.BILINEAR).save(path)
        paths.append(str(path))
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return paths + [str(broken)]





def assert_same_rows(onnx_rows, torch_rows):
    assert [r["path"] for r in onnx_rows] == [r["path"] for r in torch_rows]
    assert [r["digit"] for r in onnx_rows] == [r["digit"] for r in torch_rows]
    assert [r["error"] is None for r in onnx_rows] == [r["error"] is None for r in torch_rows]
    difference = np.abs(np.array([r["probabilities"] for r in onnx_rows])
                        - np.array([r["probabilities"] for r in torch_rows])).max()
    assert difference <= TOLERANCE + 1e-6  # rows are rounded to 6 decimals


# ---------------------------------------------------------------- the export

def test_export_writes_one_checked_graph_with_a_dynamic_batch(exported):
    folder, path, summary = exported
    assert summary["out"] == str(path) and summary["architecture"] == "ensemble"
    assert summary["max_probability_difference"] <= TOLERANCE
    assert sorted(p.name for p in folder.iterdir()) == ["digits.onnx"]  # written atomically: no temp file left
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert summary["opset"] == max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (images,), (probabilities,) = model.graph.input, model.graph.output
    assert (images.name, probabilities.name) == ("images", "probabilities")
    batch, *rest = images.type.tensor_type.shape.dim
    assert batch.dim_param and not batch.dim_value and [d.dim_value for d in rest] == [1, 28, 28]
    assert [d.dim_value for d in probabilities.type.tensor_type.shape.dim][1:] == [10]


def test_the_standardization_is_the_graphs_first_step(exported):
    model = onnx.load(exported[1])
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    sub, div = model.graph.node[:2]
    assert (sub.op_type, sub.input[0], div.op_type, div.input[0]) == ("Sub", "images", "Div", sub.output[0])
    assert float(constants[sub.input[1]]) == pytest.approx(MNIST_MEAN)
    assert float(constants[div.input[1]]) == pytest.approx(MNIST_STD)
    # The ensemble is one graph: both members read the standardized images.
    assert sum(n.op_type == "Conv" and n.input[0] == div.output[0] for n in model.graph.node) == 2


def test_the_model_files_metadata_is_in_the_onnx_metadata(exported, pretrained_path):
    props = {p.key: p.value for p in onnx.load(exported[1]).metadata_props}
    assert json.loads(props[METADATA_KEY]) == read_metadata(pretrained_path)
    assert props["architecture"] == "ensemble"
    assert json.loads(props["classes"]) == list(range(10))
    assert json.loads(props["export"])["opset"] == exported[2]["opset"]
    assert engines.METADATA_KEY == METADATA_KEY  # the engine reads it under the name persist writes


def test_onnxruntime_matches_torch_on_the_10000_test_digits(onnx_engine, pretrained, mnist):
    expected = open_engine("torch", pretrained).probabilities(mnist.test_images)
    got = onnx_engine.probabilities(mnist.test_images)
    assert got.shape == (10_000, 10) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOLERANCE
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    assert np.mean(got.argmax(1) == mnist.test_labels) == pytest.approx(pretrained.metadata["metrics"]["accuracy"])
    assert onnx_engine.metadata == pretrained.metadata


def test_every_architecture_exports_on_the_fly_and_answers_as_torch(tmp_path, cache_home, monkeypatch, mnist):
    # One ensemble with a member of every other architecture in the registry: one export covers them all
    # (each member's graph inside it), the ensemble's averaging, and a .safetensors model given to the engine.
    members = [{"architecture": name} for name in REGISTRY if name != "ensemble"]
    torch.manual_seed(0)
    model = perturb_batch_norm(build_model("ensemble", members=members), seed=1)
    path = save_model(tmp_path / "all.safetensors", model, "ensemble", {"members": members})
    engine = open_engine("onnx", path)
    reference = open_engine("torch", path)
    for images in (mnist.test_images[:1], mnist.test_images[:7]):  # batch sizes the export never saw
        expected, got = reference.probabilities(images), engine.probabilities(images)
        assert got.shape == expected.shape == (len(images), 10)
        assert np.abs(got - expected).max() <= TOLERANCE
        assert np.array_equal(got.argmax(1), expected.argmax(1))
    assert engine.metadata == read_metadata(path) and engine.model_path == str(path)
    assert len(list((cache_home / "mnist-classifier" / "onnx").glob("all-*.onnx"))) == 1

    def no_export(*args):
        raise AssertionError("exported again instead of reading the cache")

    monkeypatch.setattr(onnx_export, "to_onnx", no_export)
    again = open_engine("onnx", path)
    assert np.array_equal(again.probabilities(mnist.test_images[:7]), engine.probabilities(mnist.test_images[:7]))


# ---------------------------------------------------------------- the engine in the commands

def test_predict_with_the_onnx_engine_answers_as_torch(exported, digit_files, pretrained):
    proc = run_cli("predict", "--engine", "onnx", "--model", exported[1], *digit_files, "--json")
    assert proc.returncode == 1  # the broken file
    rows = json.loads(proc.stdout)
    expected = [p.to_dict() for p in Predictor(pretrained, workers=1).predict_many(digit_files)]
    assert_same_rows(rows, expected)
    assert rows[-1]["error"] and all(r["error"] is None for r in rows[:-1])


def test_predict_on_an_exported_or_shipped_graph_never_imports_torch_or_scipy(exported, digit_files):
    """The onnx engine's cold start: neither the parser nor the engine may bring torch in, for an exported
    file or for the shipped model (whose export ships beside it: nothing to export, nothing to cache), and
    reading the image must not bring in scipy, whose import costs more than all the rest of it."""
    script = ("import sys; from mnist_classifier.cli import main; "
              "codes = [main(['predict', '--engine', 'onnx', '--json', *sys.argv[2:]]), "
              "main(['predict', '--engine', 'onnx', '--model', sys.argv[1], '--json', *sys.argv[2:]])]; "
              "print(codes, 'torch' in sys.modules, 'scipy' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", script, str(exported[1]), digit_files[0]], capture_output=True,
                          text=True, env=dict(os.environ), timeout=300)
    assert proc.stderr.strip().splitlines()[-1] == "[0, 0] False False", proc.stderr


def test_a_predictor_on_the_onnx_engine_reads_numbers_as_torch(onnx_engine, pretrained, mnist):
    row = np.concatenate([mnist.test_images[i] for i in (1, 2, 3)], axis=1)  # three digits side by side
    by_onnx = Predictor(onnx_engine, workers=1).read_number(255 - row)
    by_torch = Predictor(pretrained, workers=1).read_number(255 - row)
    assert by_onnx.number == by_torch.number and len(by_onnx.digits) == 3
    assert np.allclose([d.probabilities for d in by_onnx.digits], [d.probabilities for d in by_torch.digits],
                       atol=TOLERANCE)


def test_evaluate_with_the_onnx_engine_answers_as_torch(exported, pretrained, mnist_dir, capsys):
    assert main(["evaluate", str(exported[1]), "--engine", "onnx", "--data-dir", str(mnist_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["engine"] == "onnx" and summary["architecture"] == "ensemble" and summary["n"] == 10_000
    metrics = pretrained.metadata["metrics"]  # what the torch engine measured when the model was saved
    assert summary["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert summary["loss"] == pytest.approx(metrics["loss"], abs=1e-5)
    assert summary["errors"] == metrics["errors"] and summary["per_class"] == metrics["per_class"]


def test_serve_with_the_onnx_engine_answers_as_torch(exported, digit_files, pretrained, tmp_path):
    port, log_path = free_port(), tmp_path / "serve.log"
    with open(log_path, "w") as log:
        # Two worker processes: the engine's name must reach each of them, and the model is checked first.
        process = subprocess.Popen([sys.executable, "-m", "mnist_classifier.cli", "serve", "--engine", "onnx",
                                    "--model", str(exported[1]), "--port", str(port), "--workers", "2"],
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log_path)
        with httpx.Client(base_url=url, timeout=30) as http:
            info = http.get("/v1/model").json()
            rows = []
            for path in digit_files[:4]:
                with open(path, "rb") as fh:
                    response = http.post("/v1/predict", files={"file": (os.path.basename(path), fh, "image/png")})
                assert response.status_code == 200, response.text
                rows.append({**response.json(), "path": path})
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert info["server"]["engine"] == "onnx" and info["architecture"] == "ensemble"
    expected = [p.to_dict() for p in Predictor(pretrained, workers=1).predict_many(digit_files[:4])]
    assert_same_rows(rows, expected)


# ---------------------------------------------------------------- choices and errors

@pytest.mark.parametrize("command", ["predict", "evaluate", "serve"])
def test_the_engine_choices_are_the_registrys(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--engine", "tensorflow", "x.png"] if command == "predict" else [command, "--engine", "x"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice" in error
    assert all(name in error.split("choose from")[1] for name in engines.engine_names(command)) and "onnx" in error


def test_model_files_the_onnx_engine_cannot_use_are_one_line_errors(tmp_path, exported, pretrained, capsys):
    foreign = tmp_path / "foreign.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFileError, match=r"foreign\.onnx: an ONNX model, but not an mnist-classifier one"):
        open_engine("onnx", foreign)
    with pytest.raises(ModelFileError, match=r"garbage\.onnx: not a readable ONNX model"):
        open_engine("onnx", garbage)
    with pytest.raises(ModelFileError, match=r"missing\.onnx: model file not found"):
        open_engine("onnx", tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="the onnx engine runs on the CPU"):
        open_engine("onnx", exported[1], device="cuda")
    with pytest.raises(ConfigError, match=r"digits\.onnx: an ONNX model runs with --engine onnx"):
        open_engine("torch", exported[1])
    with pytest.raises(ConfigError, match="the onnx engine reads a model file"):
        open_engine("onnx", pretrained)
    assert main(["predict", "--engine", "onnx", "--model", str(garbage), str(exported[1])]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("mnist-classifier predict: error: ") and "garbage.onnx: not a readable ONNX model" in line


def test_the_shipped_onnx_file_is_the_shipped_model_exported(pretrained, mnist):
    """pretrained/digits.onnx must follow digits.safetensors: the same metadata, the same answers."""
    assert engines.pretrained_onnx_path().is_file()
    shipped = open_engine("onnx")
    assert shipped.model_path == str(pretrained.path)
    assert shipped.metadata == pretrained.metadata
    got = shipped.probabilities(mnist.test_images)
    expected = open_engine("torch", pretrained).probabilities(mnist.test_images)
    assert np.abs(got - expected).max() <= TOLERANCE
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_auto_runs_onnx_where_no_export_is_needed(monkeypatch, tmp_path, pretrained):
    assert engines.auto_engine(None) == "onnx" and engines.auto_engine("model.ONNX") == "onnx"
    assert engines.auto_engine("model.safetensors") == "torch" and engines.auto_engine(pretrained) == "torch"
    assert engines.auto_engine(None, device="cuda") == "torch"
    assert Predictor(engine="auto").engine.name == "onnx" and Predictor(pretrained, engine="auto").engine.name == "torch"
    assert engines.DEFAULT_ENGINE == "auto" and Predictor().engine.name == "onnx"
    assert Predictor(str(engines.pretrained_path())).engine.name == "onnx"  # the shipped model by its path
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    assert engines.auto_engine(None) == "torch"  # installed without the [onnx] extra

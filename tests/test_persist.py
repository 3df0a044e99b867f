import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mnist_classifier.errors import ModelFileError
from mnist_classifier.inference import predict_proba
from mnist_classifier.persist import load_model, read_metadata, save_model
from mnist_classifier.models import build_model, model_config


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = build_model("cnn-fast").eval()
    path = save_model(tmp_path / "m.safetensors", model, "cnn-fast", model_config("cnn-fast"),
                      metrics={"accuracy": 0.5})
    return model, path


def test_round_trip_gives_identical_predictions(saved):
    model, path = saved
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    loaded = load_model(path)
    np.testing.assert_array_equal(predict_proba(model, images), predict_proba(loaded.model, images))


def test_metadata_is_recorded(saved):
    _, path = saved
    meta = read_metadata(path)
    assert meta["architecture"] == "cnn-fast"
    assert meta["metrics"] == {"accuracy": 0.5}
    assert meta["torch_version"] == torch.__version__
    assert {"package_version", "created", "format_version"} <= set(meta)


def test_save_is_atomic_and_leaves_no_temp_files(saved):
    _, path = saved
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]


def test_truncated_file(saved, tmp_path):
    _, path = saved
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ModelFileError, match="broken.safetensors: "):
        load_model(broken)


def test_random_bytes_file(tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelFileError, match="not a readable safetensors model file"):
        load_model(bogus)


def test_foreign_safetensors_file(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelFileError, match="not an mnist-classifier model"):
        load_model(foreign)


def test_unknown_architecture_in_file(tmp_path):
    path = tmp_path / "odd.safetensors"
    save_file({"w": torch.zeros(3)}, str(path),
              metadata={"mnist_classifier": json.dumps({"architecture": "transformer", "config": {}})})
    with pytest.raises(ModelFileError, match="unknown architecture 'transformer'"):
        load_model(path)


def test_weights_that_do_not_fit(tmp_path):
    path = save_model(tmp_path / "m.safetensors", build_model("mlp"), "cnn", {})
    with pytest.raises(ModelFileError, match="weights do not match architecture 'cnn'"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "nope.safetensors")


def test_shipped_model_reproduces_its_recorded_accuracy(pretrained, mnist, pretrained_path):
    from mnist_classifier.evaluate import evaluate

    result = evaluate(pretrained.model, mnist.test_images, mnist.test_labels)
    assert result.accuracy == pytest.approx(pretrained.metadata["metrics"]["accuracy"], abs=1e-9)
    assert pretrained.metadata["architecture"] == "cnn"
    assert pretrained_path.stat().st_size < 3 * 1024 * 1024

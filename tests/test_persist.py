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
    assert pretrained.metadata["architecture"] == "ensemble"
    assert pretrained_path.stat().st_size < 3 * 1024 * 1024


def test_shipped_model_records_what_its_members_were_trained_on(pretrained):
    members = pretrained.metadata["member_models"]
    # a file written before recipes had names was trained with the one recipe there was, "affine"
    assert [m["training"].get("augment_recipe", "affine") for m in members] == ["affine", "writers"]
    assert pretrained.metadata["member_models"][1]["training"]["augment_recipe_values"]["p_writer"] > 0
    assert all(m["dataset_sha256"] == pretrained.metadata["dataset_sha256"] for m in members)


def test_combined_models_answer_with_their_mean_log_probability(tmp_path, mnist_dir, capsys):
    from mnist_classifier.cli import main

    members = []
    for seed, arch in ((1, "cnn-fast"), (2, "mlp")):
        torch.manual_seed(seed)
        model = build_model(arch).eval()
        members.append((model, save_model(tmp_path / f"{arch}.safetensors", model, arch, model_config(arch),
                                          training={"seed": seed})))
    out = tmp_path / "both.safetensors"
    assert main(["combine", str(members[0][1]), str(members[1][1]), "--out", str(out), "--json",
                 "--data-dir", str(mnist_dir)]) == 0
    summary = json.loads(capsys.readouterr().out)
    loaded = load_model(out)
    assert loaded.metadata["architecture"] == "ensemble"
    assert [m["training"]["seed"] for m in loaded.metadata["member_models"]] == [1, 2]
    assert loaded.metadata["metrics"]["accuracy"] == summary["accuracy"]
    x = torch.rand(16, 1, 28, 28)
    expected = torch.stack([torch.log_softmax(m(x), 1) for m, _ in members]).mean(0)
    torch.testing.assert_close(loaded.model(x), expected)


def test_combine_needs_two_models_and_no_nested_ensembles(tmp_path, saved, capsys):
    from mnist_classifier.cli import main

    _, path = saved
    assert main(["combine", str(path), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "combine needs at least two model files" in capsys.readouterr().err
    with pytest.raises(Exception, match="none of them an ensemble"):
        build_model("ensemble", members=[{"architecture": "ensemble"}])
    assert not (tmp_path / "x.safetensors").exists()

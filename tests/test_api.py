"""The seed-compatible Python facade."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_classifier import MNISTClassifier
from mnist_classifier.errors import ConfigError
from mnist_classifier.persist import read_metadata

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "sample_digits"


def test_seed_workflow_with_mlp(mnist_dir, tmp_path):
    clf = MNISTClassifier(data_dir=mnist_dir, device="cpu")
    (x_train, y_train), (x_test, y_test) = clf.load_and_preprocess_data()
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.float32 and x_train.max() == 1.0
    assert y_test.shape == (10000,)
    clf.build_model(hidden_layers=[128, 64], dropout_rate=0.2)
    assert clf.architecture == "mlp"
    sample = SAMPLES / "paper_7.png"
    clf.classify_image(sample)  # builds the image predictor before training
    history = clf.train_model(epochs=1, batch_size=128, validation_split=0.1, progress=False)
    assert len(history) == 1 and history.val_accuracy[0] > 0.9
    seen = clf.preprocess_custom_image(sample)[None]
    np.testing.assert_allclose(clf._image_predictor().probabilities(seen), clf.predict_proba(seen), atol=1e-5)
    accuracy, y_pred, y_true = clf.evaluate_model()
    assert accuracy > 0.93 and y_pred.shape == y_true.shape == (10000,)
    assert accuracy == pytest.approx(np.mean(y_pred == y_true))

    path = clf.save_model(tmp_path / "seed.safetensors")
    meta = read_metadata(path)
    assert meta["architecture"] == "mlp" and meta["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert len(meta["history"]["epoch"]) == 1

    again = MNISTClassifier(data_dir=mnist_dir, device="cpu")
    again.load_model(path)
    np.testing.assert_allclose(again.predict_proba(x_test[:100]), clf.predict_proba(x_test[:100]), atol=1e-6)
    assert len(again.history) == 1  # the curves travel with the model file


def test_load_shipped_model_by_default(pretrained_path):
    clf = MNISTClassifier(device="cpu")
    clf.load_model()
    assert clf.architecture == "ensemble"
    assert clf.metadata["metrics"]["accuracy"] >= 0.996


def test_evaluating_without_asking_for_the_float_copies_keeps_none(mnist_dir):
    clf = MNISTClassifier(data_dir=mnist_dir, device="cpu")
    clf.load_model()
    accuracy, _, _ = clf.evaluate_model()
    assert accuracy >= 0.996
    assert clf.x_train is None and clf.x_test is None  # only load_and_preprocess_data() makes them


def test_evaluate_before_build_is_a_clear_error(mnist_dir):
    with pytest.raises(ConfigError, match="call build_model\\(\\) or load_model\\(path\\) first"):
        MNISTClassifier(data_dir=mnist_dir).predict_proba(np.zeros((1, 28, 28)))


def test_build_model_starts_from_the_weights_train_starts_from():
    """The CLI seeds before it builds; so does the facade: same seed, same initial weights, every time."""
    from mnist_classifier.models import build_model

    first = MNISTClassifier(seed=3).build_model().state_dict()
    torch.manual_seed(123)  # whatever the global generator did before
    again = MNISTClassifier(seed=3).build_model().state_dict()
    torch.manual_seed(3)
    as_train_does = build_model("cnn").state_dict()
    for name, tensor in first.items():
        assert torch.equal(tensor, again[name]) and torch.equal(tensor, as_train_does[name]), name


@pytest.mark.slow
def test_the_api_trains_the_weights_the_cli_trains(mnist_dir, tmp_path):
    """Same architecture, seed and settings from Python and from the command line: the same weights, bit for
    bit. Each runs in a fresh process, as a user runs them (a process's thread count changes float sums)."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    cli, api = tmp_path / "cli.safetensors", tmp_path / "api.safetensors"
    proc = subprocess.run([sys.executable, "-m", "mnist_classifier.cli", "train", "-a", "cnn-fast", "--epochs", "1",
                           "--seed", "5", "--data-dir", str(mnist_dir), "--device", "cpu", "--out", str(cli),
                           "--no-report", "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    script = ("import sys; from mnist_classifier import MNISTClassifier; "
              "clf = MNISTClassifier(architecture='cnn-fast', data_dir=sys.argv[1], device='cpu', seed=5); "
              "clf.build_model(); clf.train_model(epochs=1, progress=False); clf.save_model(sys.argv[2])")
    proc = subprocess.run([sys.executable, "-c", script, str(mnist_dir), str(api)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    from_cli, from_api = load_file(cli), load_file(api)
    assert from_cli.keys() == from_api.keys()
    for name, tensor in from_api.items():
        assert torch.equal(tensor, from_cli[name]), name

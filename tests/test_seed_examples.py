"""The seed script's usage, as its README showed it, runs against this package with only the import line
changed: load, build, train, evaluate, plot, save, load, classify one image and a folder (with the seed's
``image_extensions=['*.png', '*.jpg']``), custom predictions, and the loop over architectures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "sample_digits"

# Epochs lowered from the seed's 10 and 5 to 1 (seconds instead of minutes); everything else as a seed
# user writes it.
SEED_EXAMPLES = """
from mnist_classifier import MNISTClassifier

classifier = MNISTClassifier()
(x_train, y_train), (x_test, y_test) = classifier.load_and_preprocess_data()
classifier.build_model(hidden_layers=[128, 64], dropout_rate=0.2)
history = classifier.train_model(epochs=1, batch_size=32, validation_split=0.1)
accuracy, y_pred, y_true = classifier.evaluate_model()
print(f"Test accuracy: {accuracy:.4f}")

classifier.plot_training_history()
classifier.plot_confusion_matrix(y_true, y_pred)
classifier.visualize_predictions(num_samples=10)

classifier.save_model("mnist_model.safetensors")
classifier.load_model("mnist_model.safetensors")

digit, confidence = classifier.classify_image("digit.png")
print(f"Predicted digit: {digit} (confidence: {confidence:.2%})")

results = classifier.classify_images_in_directory("my_images/", image_extensions=["*.png", "*.jpg"])
for result in results:
    print(f"{result['filename']}: {result['digit']} ({result['confidence']:.2%})")

classifier.visualize_custom_predictions(["digit.png", "digit2.jpg"])

for architecture in [[128, 64], [256, 128], [512, 256, 128]]:
    clf = MNISTClassifier()
    clf.load_and_preprocess_data()
    clf.build_model(hidden_layers=architecture)
    clf.train_model(epochs=1)
    acc, _, _ = clf.evaluate_model()
    print(f"Architecture {architecture}: {acc:.4f}")
"""


@pytest.mark.slow
def test_the_seed_readme_examples_run_and_make_sense(tmp_path, mnist_dir):
    shutil.copy(ASSETS / "paper_7.png", tmp_path / "digit.png")
    shutil.copy(ASSETS / "photo_8.jpg", tmp_path / "digit2.jpg")
    shutil.copytree(ASSETS, tmp_path / "my_images", ignore=shutil.ignore_patterns("*.json"))
    env = {**os.environ, "MNIST_DATA": str(mnist_dir), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", SEED_EXAMPLES], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()

    accuracy = float(next(line for line in lines if line.startswith("Test accuracy: ")).split()[-1])
    assert accuracy > 0.93  # the seed's MLP after one epoch
    assert "Predicted digit: 7 (confidence: " in done.stdout
    for figure in ("training_history", "confusion_matrix", "predictions", "custom_predictions"):
        assert (tmp_path / "assets" / f"{figure}.png").stat().st_size > 10_000, figure
    assert (tmp_path / "mnist_model.safetensors").is_file()

    # The seed's "*.png"/"*.jpg" patterns find every PNG and JPEG; each file's answer is its label's.
    truth = json.loads((ASSETS / "labels.json").read_text())
    read = dict(line.rsplit(": ", 1) for line in lines if line.split(":")[0] in truth)
    assert sorted(read) == sorted(p.name for p in ASSETS.glob("*.[pj][np]g"))
    for name, answer in read.items():
        if not isinstance(truth[name], str):  # a whole number is read by predict --number
            assert answer.split(" (")[0] == str(truth[name]), name  # the blank page: None

    loop = [line for line in lines if line.startswith("Architecture ")]
    assert [line.split(": ")[0] for line in loop] == [
        "Architecture [128, 64]", "Architecture [256, 128]", "Architecture [512, 256, 128]"]
    assert all(float(line.split(": ")[1]) > 0.93 for line in loop)

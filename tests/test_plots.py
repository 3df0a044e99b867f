"""Every figure: a real PNG of the promised pixel size, drawn from real MNIST digits and the shipped model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnist_classifier import MNISTClassifier, plots
from mnist_classifier.errors import ConfigError
from mnist_classifier.evaluate import evaluate
from mnist_classifier.models import build_model
from mnist_classifier.predict import Predictor

SUBSET = 3000  # enough test digits for a few dozen errors; keeps the figures quick

HISTORY = {  # a 12-epoch run with validation, stopped early, best weights from epoch 8
    "epoch": list(range(1, 13)),
    "train_loss": [0.5 / e + 0.05 for e in range(1, 13)],
    "val_loss": [0.4 / e + 0.03 + 0.004 * e for e in range(1, 13)],
    "train_accuracy": [1 - 0.05 / e for e in range(1, 13)],
    "val_accuracy": [1 - 0.04 / e - 0.0005 * e for e in range(1, 13)],
    "lr": [0.003 * min(e / 3, 1) * (1 - (e - 1) / 12) + 1e-5 for e in range(1, 13)],
    "seconds": [10.0] * 12, "best_epoch": 8, "stopped_early": True,
}


@pytest.fixture(scope="module")
def scored(mnist, pretrained):
    images, labels = mnist.test_images[:SUBSET], mnist.test_labels[:SUBSET]
    return images, evaluate(pretrained.model, images, labels)


def assert_png(path, kind, rows=None):
    """A non-empty PNG of exactly the figure kind's pixel size, with more than one colour on it."""
    assert path.is_file() and path.stat().st_size > 5_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.size == plots.pixel_size(kind, rows)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10, "the figure is (nearly) blank"
    assert not list(path.parent.glob(".*.part")), "a temporary file was left behind"


def test_pixel_sizes_follow_150_dpi():
    assert plots.DPI == 150
    assert plots.pixel_size("samples") == (1125, 990)
    assert plots.pixel_size("predictions") == (1200, 1350)
    assert plots.pixel_size("predictions", rows=5) == (1200, 1350)
    assert plots.pixel_size("custom_predictions", rows=3) == (1650, 1170)


def test_samples_and_class_distribution(mnist, tmp_path):
    assert_png(plots.plot_samples(mnist.train_images, mnist.train_labels, tmp_path / "samples.png"), "samples")
    path = plots.plot_class_distribution(mnist.train_labels, tmp_path / "dist.png")
    assert_png(path, "class_distribution")


def test_evaluation_figures(scored, tmp_path):
    images, ev = scored
    assert len(ev.misclassified()) > 5  # the misclassified figure has something to show
    cases = {
        "confusion_matrix": lambda p: plots.plot_confusion_matrix(ev.y_true, ev.y_pred, p),
        "per_class_accuracy": lambda p: plots.plot_per_class_accuracy(ev.y_true, ev.y_pred, p),
        "predictions": lambda p: plots.plot_predictions(images, ev.y_true, ev.probabilities, p),
        "misclassified": lambda p: plots.plot_misclassified(images, ev.y_true, ev.probabilities, p),
        "confidence_histogram": lambda p: plots.plot_confidence_histogram(ev.y_true, ev.probabilities, p),
        "reliability": lambda p: plots.plot_reliability(ev.y_true, ev.probabilities, p),
    }
    for kind, draw in cases.items():
        path = draw(tmp_path / "nested" / f"{kind}.png")  # missing folders are created
        assert path == tmp_path / "nested" / f"{kind}.png"
        assert_png(path, kind)


def test_predictions_grid_marks_wrong_answers_red(scored, tmp_path):
    images, ev = scored
    wrong = ev.misclassified()[:3]
    right = np.flatnonzero(ev.y_true == ev.y_pred)[:22]
    pick = np.concatenate([wrong, right])
    path = plots.plot_predictions(images[pick], ev.y_true[pick], ev.probabilities[pick], tmp_path / "p.png")
    assert_png(path, "predictions")
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    green = (rgb[..., 1] > 100) & (rgb[..., 0] < 80) & (rgb[..., 2] < 80)
    assert red.sum() > 500 and green.sum() > red.sum()  # 3 red frames, 22 green ones


def test_no_errors_still_draws(tmp_path):
    y = np.arange(10).repeat(5)
    probabilities = np.eye(10, dtype=np.float32)[y] * 0.9 + 0.01
    images = np.zeros((50, 28, 28), np.uint8)
    images[:, 8:20, 12:16] = 255
    assert_png(plots.plot_misclassified(images, y, probabilities, tmp_path / "m.png"), "misclassified")
    assert_png(plots.plot_confidence_histogram(y, probabilities, tmp_path / "c.png"), "confidence_histogram")


def test_calibration_bins_and_ece():
    y = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.55, 0.45]])
    probabilities = np.pad(probabilities, ((0, 0), (0, 8)))
    stats = plots.calibration_bins(y, probabilities, bins=10)
    assert stats["count"].sum() == 4 and stats["count"][9] == 2 and stats["count"][5] == 2
    assert stats["accuracy"][9] == 1.0 and stats["accuracy"][5] == 0.5
    # |1 - 0.95| * 2 + |0.5 - 0.55| * 2, over 4 predictions
    assert stats["ece"] == pytest.approx(0.05)


def test_training_history_with_validation_and_early_stop(tmp_path):
    assert_png(plots.plot_training_history(HISTORY, tmp_path / "h.png"), "training_history")


def test_training_history_of_one_epoch_without_validation(pretrained, tmp_path):
    history = {"epoch": [1], "train_loss": [0.23], "train_accuracy": [0.94], "val_loss": [None],
               "val_accuracy": [None], "lr": [1.2e-4], "seconds": [8.6], "best_epoch": 1, "stopped_early": False}
    assert_png(plots.plot_training_history(history, tmp_path / "one.png"), "training_history")
    member = pretrained.metadata["member_models"][0]  # the shipped ensemble keeps each member's curves
    assert_png(plots.plot_training_history(member["history"], tmp_path / "shipped.png"), "training_history")


@pytest.mark.parametrize("history", [None, {}, {"epoch": [], "train_loss": []}])
def test_empty_history_is_a_clear_error(history, tmp_path):
    assert not plots.has_history(history)
    with pytest.raises(ConfigError, match="no training history"):
        plots.plot_training_history(history, tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


def test_first_layer_of_cnn_and_mlp(pretrained, mnist, tmp_path):
    assert_png(plots.plot_first_layer(pretrained.model, tmp_path / "cnn.png", image=mnist.test_images[0]),
               "first_layer")
    assert_png(plots.plot_first_layer(build_model("mlp"), tmp_path / "mlp.png"), "first_layer")


@pytest.fixture(scope="module")
def custom_images(mnist, tmp_path_factory):
    """A digit 'scanned' as dark ink on light paper, a blank page, and a file that is not an image."""
    folder = tmp_path_factory.mktemp("custom")
    ink = np.asarray(Image.fromarray(mnist.test_images[0]).resize((200, 200), Image.BILINEAR)) / 255.0  # a 7
    paper = np.full((280, 360), 230.0)
    paper[40:240, 90:290] -= ink * 200  # dark ink on light grey paper
    Image.fromarray(paper.astype(np.uint8)).save(folder / "scan.jpg", quality=85)
    Image.new("L", (120, 120), 255).save(folder / "blank.png")
    (folder / "broken.png").write_bytes(b"this is not a png")
    return [folder / "scan.jpg", folder / "blank.png", folder / "broken.png"]


def test_custom_predictions(pretrained, custom_images, tmp_path):
    predictions = Predictor(pretrained).predict_many(custom_images)
    assert predictions[0].digit == 7 and predictions[1].digit is None and predictions[2].error
    path = plots.plot_custom_predictions(predictions, tmp_path / "custom.png", originals=custom_images)
    assert_png(path, "custom_predictions", rows=3)
    with pytest.raises(ConfigError):
        plots.plot_custom_predictions([], tmp_path / "none.png")


def test_figures_leave_global_matplotlib_state_alone(mnist, tmp_path):
    import matplotlib

    backend, font_size = matplotlib.get_backend(), matplotlib.rcParams["font.size"]
    plots.plot_class_distribution(mnist.train_labels, tmp_path / "d.png")
    assert matplotlib.get_backend() == backend and matplotlib.rcParams["font.size"] == font_size


# ---------------------------------------------------------------- the seed's figure methods on MNISTClassifier

def test_classifier_figure_methods(mnist_dir, pretrained_path, custom_images, tmp_path):
    clf = MNISTClassifier(data_dir=mnist_dir, device="cpu", output_dir=tmp_path / "assets")
    clf.load_model(pretrained_path)

    with pytest.raises(ConfigError, match="no training history"):  # an ensemble of separately trained models
        clf.plot_training_history()

    y_true = clf._require_data().test_labels[:500]
    y_pred = clf.predict_proba(clf.data.test_images[:500]).argmax(axis=1)
    path = clf.plot_confusion_matrix(y_true, y_pred)
    assert path == tmp_path / "assets" / "confusion_matrix.png"
    assert_png(path, "confusion_matrix")
    assert (y_true == y_pred).mean() > 0.95

    path = clf.visualize_predictions(num_samples=10)
    assert path == tmp_path / "assets" / "predictions.png"
    assert_png(path, "predictions", rows=2)
    assert_png(clf.visualize_predictions(), "predictions")

    path = clf.visualize_custom_predictions(custom_images)
    assert path == tmp_path / "assets" / "custom_predictions.png"
    assert_png(path, "custom_predictions", rows=3)

    with pytest.raises(ConfigError, match="num_samples"):
        clf.visualize_predictions(num_samples=0)


def test_classifier_without_history_says_so(tmp_path):
    clf = MNISTClassifier(device="cpu", output_dir=tmp_path)
    clf.build_model(architecture="cnn-fast")
    with pytest.raises(ConfigError, match="no training history"):
        clf.plot_training_history()


def test_a_signed_grid_scales_each_tile_to_its_own_range_and_stretches_it_to_one_side():
    kernel = np.array([[1.0, -2.0], [0.0, 4.0]])
    response = np.arange(16.0).reshape(4, 4) - 8
    fig = plots._figure("first_layer")
    ax = fig.add_subplot()
    plots._signed_grid(ax, [[(kernel, "kernel 0", {})], [(response, "response", {"color": plots.GREY})]], cols=1)
    sheet = np.ma.filled(ax.images[0].get_array(), np.nan)
    side, head = 4, 1  # the sides' least common multiple, and a quarter of it for the title
    assert sheet.shape == (2 * (side + head), side)
    np.testing.assert_array_equal(sheet[head:head + side], np.kron(kernel / 4, np.ones((2, 2))))
    np.testing.assert_array_equal(sheet[2 * head + side:], response / 8)
    assert np.isnan(sheet[0]).all()  # white behind the titles
    assert [(t.get_text(), t.get_color()) for t in ax.texts] == [("kernel 0", "black"), ("response", plots.GREY)]

"""`evaluate --images` and `finetune`: labelled folders of people's own images, scored and learnt from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from scipy import ndimage

from mnist_classifier import MNISTClassifier
from mnist_classifier.cli import main
from mnist_classifier.errors import ConfigError
from mnist_classifier.evaluate import evaluate
from mnist_classifier.persist import read_metadata

LAYOUT = "expected one subfolder per digit, DIR/0 ... DIR/9, holding that digit's images"


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args) -> str:
    code, out, err = run(capsys, *args)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def new_writer(digit: np.ndarray, slant: float = 0.7, bold: int = 3, size: int = 64) -> Image.Image:
    """One consistent hand the shipped model has never seen: a broad marker, strongly italic, dark on light."""
    big = np.asarray(Image.fromarray(np.pad(digit, 8)).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255
    pen = np.hypot(*np.mgrid[-bold:bold + 1, -bold:bold + 1]) <= bold + 0.3
    big = ndimage.grey_dilation(big, footprint=pen)
    # Row y reads from column x - slant * (centre - y): the top of every digit leans right.
    big = ndimage.affine_transform(big, np.array([[1, 0], [slant, 1]]), offset=(0, -slant * size / 2), order=1)
    return Image.fromarray((235 - 205 * np.clip(big, 0, 1)).astype(np.uint8))


def labelled_folder(root: Path, images, labels, jpeg: bool = False) -> Path:
    """DIR/<label>/<n>.png for each image; with ``jpeg``, every other one a JPEG instead."""
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        image = image if isinstance(image, Image.Image) else Image.fromarray(image)
        image.save(folder / f"{i:05d}{'.jpg' if jpeg and i % 2 else '.png'}", quality=92)
    return root


def first_per_digit(labels: np.ndarray, count: int) -> np.ndarray:
    return np.sort(np.concatenate([np.flatnonzero(labels == d)[:count] for d in range(10)]))


@pytest.fixture(scope="module")
def writer(tmp_path_factory, mnist) -> dict:
    """20 training digits per class in the new hand to learn from, and 60 test digits per class to judge."""
    root = tmp_path_factory.mktemp("writer")
    own = first_per_digit(mnist.train_labels, 20)
    held = first_per_digit(mnist.test_labels, 60)
    return {"own": labelled_folder(root / "own", [new_writer(mnist.train_images[i]) for i in own],
                                   mnist.train_labels[own], jpeg=True),
            "held_out": labelled_folder(root / "held_out", [new_writer(mnist.test_images[i]) for i in held],
                                        mnist.test_labels[held], jpeg=True)}


@pytest.fixture(scope="module")
def mnist_pngs(tmp_path_factory, mnist) -> tuple[Path, np.ndarray]:
    """The first 300 MNIST test digits as PNG files in the labelled layout, and their indices."""
    pick = np.arange(300)
    root = tmp_path_factory.mktemp("mnist_pngs")
    for i in pick:
        (root / str(mnist.test_labels[i])).mkdir(exist_ok=True)
        Image.fromarray(mnist.test_images[i]).save(root / str(mnist.test_labels[i]) / f"{i:04d}.png")
    return root, pick


# ---------------------------------------------------------------- evaluate --images

def test_evaluate_images_matches_the_model_and_predict(capsys, mnist_pngs, mnist, pretrained):
    root, pick = mnist_pngs
    code, out, err = run(capsys, "evaluate", "--images", root, "--json")
    assert code == 0 and err == ""
    result = json.loads(out)
    reference = evaluate(pretrained.model, mnist.test_images[pick], mnist.test_labels[pick])
    assert result["n"] == 300 and result["unreadable"] == 0 and result["no_digit"] == 0
    assert result["accuracy"] == pytest.approx(reference.accuracy, abs=1e-12)
    assert result["errors"] == int((reference.y_pred != reference.y_true).sum())
    assert result["loss"] == pytest.approx(reference.loss, rel=1e-3)
    assert result["confusion_matrix"] == reference.confusion.tolist()
    assert {"macro_f1", "most_confused", "per_class", "unreadable_files", "no_digit_files"} <= set(result)

    _, out, _ = run(capsys, "predict", root, "--recursive", "--json")
    rows = json.loads(out)
    labels = [int(Path(r["path"]).parent.name) for r in rows]
    assert result["accuracy"] == pytest.approx(np.mean([r["digit"] == y for r, y in zip(rows, labels)]), abs=1e-12)


def test_evaluate_images_text_output_and_model_alias(capsys, mnist_pngs, pretrained_path):
    root, _ = mnist_pngs
    code, out, _ = run(capsys, "evaluate", "--images", root, "--model", pretrained_path)
    assert code == 0
    assert out.startswith(f"{pretrained_path} (ensemble) on {root}: accuracy ")
    assert "n 300" in out and "no digit 0  unreadable 0" in out and "most confused:" in out
    _, positional, _ = run(capsys, "evaluate", pretrained_path, "--images", root)
    assert positional == out
    line = one_line_error(capsys, "evaluate", pretrained_path, "--model", "other.safetensors", "--images", root)
    assert line == (f"mnist-classifier evaluate: error: two models given ({pretrained_path} and --model "
                    "other.safetensors): give one")


def test_unreadable_and_no_digit_files_are_counted(capsys, tmp_path, mnist, pretrained):
    pick = first_per_digit(mnist.test_labels, 3)
    root = labelled_folder(tmp_path / "mine", mnist.test_images[pick], mnist.test_labels[pick])
    (root / "3" / "broken.png").write_bytes(b"not an image")
    Image.new("L", (60, 60), 235).save(root / "4" / "blank.png")
    (root / "notes").mkdir()
    Image.new("L", (60, 60), 235).save(root / "stray.png")
    code, out, err = run(capsys, "evaluate", "--images", root, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["unreadable"] == 1 and result["unreadable_files"] == [
        f"{root / '3' / 'broken.png'}: not an image (unrecognised file format)"]
    assert result["no_digit"] == 1 and result["no_digit_files"] == [
        f"{root / '4' / 'blank.png'}: no digit: uniform image (a single colour, no ink); counted as wrong"]
    assert result["warnings"] == [
        f"{root / 'notes'}: ignored, not a digit folder (0-9)",
        f"{root}: 1 image file(s) directly in the folder ignored (they need a digit subfolder)"]
    assert err.splitlines() == ["mnist-classifier evaluate: warning: " + line for line in
                                result["warnings"] + result["unreadable_files"] + result["no_digit_files"]]

    # The blank page is one more wrong answer of digit 4: in n, support and recall, in no confusion cell.
    assert result["n"] == 31
    four = result["per_class"]["4"]
    assert four["support"] == 4 and four["no_digit"] == 1 and four["recall"] <= 0.75
    assert four["accuracy"] == four["recall"]
    assert sum(map(sum, result["confusion_matrix"])) == 30 and sum(result["confusion_matrix"][4]) == 3
    right = sum(result["confusion_matrix"][d][d] for d in range(10))
    assert result["accuracy"] == pytest.approx(right / 31) and result["errors"] == 31 - right
    # ... and a uniform guess in the loss.
    reference = evaluate(pretrained.model, mnist.test_images[pick], mnist.test_labels[pick])
    assert result["loss"] == pytest.approx((reference.loss * 30 + math.log(10)) / 31, rel=1e-3)


def test_an_empty_digit_is_reported_not_an_error(capsys, tmp_path, mnist):
    pick = first_per_digit(mnist.test_labels, 2)
    pick = pick[mnist.test_labels[pick] != 5]
    root = labelled_folder(tmp_path / "mine", mnist.test_images[pick], mnist.test_labels[pick])
    (root / "5").mkdir()
    code, out, err = run(capsys, "evaluate", "--images", root, "--json")
    assert code == 0
    assert err == f"mnist-classifier evaluate: warning: {root / '5'}: no images of digit 5\n"
    result = json.loads(out)
    assert result["n"] == 18 and result["per_class"]["5"]["support"] == 0


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_folders_without_the_layout(capsys, tmp_path, command):
    def error(folder):
        args = ["evaluate", "--images", folder] if command == "evaluate" else \
            ["finetune", folder, "--out", tmp_path / "m.safetensors"]
        return one_line_error(capsys, *args)

    prefix = f"mnist-classifier {command}: error: "
    assert error(tmp_path / "nowhere") == f"{prefix}{tmp_path / 'nowhere'}: folder not found"
    flat = tmp_path / "flat"
    (flat / "sevens").mkdir(parents=True)
    Image.new("L", (30, 30), 0).save(flat / "a.png")
    assert error(flat) == f"{prefix}{flat}: no digit subfolders 0-9 ({LAYOUT})"
    assert error(flat / "a.png") == f"{prefix}{flat / 'a.png'}: not a folder ({LAYOUT})"
    assert not (tmp_path / "m.safetensors").exists()


def test_evaluate_images_with_nothing_readable(capsys, tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "x.png").write_bytes(b"")
    line = one_line_error(capsys, "evaluate", "--images", tmp_path, "--json")
    assert line == f"mnist-classifier evaluate: error: {tmp_path}: no readable images under the digit subfolders"


# ---------------------------------------------------------------- finetune: bad input

def test_finetune_has_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: mnist-classifier finetune")


@pytest.mark.parametrize("epochs", ["0", "-2"])
def test_finetune_rejects_non_positive_epochs(capsys, tmp_path, writer, epochs):
    out = tmp_path / "m.safetensors"
    line = one_line_error(capsys, "finetune", writer["own"], "--out", out, "--epochs", epochs)
    assert line == f"mnist-classifier finetune: error: epochs must be a positive integer, got {epochs}"
    assert list(tmp_path.iterdir()) == []


def test_finetune_out_must_be_a_file(capsys, tmp_path, writer):
    line = one_line_error(capsys, "finetune", writer["own"], "--out", tmp_path)
    assert line == (f"mnist-classifier finetune: error: {tmp_path}: is a folder; the output is a model file, "
                    f"e.g. {tmp_path / 'finetuned.safetensors'}")
    assert list(tmp_path.iterdir()) == []


def test_finetune_needs_two_digits(capsys, tmp_path, mnist):
    threes = np.flatnonzero(mnist.test_labels == 3)[:6]
    root = labelled_folder(tmp_path / "mine", mnist.test_images[threes], mnist.test_labels[threes])
    out = tmp_path / "m.safetensors"
    line = one_line_error(capsys, "finetune", root, "--out", out)
    assert line == (f"mnist-classifier finetune: error: {root}: images of one digit only (3); "
                    "fine-tuning needs at least two")
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_stratified_split_is_seeded_and_keeps_every_digit():
    from mnist_classifier.finetune import stratified_split

    labels = np.repeat(np.arange(10), [1, 2, 3, 5, 10, 11, 20, 40, 0, 7])
    train, val = stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[val], minlength=10).tolist() == [0, 1, 1, 1, 2, 2, 4, 8, 0, 1]
    assert np.bincount(labels[train], minlength=10).tolist() == [1, 1, 2, 4, 8, 9, 16, 32, 0, 6]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(again[1], val) and not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], val)


# ---------------------------------------------------------------- finetune: small runs

@pytest.fixture
def two_digits(tmp_path, mnist) -> Path:
    """Eight 1s and eight 7s, one unreadable file and one blank page among them."""
    pick = np.concatenate([np.flatnonzero(mnist.train_labels == d)[:8] for d in (1, 7)])
    root = labelled_folder(tmp_path / "mine", [new_writer(mnist.train_images[i]) for i in pick],
                           mnist.train_labels[pick])
    (root / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.new("L", (64, 64), 235).save(root / "7" / "blank.png")
    return root


def test_finetune_skips_bad_files_and_goes_on_without_empty_digits(capsys, tmp_path, two_digits, mnist_dir):
    out = tmp_path / "tuned.safetensors"
    code, stdout, err = run(capsys, "finetune", two_digits, "--out", out, "--epochs", "1", "--json",
                            "--data-dir", mnist_dir)
    assert code == 0, err
    summary = json.loads(stdout)
    lines = err.splitlines()
    assert len(lines) == 10 and all(line.startswith("mnist-classifier finetune: warning: ") for line in lines)
    assert f"mnist-classifier finetune: warning: {two_digits / '0'}: no images of digit 0" in lines
    assert summary["skipped"] == 2 and summary["skipped_files"][1] == (
        f"{two_digits / '7' / 'blank.png'}: no digit: uniform image (a single colour, no ink); skipped")
    assert summary["skipped_files"][0].startswith(f"{two_digits / '1' / 'broken.png'}: ")
    assert set(lines) == {"mnist-classifier finetune: warning: " + line
                          for line in summary["warnings"] + summary["skipped_files"]}
    assert summary["images_per_class"] == [0, 8, 0, 0, 0, 0, 0, 8, 0, 0]
    # 20% of each digit held out: two 1s and two 7s.
    assert summary["train_images"] == 12 and summary["validation_images"] == 4
    assert summary["model_path"] == str(out) and summary["epochs"] == 1
    assert read_metadata(out)["finetuned"]["on"]["images_per_class"] == summary["images_per_class"]


def test_finetune_keeps_the_base_weights_when_no_epoch_beats_them(capsys, tmp_path, two_digits, mnist_dir,
                                                                    monkeypatch, pretrained_path):
    import torch

    from mnist_classifier import finetune as module

    def ruinous_epoch(model, *args):
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return 9.9, 0.0, 1e-3  # loss, accuracy, mean learning rate

    monkeypatch.setattr(module, "_train_epoch", ruinous_epoch)
    out = tmp_path / "tuned.safetensors"
    code, stdout, _ = run(capsys, "finetune", two_digits, "--out", out, "--epochs", "2", "--data-dir", mnist_dir)
    assert code == 0
    assert "no epoch beat the base model, so its weights were kept" in stdout
    meta = read_metadata(out)["finetuned"]
    assert meta["kept_base"] is True and meta["best_epoch"] == 0
    assert meta["mnist_test_accuracy_after"] == meta["mnist_test_accuracy_before"]
    with safe_open(str(out), "pt") as tuned, safe_open(str(pretrained_path), "pt") as base:
        assert all(torch.equal(tuned.get_tensor(k), base.get_tensor(k)) for k in base.keys())


def test_python_api(tmp_path, two_digits, mnist_dir, mnist):
    clf = MNISTClassifier(data_dir=mnist_dir, device="cpu")
    before = clf.evaluate_images(two_digits)
    assert before["n"] == 17 and before["unreadable"] == 1 and before["no_digit"] == 1
    summary = clf.finetune(two_digits, out=tmp_path / "api.safetensors", epochs=2, progress=False)
    assert summary["model_path"] == str(tmp_path / "api.safetensors") and summary["epochs"] == 2
    assert clf.metadata["finetuned"]["settings"]["epochs"] == 2
    after = clf.evaluate_images(two_digits)
    assert not summary["kept_base"] and after["loss"] < before["loss"]  # it now answers with the tuned weights
    again = read_metadata(clf.save_model(tmp_path / "again.safetensors"))
    assert again["finetuned"]["on"]["path"] == str(two_digits)
    with pytest.raises(ConfigError, match="unknown fine-tuning option\\(s\\) learning_rate"):
        clf.finetune(two_digits, learning_rate=0.1)


# ---------------------------------------------------------------- finetune: the new writer

@pytest.mark.slow
def test_finetune_learns_a_new_hand_without_forgetting_mnist(capsys, tmp_path, writer, pretrained, mnist_dir):
    def held_out_accuracy(*model) -> float:
        code, out, _ = run(capsys, "evaluate", *model, "--images", writer["held_out"], "--json")
        assert code == 0
        return json.loads(out)["accuracy"]

    base = held_out_accuracy()
    assert base < 0.85  # the shipped model reads 99.65% of MNIST's test digits, far fewer in this hand

    out = tmp_path / "mine.safetensors"
    code, stdout, err = run(capsys, "finetune", writer["own"], "--out", out, "--json", "--quiet",
                            "--data-dir", mnist_dir)
    assert code == 0 and err == ""
    summary = json.loads(stdout)
    assert summary["images_per_class"] == [20] * 10 and summary["validation_images"] == 40
    assert summary["validation_accuracy_after"] > summary["validation_accuracy_before"]
    assert summary["mnist_test_accuracy_before"] == pytest.approx(pretrained.metadata["metrics"]["accuracy"])
    assert summary["mnist_test_accuracy_after"] >= 0.99

    tuned = held_out_accuracy(out)
    assert tuned >= base + 0.08, (base, tuned)

    # An ordinary model file that says where it came from; evaluate reads the same MNIST figure from it.
    meta = read_metadata(out)
    assert meta["architecture"] == "ensemble" and meta["finetuned"]["from"]["path"] == str(pretrained.path)
    assert meta["finetuned"]["on"]["path"] == str(writer["own"])
    assert meta["finetuned"]["settings"]["epochs"] == summary["epochs"] == 5
    assert meta["metrics"]["accuracy"] == summary["mnist_test_accuracy_after"]
    _, mnist_json, _ = run(capsys, "evaluate", out, "--json")
    assert json.loads(mnist_json)["accuracy"] == pytest.approx(summary["mnist_test_accuracy_after"], abs=1e-12)

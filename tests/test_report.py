"""The HTML report: built by the real CLI, numbers identical to `evaluate --json`, checked in headless Chromium."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
from dataclasses import replace
from types import SimpleNamespace

import pytest

from mnist_classifier import persist
from mnist_classifier.cli import build_parser, main
from mnist_classifier.plots import FIGURES
from mnist_classifier.report import _training_section, build_report, report_dir_for, smoothed_loss_floor

EVALUATE_KEYS = ["model", "architecture", "accuracy", "loss", "n", "errors", "per_class", "macro_f1",
                 "most_confused", "confusion_matrix"]


def cli_json(*args) -> dict:
    """Run the command-line entry point in this process (imports are paid once) and parse what it prints."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([str(a) for a in args]) == 0
    return json.loads(printed.getvalue())


@pytest.fixture(scope="module")
def shipped_report(tmp_path_factory, mnist_dir):
    """`mnist-classifier report --json` on the shipped model, and `evaluate --json` of the same model."""
    out = tmp_path_factory.mktemp("report") / "shipped"
    made = cli_json("report", "--out", out, "--data-dir", mnist_dir, "--json")
    evaluated = cli_json("evaluate", "--data-dir", mnist_dir, "--json")
    return SimpleNamespace(out=out, printed=made, evaluated=evaluated)


def embedded_numbers(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def test_report_folder_has_page_json_and_every_figure(shipped_report):
    out = shipped_report.out
    assert (out / "index.html").is_file() and (out / "report.json").is_file()
    for stem in (kind.name for kind in FIGURES):
        if stem == "training_history":  # the shipped ensemble's members were trained apart: no curve of its own
            assert not (out / "figures" / f"{stem}.png").exists()
            continue
        figure = out / "figures" / f"{stem}.png"
        assert figure.is_file() and figure.stat().st_size > 5_000, stem
        assert shipped_report.printed["figures"][stem] == str(figure)
    assert shipped_report.printed["index"] == str(out / "index.html")


def test_report_numbers_equal_evaluate_json(shipped_report):
    evaluated = shipped_report.evaluated
    saved = json.loads((shipped_report.out / "report.json").read_text())
    page = (shipped_report.out / "index.html").read_text()
    embedded = embedded_numbers(page)
    for key in EVALUATE_KEYS:
        assert shipped_report.printed[key] == evaluated[key], key
        assert saved[key] == evaluated[key], key
        assert embedded[key] == evaluated[key], key
    assert evaluated["accuracy"] >= 0.985 and evaluated["n"] == 10000

    # What a person reads on the page is the same numbers, rounded for display.
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    assert f"{evaluated['accuracy']:.2%}" in text and f"{evaluated['accuracy']:.6f}" in text
    assert f"{evaluated['loss']:.4f}" in text
    assert f"{evaluated['macro_f1']:.4f}" in text
    for digit, row in evaluated["per_class"].items():
        cells = [f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", f"{row['support']:,}"]
        assert re.search(rf"\b{digit}\s+" + r"\s+".join(map(re.escape, cells)), text), digit
    for pair in evaluated["most_confused"][:3]:
        assert f"{pair['true']} → {pair['predicted']} {pair['count']}" in re.sub(r"\s+", " ", text)


def test_report_page_is_self_contained(shipped_report):
    page = (shipped_report.out / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page), "no remote resources"
    assert "@import" not in page and "<link" not in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(FIGURES) - 1  # all but the training curves (see above)
    assert 'id="no-history"' in page
    assert all((shipped_report.out / source).is_file() for source in sources)


def test_report_page_in_headless_chromium(shipped_report, browser, artifacts_dir):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    failed, requested = [], []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("request", lambda request: requested.append(request.url))
    page.goto((shipped_report.out / "index.html").as_uri(), wait_until="load")
    assert failed == []
    assert requested and all(url.startswith("file://") for url in requested), requested
    shown = page.inner_text("#accuracy")
    assert shown == f"{shipped_report.evaluated['accuracy']:.2%}"
    assert page.inner_text("#card-accuracy").startswith(shown)
    widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == len(FIGURES) - 1 and min(widths) > 500, widths  # every figure decoded
    assert page.locator("#no-history").count() == 1
    page.screenshot(path=str(artifacts_dir / "report.png"), full_page=True)
    page.close()


def test_model_without_history_gets_a_report_that_says_so(pretrained, mnist, tmp_path):
    bare = persist.save_model(tmp_path / "bare.safetensors", pretrained.model, pretrained.metadata["architecture"],
                              pretrained.metadata["config"])
    assert "history" not in persist.read_metadata(bare)
    stale = tmp_path / "bare-report" / "figures" / "training_history.png"  # left by an earlier report there
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    report = build_report(bare, tmp_path / "bare-report", data=mnist, device="cpu")
    assert not stale.exists()
    page = report.index.read_text()
    assert 'id="no-history"' in page and "no training history" in page
    assert "training_history" not in report.figures and len(report.figures) == len(FIGURES) - 1
    assert report.summary["history_available"] is False
    assert report.summary["accuracy"] >= 0.985
    assert "Training settings" in page and "Not recorded" in page


@pytest.mark.parametrize("history", [None, {}, {"epoch": [], "train_loss": [], "best_epoch": None}])
def test_empty_history_section(history, tmp_path):
    section = _training_section({"history": history} if history is not None else {}, {}, tmp_path)
    assert 'id="no-history"' in section and "<img" not in section


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_missing_and_corrupt_model_files(tmp_path, capsys):
    out = tmp_path / "out"
    err = one_line_error(capsys, ["report", str(tmp_path / "nope.safetensors"), "--out", str(out)])
    assert err == f"mnist-classifier report: error: {tmp_path / 'nope.safetensors'}: model file not found"
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    err = one_line_error(capsys, ["report", str(corrupt), "--out", str(out)])
    assert str(corrupt) in err and "not a readable safetensors model file" in err
    assert not out.exists()  # nothing written for a model that cannot be read


def test_missing_data_leaves_no_empty_report_folder(tmp_path, capsys, pretrained_path):
    empty = tmp_path / "no-mnist-here"
    empty.mkdir()
    out = tmp_path / "reports" / "shipped"
    err = one_line_error(capsys, ["report", str(pretrained_path), "--out", str(out), "--data-dir", str(empty)])
    assert str(empty) in err and "mnist-classifier report: error:" in err
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("where", ["file", "below-file"])
def test_unwritable_output_folder(tmp_path, capsys, pretrained_path, where):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "file" else blocker / "report"
    err = one_line_error(capsys, ["report", str(pretrained_path), "--out", str(out)])
    assert err.startswith(f"mnist-classifier report: error: {out}: cannot write the report there (")


def test_train_writes_the_report_next_to_the_model(mnist, tmp_path, monkeypatch, capsys):
    """The real `train` command on a 3,000-digit slice of MNIST (so it takes seconds), report included."""
    import mnist_classifier.data

    small = SimpleNamespace(train_images=mnist.train_images[:3000], train_labels=mnist.train_labels[:3000],
                            test_images=mnist.test_images[:2000], test_labels=mnist.test_labels[:2000],
                            sha256=mnist.sha256)
    monkeypatch.setattr(mnist_classifier.data, "load_mnist", lambda *args, **kwargs: small)
    model = tmp_path / "models" / "quick.safetensors"
    assert main(["train", "-a", "cnn-fast", "--epochs", "2", "--validation-split", "0.2", "--out", str(model),
                 "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    # After the last epoch's line, the seconds of scoring and of the report each say what they are.
    steps = [err.index(text) for text in ("epoch 2/2  loss", "scoring on the 2,000 test digits ...",
                                          "writing the training report ...")]
    assert steps == sorted(steps), err
    folder = report_dir_for(model)
    assert folder == tmp_path / "models" / "quick-report"
    assert summary["report"] == str(folder / "index.html") and summary["report_seconds"] > 0
    assert (folder / "figures" / "training_history.png").is_file()
    saved = json.loads((folder / "report.json").read_text())
    assert saved["accuracy"] == summary["accuracy"] and saved["n"] == 2000
    assert saved["history_available"] and len(saved["metadata"]["history"]["epoch"]) == 2
    assert "2 epochs" in (folder / "index.html").read_text()


def test_train_report_opt_out():
    assert build_parser().parse_args(["train", "--no-report"]).report is False
    assert build_parser().parse_args(["train"]).report is True


def test_the_report_says_what_the_run_did_not_do(mnist, tmp_path, monkeypatch, capsys):
    """No validation set: the curves' caption says so and early stopping is marked inactive, as are the
    augmentation recipe of a run without augmentation and the distillation weight of a run without a teacher
    (while settings that acted carry no such note). Label smoothing:
    a note explains the training loss's floor and the under-confidence. The weakest digit named in the text
    is the one the per-class chart marks (least recall)."""
    import mnist_classifier.data

    small = SimpleNamespace(train_images=mnist.train_images[:3000], train_labels=mnist.train_labels[:3000],
                            test_images=mnist.test_images[:2000], test_labels=mnist.test_labels[:2000],
                            sha256=mnist.sha256)
    monkeypatch.setattr(mnist_classifier.data, "load_mnist", lambda *args, **kwargs: small)
    model = tmp_path / "plain.safetensors"
    assert main(["train", "-a", "cnn-fast", "--epochs", "1", "--label-smoothing", "0.05", "--early-stopping", "3",
                 "--out", str(model), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_path"] == str(model)
    page = html.unescape((report_dir_for(model) / "index.html").read_text())
    assert "on the training set (this run held out no validation set)" in page
    assert "training and validation sets" not in page
    assert re.search(r"early_stopping</td><td><code>3</code> \(inactive: no validation set to stop on\)", page)
    assert re.search(r"augment_recipe</td><td><code>affine</code> \(inactive: augmentation was off\)", page)
    assert re.search(r"distill</td><td><code>1.0</code> \(inactive: no teacher model\)", page)
    assert page.count("(inactive") == 3
    assert f"cannot fall below {smoothed_loss_floor(0.05):.2f}" in page and 'id="label-smoothing"' in page
    saved = json.loads((report_dir_for(model) / "report.json").read_text())
    recall = {d: v["recall"] for d, v in saved["per_class"].items()}
    named = re.search(r'<strong id="weakest">(\d)</strong>', page).group(1)
    assert recall[named] == min(recall.values())


def test_the_smoothed_loss_floor_is_the_targets_entropy():
    import torch

    target = torch.full((10,), 0.005)
    target[3] = 0.955
    assert smoothed_loss_floor(0.05) == pytest.approx(float(-(target * target.log()).sum()), rel=1e-6)
    assert smoothed_loss_floor(0) == 0.0


def test_figures_drawn_beside_are_those_drawn_alone(pretrained, mnist, tmp_path, monkeypatch):
    """Where a second process draws half of the figures, each figure is byte for byte the one drawn alone."""
    from mnist_classifier import report as report_module
    from mnist_classifier.evaluate import evaluate

    evaluation = evaluate(pretrained.model, mnist.test_images, mnist.test_labels)
    drawn = {}
    for forked in (True, False):
        monkeypatch.setattr(report_module, "_can_fork_a_drawer", lambda: forked)
        figures, seconds = report_module._draw_figures(tmp_path / str(forked), pretrained.model,
                                                       pretrained.metadata, evaluation, mnist)
        assert list(figures) == list(seconds) == [k.name for k in FIGURES if k.name != "training_history"]
        drawn[forked] = {name: path.read_bytes() for name, path in figures.items()}
    for name, image in drawn[False].items():
        assert drawn[True][name] == image, name


def test_the_figures_drawn_beside_are_about_half_of_the_drawing():
    from mnist_classifier import report as report_module

    beside = set(report_module.drawn_beside())
    cost = {side: sum(k.cost for k in FIGURES if (k.name in beside) == side) for side in (True, False)}
    assert not any(k.uses_model for k in FIGURES if k.name in beside)
    assert abs(cost[True] - cost[False]) <= min(k.cost for k in FIGURES), cost


def test_a_figure_that_fails_beside_fails_the_report(pretrained, mnist, tmp_path, monkeypatch):
    from mnist_classifier import plots
    from mnist_classifier import report as report_module
    from mnist_classifier.evaluate import evaluate

    def broken(inputs, path):
        raise RuntimeError("cannot draw this figure")

    monkeypatch.setattr(report_module, "_can_fork_a_drawer", lambda: True)
    beside = report_module.drawn_beside()[-1]
    monkeypatch.setitem(plots.KINDS, beside, replace(plots.KINDS[beside], draw=broken))
    evaluation = evaluate(pretrained.model, mnist.test_images, mnist.test_labels)
    with pytest.raises(RuntimeError, match="cannot draw this figure"):
        report_module._draw_figures(tmp_path, pretrained.model, pretrained.metadata, evaluation, mnist)

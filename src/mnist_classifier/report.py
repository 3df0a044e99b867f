"""The model report: every figure plus one ``index.html`` a person can open offline.

    report = build_report("models/cnn.safetensors", "reports/cnn")   # or build_report() for the shipped model
    print(report.index)                                               # reports/cnn/index.html

The folder holds ``index.html``, ``figures/*.png`` and ``report.json``. The page uses relative image paths
and inline CSS only (no scripts, fonts or styles from the network), so the folder can be zipped, mailed or
opened from a USB stick. The numbers on the page and in ``report.json`` come from the same ``Evaluation``
that ``mnist-classifier evaluate --json`` prints, so they match it exactly.
"""

from __future__ import annotations

import html
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import plots
from .atomic import write_text
from .errors import MNISTClassifierError
from .reprs import compact_repr

FIGURES_DIR = "figures"


class ReportError(MNISTClassifierError):
    """The report folder cannot be created or written."""


@dataclass
class Report:
    out_dir: Path
    index: Path
    summary: dict  # what report.json holds: the evaluate summary plus model facts
    figures: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # time per step, for the benchmark

    def __repr__(self) -> str:
        return compact_repr(self, {"index": str(self.index), "accuracy": self.summary.get("accuracy"),
                                   "figures": len(self.figures)})

    def to_json(self) -> dict:
        return {"index": str(self.index), "out_dir": str(self.out_dir),
                "figures": {k: str(v) for k, v in self.figures.items()}, **self.summary}


# ---------------------------------------------------------------- entry points

def build_report(model_path=None, out_dir=None, data_dir=None, device: str = "auto", data=None) -> Report:
    """Load a model file (default: the shipped one), score it on the MNIST test set, write the report folder."""
    from .data import load_mnist
    from .evaluate import evaluate
    from .inference import resolve_device
    from .persist import load_model, pretrained_path

    seconds = {}
    started = time.perf_counter()
    loaded = load_model(model_path or pretrained_path(), device=resolve_device(device))
    out_dir = Path(out_dir) if out_dir else Path("reports") / loaded.path.stem
    created = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]
    ensure_writable(out_dir)  # fail before the expensive part
    try:
        data = data if data is not None else load_mnist(data_dir, progress=False)
        seconds["load"] = time.perf_counter() - started
        started = time.perf_counter()
        evaluation = evaluate(loaded.model, data.test_images, data.test_labels)
        seconds["evaluate"] = time.perf_counter() - started
        report = write_report(out_dir, loaded.model, loaded.metadata, evaluation, data, loaded.path)
    except BaseException:
        _remove_empty(created)  # a failed report leaves no empty folders behind
        raise
    report.seconds = {**seconds, **report.seconds}
    return report


def _remove_empty(folders: list[Path]) -> None:
    """Remove the given folders, deepest first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def report_dir_for(model_path) -> Path:
    """Where ``train`` puts the report of the model it wrote: ``<folder>/<model stem>-report/``."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}-report")


def write_training_report(result, data) -> Report:
    """The report for a model ``train`` just saved (``TrainResult`` with ``model_path``), next to the file."""
    from .persist import read_metadata

    started = time.perf_counter()
    metadata = read_metadata(result.model_path)
    report = write_report(report_dir_for(result.model_path), result.model, metadata, result.evaluation, data,
                          Path(result.model_path))
    report.seconds["total"] = time.perf_counter() - started
    return report


def write_report(out_dir, model, metadata: dict, evaluation, data, model_path=None) -> Report:
    """Draw every figure and write ``index.html`` and ``report.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    ensure_writable(out_dir)
    summary = report_summary(model, metadata, evaluation, model_path)
    figures, seconds = _draw_figures(out_dir / FIGURES_DIR, model, metadata, evaluation, data)
    summary["history_available"] = "training_history" in figures
    started = time.perf_counter()
    index = write_text(out_dir / "index.html", render_html(summary, metadata, evaluation, figures, out_dir))
    write_text(out_dir / "report.json", json.dumps(summary, indent=2) + "\n")
    seconds["html"] = time.perf_counter() - started
    return Report(out_dir, index, summary, figures, seconds)


def report_summary(model, metadata: dict, evaluation, model_path=None) -> dict:
    """The evaluate summary (same keys and values as ``evaluate --json``) plus what the page says about the model."""
    from .plots import calibration_bins

    return {
        "model": str(model_path) if model_path else None,
        "architecture": metadata.get("architecture"),
        **evaluation.summary(),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "expected_calibration_error": calibration_bins(evaluation.y_true, evaluation.probabilities)["ece"],
        "metadata": metadata,
    }


def ensure_writable(folder: Path) -> None:
    """Create the folder and prove a file can be written there, with a one-line error if not."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"{folder}: cannot write the report there (it is a file, not a folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ReportError(f"{folder}: cannot write the report there ({exc.strerror or exc})") from None


# ---------------------------------------------------------------- figures

def _draw_figures(folder: Path, model, metadata, evaluation, data) -> tuple[dict, dict]:
    """Every registered figure (plots.FIGURES) that the inputs can give; a figure they cannot give is
    removed from the folder, lest one of an earlier report there stay behind.

    Drawing is matplotlib's Python, one core per process: where a second core and fork are at hand, a
    forked copy of this process draws about half of the figures that need no model (drawn_beside; it
    never touches torch, whose threads do not survive a fork), while this one draws the rest.
    """
    global _FORKED_INPUTS
    inputs = _figure_inputs(model, metadata, evaluation, data)
    beside = drawn_beside() if _can_fork_a_drawer() else []
    here = [kind.name for kind in plots.FIGURES if kind.name not in beside]
    if not beside:
        drawn = _draw(inputs, here, folder)
    else:
        import concurrent.futures
        import multiprocessing

        _FORKED_INPUTS = inputs  # the forked drawer has them as they are: nothing is pickled
        try:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
                other = pool.submit(_draw_forked, beside, folder)
                drawn = {**_draw(inputs, here, folder), **other.result()}
        finally:
            _FORKED_INPUTS = None
    figures = {name: drawn[name][0] for name in plots.KINDS if drawn[name] is not None}
    return figures, {name: drawn[name][1] for name in figures}


_FORKED_INPUTS: "plots.FigureInputs | None" = None


def drawn_beside() -> list[str]:
    """The figures a second process draws, from those that need no model: dealt out costliest first, each
    to whichever process has less drawing so far, so that both finish at about the same time."""
    here = sum(kind.cost for kind in plots.FIGURES if kind.uses_model)
    beside, names = 0, []
    for kind in sorted((k for k in plots.FIGURES if not k.uses_model), key=lambda k: -k.cost):
        if beside < here:
            names.append(kind.name)
            beside += kind.cost
        else:
            here += kind.cost
    return names


def _can_fork_a_drawer() -> bool:
    """Linux only: elsewhere fork is missing or unsafe in a process that has loaded system frameworks."""
    return sys.platform.startswith("linux") and len(os.sched_getaffinity(0)) > 1


def _draw_forked(names: list[str], folder: Path) -> dict:
    return _draw(_FORKED_INPUTS, names, folder)


def _draw(inputs: plots.FigureInputs, names: list[str], folder: Path) -> dict:
    """name -> (path, seconds), or None for a figure the inputs cannot give (its old file removed)."""
    drawn = {}
    for name in names:
        started = time.perf_counter()
        path = plots.KINDS[name].draw(inputs, folder / f"{name}.png")
        if path is None:
            (folder / f"{name}.png").unlink(missing_ok=True)
        drawn[name] = None if path is None else (path, time.perf_counter() - started)
    return drawn


def _figure_inputs(model, metadata, evaluation, data) -> plots.FigureInputs:
    return plots.FigureInputs(model, metadata.get("history"), evaluation.y_true, evaluation.y_pred,
                              evaluation.probabilities, data.test_images, data.train_images, data.train_labels)


# ---------------------------------------------------------------- the page

CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #dde2ea; --accent: #1f6fb4; --good: #2e7d32; --bad: #c62828; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #f6f7fa; }
header { background: var(--ink); color: white; padding: 1.4rem 2rem; }
header h1 { margin: 0 0 .2rem; font-size: 1.5rem; }
header p { margin: 0; color: #c9d1de; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
nav { margin: 0 0 1.5rem; font-size: .95rem; }
nav a { margin-right: 1rem; color: var(--accent); text-decoration: none; }
section { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 1.2rem 1.5rem;
          margin-bottom: 1.5rem; }
h2 { margin: 0 0 .8rem; font-size: 1.25rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 1rem; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem; }
.card .value { font-size: 1.7rem; font-weight: 700; }
.card .label { color: var(--muted); font-size: .9rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .8rem; border-bottom: 1px solid var(--line); text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid var(--ink); }
tr.summary td { font-weight: 600; background: #f6f7fa; }
.meta td { text-align: left; vertical-align: top; }
.meta td:first-child { color: var(--muted); white-space: nowrap; }
code { font: .88em ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; }
.columns { display: flex; flex-wrap: wrap; gap: 2rem; align-items: flex-start; }
figure { margin: 0 0 1.5rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .92rem; margin-top: .3rem; }
.note { border-left: 4px solid #e07b16; background: #fff6ec; padding: .6rem 1rem; margin: 0 0 1rem; }
.low { color: var(--bad); font-weight: 600; }
footer { color: var(--muted); font-size: .85rem; text-align: center; padding-bottom: 2rem; }
"""


def render_html(summary: dict, metadata: dict, evaluation, figures: dict[str, Path], out_dir: Path) -> str:
    """The whole page as one string: inline CSS, relative image links, the numbers also as embedded JSON."""
    name = Path(summary["model"]).name if summary.get("model") else "model"
    sections = [
        _overview(summary),
        _model_section(summary, metadata),
        _training_section(metadata, figures, out_dir),
        _metrics_section(evaluation, summary),
        *_figure_sections(figures, out_dir, skip={"training_history"}),
    ]
    numbers = {k: v for k, v in summary.items() if k != "metadata"}
    # "</" must not appear inside a <script> element, so it is escaped in the embedded JSON.
    embedded = json.dumps(numbers).replace("</", "<\\/")
    nav = "".join(f'<a href="#{anchor}">{title}</a>' for anchor, title in _nav_items(figures))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Model report: {_e(name)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>Model report: {_e(name)}</h1>
<p>{_e(summary.get('architecture') or '?')} · test accuracy <strong id="accuracy">{summary['accuracy']:.2%}</strong>
 on {summary['n']:,} MNIST test digits · created {_e(metadata.get('created', 'unknown'))}</p>
</header>
<main>
<nav>{nav}</nav>
{''.join(sections)}
</main>
<footer>Written by mnist-classifier {_e(metadata.get('package_version', ''))}. The numbers above are also in
<code>report.json</code> and match <code>mnist-classifier evaluate --json</code> for the same model.</footer>
<script type="application/json" id="report-data">{embedded}</script>
</body>
</html>
"""


def _display_width(png: Path) -> int:
    """CSS pixels for a 150 DPI figure: shown at 100 DPI, so text reads like body text and stays sharp on HiDPI."""
    from PIL import Image

    with Image.open(png) as image:
        return round(image.width / 1.5)


def _plain(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _nav_items(figures) -> list[tuple[str, str]]:
    items = [("overview", "Overview"), ("model", "Model"), ("training", "Training"), ("metrics", "Metrics")]
    seen = []
    for kind in plots.FIGURES:
        if kind.name in figures and kind.section != "Training" and kind.section not in seen:
            seen.append(kind.section)
    return items + [(_anchor(section), section) for section in seen]


def _anchor(section: str) -> str:
    return section.lower().replace(" ", "-")


def _overview(summary: dict) -> str:
    cards = [
        (f"{summary['accuracy']:.2%}", "test accuracy", "card-accuracy"),
        (f"{summary['loss']:.4f}", "test loss (cross-entropy)", "card-loss"),
        (f"{summary['errors']:,}", f"errors in {summary['n']:,} test digits", "card-errors"),
        (f"{summary['macro_f1']:.4f}", "macro F1", "card-f1"),
        (f"{summary['expected_calibration_error']:.2%}", "expected calibration error", "card-ece"),
        (f"{summary['parameters']:,}", "parameters", "card-parameters"),
    ]
    body = "".join(f'<div class="card" id="{cid}"><div class="value">{_e(v)}</div><div class="label">{_e(label)}'
                   f"</div></div>" for v, label, cid in cards)
    return f'<section id="overview"><h2>Overview</h2><div class="cards">{body}</div></section>\n'


def _model_section(summary: dict, metadata: dict) -> str:
    training = metadata.get("training") or {}
    rows = [
        ("file", f"<code>{_e(summary.get('model') or '(in memory)')}</code>"),
        ("architecture", _e(metadata.get("architecture", "?"))),
        ("model options", f"<code>{_e(json.dumps(metadata.get('config', {})))}</code>"),
        ("parameters", f"{summary['parameters']:,}"),
        ("created", _e(metadata.get("created", "unknown"))),
        ("package / torch", _e(f"{metadata.get('package_version', '?')} / {metadata.get('torch_version', '?')}")),
        ("training time", _e(f"{metadata['train_seconds']:.1f} s") if metadata.get("train_seconds") else "unknown"),
        ("dataset SHA-256", f"<code>{_e(metadata.get('dataset_sha256', 'unknown'))}</code>"),
    ]
    meta_rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    if training:
        train_rows = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(_plain(v))}</code>{_e(_setting_note(k, training))}"
                             f"</td></tr>" for k, v in training.items())
        train_table = f'<div><h3>Training settings</h3><table class="meta">{train_rows}</table></div>'
    else:
        train_table = '<div><h3>Training settings</h3><p>Not recorded in this model file.</p></div>'
    return (f'<section id="model"><h2>Model</h2><div class="columns"><div><h3>Model file</h3>'
            f'<table class="meta">{meta_rows}</table></div>{train_table}</div></section>\n')


def _setting_note(name: str, training: dict) -> str:
    """A word beside a setting that did nothing in this run, so the table does not mislead."""
    if name == "early_stopping" and training.get(name) and not training.get("validation_split"):
        return " (inactive: no validation set to stop on)"
    if name == "augment_recipe" and not training.get("augment"):
        return " (inactive: augmentation was off)"
    if name == "distill" and not training.get("teacher"):
        return " (inactive: no teacher model)"
    return ""


def smoothed_loss_floor(smoothing: float, classes: int = 10) -> float:
    """The lowest cross-entropy reachable against label-smoothed targets: their own entropy."""
    right, other = 1 - smoothing + smoothing / classes, smoothing / classes
    return float(-(right * np.log(right) + (classes - 1) * other * np.log(other))) if smoothing > 0 else 0.0


def _training_section(metadata: dict, figures: dict, out_dir: Path) -> str:
    history = metadata.get("history") or {}
    if "training_history" not in figures:
        body = ('<p class="note" id="no-history">This model file has no training history, so there are no '
                "training curves (the model was saved without one, e.g. trained elsewhere or converted).</p>")
        return f'<section id="training"><h2>Training</h2>{body}</section>\n'
    epochs = len(history.get("epoch") or [])
    facts = [f"{epochs} epoch{'s' if epochs != 1 else ''}"]
    if history.get("best_epoch") is not None:
        facts.append(f"weights kept from epoch {history['best_epoch']}")
    if history.get("stopped_early"):
        facts.append("stopped early (validation loss stopped improving)")
    if not any(v is not None for v in history.get("val_loss") or []):
        facts.append("no validation split (trained on all 60,000 digits)")
    note = f"<p>{_e('; '.join(facts))}.</p>"
    smoothing = (metadata.get("training") or {}).get("label_smoothing") or 0
    if smoothing:
        note += (f'<p id="label-smoothing">Trained with label smoothing {smoothing:g}: the targets give the true '
                 f"digit {1 - smoothing + smoothing / 10:.3f}, not 1, so the training loss cannot fall below "
                 f"{smoothed_loss_floor(smoothing):.2f} (the test loss is measured against plain labels), and the "
                 "model's confidence is held below 1 on purpose, which the reliability diagram shows as "
                 "under-confidence.</p>")
    return (f'<section id="training"><h2>Training</h2>{note}'
            f'{_figure_html("training_history", figures, out_dir, history)}</section>\n')


def _metrics_section(evaluation, summary: dict) -> str:
    report = evaluation.classification_report()
    per_class = summary["per_class"]
    weakest = str(evaluation.weakest_digit)  # the red bar of the per-class chart, the marked row here
    lowest_f1 = min(per_class, key=lambda d: per_class[d]["f1"])
    rows = []
    for digit in map(str, range(10)):
        r = report[digit]
        cls = ' class="low"' if digit == weakest else ""
        rows.append(f'<tr{cls}><td>{digit}</td><td>{r["precision"]:.4f}</td><td>{r["recall"]:.4f}</td>'
                    f'<td>{r["f1-score"]:.4f}</td><td>{int(r["support"]):,}</td></tr>')
    for key in ("macro avg", "weighted avg"):
        r = report[key]
        rows.append(f'<tr class="summary"><td>{key}</td><td>{r["precision"]:.4f}</td><td>{r["recall"]:.4f}</td>'
                    f'<td>{r["f1-score"]:.4f}</td><td>{int(r["support"]):,}</td></tr>')
    table = ('<table id="classification-report"><thead><tr><th>digit</th><th>precision</th><th>recall</th>'
             f'<th>F1</th><th>support</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    totals = np.bincount(evaluation.y_true, minlength=10)
    pairs = "".join(f'<tr><td>{p["true"]} → {p["predicted"]}</td><td>{p["count"]}</td>'
                    f'<td>{100 * p["count"] / max(totals[p["true"]], 1):.2f}%</td></tr>'
                    for p in summary["most_confused"])
    confused = ('<table id="most-confused"><thead><tr><th>true → predicted</th><th>count</th>'
                f'<th>% of true digit</th></tr></thead><tbody>{pairs or "<tr><td>none</td></tr>"}</tbody></table>')
    return (f'<section id="metrics"><h2>Metrics on the test set</h2>'
            f'<p>Accuracy <strong>{summary["accuracy"]:.2%}</strong> ({summary["accuracy"]:.6f}), '
            f'loss <strong>{summary["loss"]:.4f}</strong>, {summary["errors"]:,} errors in {summary["n"]:,} digits. '
            f'Digit read correctly least often: <strong id="weakest">{weakest}</strong> (recall '
            f'{per_class[weakest]["recall"]:.2%}, the marked row and the red bar of the per-class chart)'
            f'{"" if lowest_f1 == weakest else f"; lowest F1: {lowest_f1}"}.</p>'
            f'<div class="columns"><div><h3>Classification report</h3>{table}</div>'
            f'<div><h3>Most confused pairs</h3>{confused}</div></div></section>\n')


def _figure_sections(figures: dict, out_dir: Path, skip: set) -> list[str]:
    sections: dict[str, list[str]] = {}
    for kind in plots.FIGURES:
        if kind.name in figures and kind.name not in skip:
            sections.setdefault(kind.section, []).append(_figure_html(kind.name, figures, out_dir))
    return [f'<section id="{_anchor(section)}"><h2>{section}</h2>{"".join(items)}</section>\n'
            for section, items in sections.items()]


def _figure_html(stem: str, figures: dict, out_dir: Path, history: dict | None = None) -> str:
    caption = plots.KINDS[stem].caption_for(history)
    source = Path(os.path.relpath(figures[stem], out_dir)).as_posix()
    width = _display_width(figures[stem])
    return (f'<figure id="figure-{stem}"><img src="{_e(source)}" width="{width}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")

"""Every figure the package draws: one style, PNG at 150 DPI, written atomically, each function returns its path.

Figures are drawn on matplotlib ``Figure`` objects rendered by the Agg canvas, never through ``pyplot``:
no global backend is switched (a user's notebook keeps its own), nothing needs a display, and figures are
freed as soon as they are written. Each function takes plain arrays (or the library's own objects) and a
path, so the report, the CLI, the notebooks and ``MNISTClassifier`` all draw the same pictures.

Digits are shown as dark ink on white (``gray_r``): the model itself sees light ink on a dark
background, but dark-on-white is what people read at a glance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .atomic import atomic_path
from .errors import ConfigError
from .evaluate import confusion_counts, weakest_digit

DPI = 150
DIGITS = np.arange(10)

# One palette for every figure, so "green" means correct and "red" wrong everywhere.
BLUE, ORANGE, GREEN, RED, GREY = "#1f6fb4", "#e07b16", "#2e7d32", "#c62828", "#7f7f7f"
DIGIT_CMAP = "gray_r"

STYLE = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.35,
    "grid.linestyle": "-",
    "figure.titlesize": 14,
    "figure.titleweight": "bold",
    "legend.frameon": False,
    "legend.fontsize": 9.5,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
}

# Figure sizes in inches (at 150 DPI each PNG is exactly (width*150, height*150) pixels) are registered
# with each figure in FIGURES, at the end of this module.
CUSTOM_ROW_HEIGHT = 2.6  # inches per image in the custom-predictions figure
CUSTOM_WIDTH = 11.0


def figure_size(name: str, rows: int | None = None) -> tuple[float, float]:
    """Inches of a figure kind; ``rows`` for the figures whose height follows their content."""
    if name == "custom_predictions":
        return CUSTOM_WIDTH, CUSTOM_ROW_HEIGHT * max(rows or 1, 1)
    if name == "predictions" and rows is not None:
        return KINDS[name].size[0], 0.5 + 1.7 * max(rows, 1)  # 5 rows: the standard 8 x 9 inches
    return KINDS[name].size


def pixel_size(name: str, rows: int | None = None) -> tuple[int, int]:
    """The (width, height) in pixels of a figure's PNG."""
    width, height = figure_size(name, rows)
    return round(width * DPI), round(height * DPI)


# ---------------------------------------------------------------- plumbing

def _figure(name: str, size: tuple[float, float] | None = None) -> Figure:
    import matplotlib

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=size or figure_size(name), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _styled(draw):
    """Run a drawing function under the shared style (rc settings are read while artists are created)."""
    import functools

    import matplotlib

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def _save(fig: Figure, path) -> Path:
    """Lay the figure out once and draw it once into a PNG, written atomically (temp file + rename) so a
    reader never sees half an image.

    The canvas prints the PNG itself: savefig would draw the figure once more beforehand, without
    rendering, for a layout engine, though the layout is done and kept (a figure with colour bars keeps a
    placeholder engine).
    """
    import matplotlib

    path = Path(path)
    with atomic_path(path) as tmp, matplotlib.rc_context(STYLE):
        engine = fig.get_layout_engine()
        if engine is not None:
            engine.execute(fig)
            fig.set_layout_engine("none")
        fig.canvas.print_png(tmp)
    return path


def _frame_style(color: str) -> tuple[str, float, str]:
    """(frame colour, frame width, title weight) of a digit: a coloured answer stands out, a plain one does not."""
    return (color, 2.0, "bold") if color != "black" else ("#cccccc", 0.8, "normal")


def _digit(ax, image, title: str | None = None, color: str = "black", fontsize: float = 10) -> None:
    ax.imshow(np.asarray(image), cmap=DIGIT_CMAP, vmin=0, vmax=255 if np.asarray(image).dtype == np.uint8 else 1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    edge, width, weight = _frame_style(color)
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(edge)
        spine.set_linewidth(width)
    if title:
        ax.set_title(title, color=color, fontsize=fontsize, fontweight=weight)


def _digit_grid(fig, images, titles, colors, cols: int, fontsize: float = 10) -> None:
    """Digits in rows of ``cols``, each framed in its colour under its title, as one image on one axes.

    Looks like a grid of _digit axes; an axes per digit made matplotlib's layout and drawing most of the
    cost of these figures.
    """
    from matplotlib.patches import Rectangle

    lines = max((title.count("\n") + 1 for title in titles), default=1)
    side, gap, head = 28, 3, 2 + 4 * lines  # in MNIST pixels: the digit, between digits, the title above it
    rows = max(math.ceil(len(images) / cols), 1)
    sheet = np.zeros(((side + head) * rows, (side + gap) * cols - gap), dtype=np.float32)
    ax = fig.add_subplot()
    ax.set_axis_off()
    for k, (image, title, color) in enumerate(zip(images, titles, colors)):
        row, col = divmod(k, cols)
        top, left = row * (side + head) + head, col * (side + gap)
        image = np.asarray(image)
        sheet[top:top + side, left:left + side] = image / (255.0 if image.dtype == np.uint8 else 1.0)
        edge, width, weight = _frame_style(color)
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, clip_on=False, edgecolor=edge,
                               linewidth=width))
        ax.text(left + side / 2 - 0.5, top - 1.5, title, ha="center", va="bottom", color=color, fontsize=fontsize,
                fontweight=weight, linespacing=1.1)
    ax.imshow(sheet, cmap=DIGIT_CMAP, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlim(-1.5, sheet.shape[1] + 0.5)
    ax.set_ylim(sheet.shape[0] + 0.5, -0.5)


def _as_floats(values) -> np.ndarray:
    """History lists may hold None (no validation set): make them NaN so matplotlib leaves gaps."""
    return np.array([np.nan if v is None else float(v) for v in (values or [])], dtype=float)


def _history_dict(history) -> dict:
    if history is None:
        return {}
    if hasattr(history, "to_dict"):
        return history.to_dict()
    return dict(history)


def has_history(history) -> bool:
    """True when there is at least one epoch to draw."""
    return len(_history_dict(history).get("epoch") or []) > 0


# ---------------------------------------------------------------- the data

@_styled
def plot_samples(images, labels, path, count: int = 20, seed: int = 0) -> Path:
    """A 4x5 grid of training digits with their labels (a random but repeatable pick)."""
    images, labels = np.asarray(images), np.asarray(labels)
    count = min(count, len(images))
    pick = np.random.default_rng(seed).choice(len(images), size=count, replace=False)
    cols = 5
    fig = _figure("samples")
    _digit_grid(fig, images[pick], [f"label {int(labels[i])}" for i in pick], ["black"] * count, cols)
    fig.suptitle(f"MNIST samples ({count} of {len(images):,})")
    return _save(fig, path)


@_styled
def plot_class_distribution(labels, path, title: str = "Training set: digits per class") -> Path:
    """Bar chart of how many examples each digit has, with the count on each bar."""
    counts = np.bincount(np.asarray(labels).astype(int), minlength=10)[:10]
    fig = _figure("class_distribution")
    ax = fig.subplots()
    bars = ax.bar(DIGITS, counts, color=BLUE, width=0.7)
    ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=2, fontsize=9)
    mean = counts.mean()
    ax.axhline(mean, color=GREY, linestyle="--", linewidth=1, label=f"mean {mean:,.0f} per digit")
    ax.set_xticks(DIGITS)
    ax.set_xlabel("digit")
    ax.set_ylabel("examples")
    ax.set_ylim(0, counts.max() * 1.2)
    ax.legend(loc="upper right")
    ax.set_title(f"{title} (n = {counts.sum():,})")
    ax.grid(axis="y")
    ax.set_axisbelow(True)
    return _save(fig, path)


# ---------------------------------------------------------------- training

@_styled
def plot_training_history(history, path) -> Path:
    """Accuracy, loss (train vs validation) and learning rate per epoch; the kept (best) epoch is marked."""
    h = _history_dict(history)
    if not has_history(h):
        raise ConfigError("no training history to plot (a model trained elsewhere or loaded without history)")
    epochs = np.asarray(h["epoch"], dtype=float)
    marker = "o" if len(epochs) <= 30 else None  # points stay visible for short runs (even a single epoch)
    fig = _figure("training_history")
    ax_acc, ax_loss, ax_lr = fig.subplots(1, 3)
    for ax, key, label in ((ax_acc, "accuracy", "accuracy"), (ax_loss, "loss", "loss")):
        train, val = _as_floats(h.get(f"train_{key}")), _as_floats(h.get(f"val_{key}"))
        ax.plot(epochs, train, color=BLUE, marker=marker, label="train")
        if np.isfinite(val).any():
            ax.plot(epochs, val, color=ORANGE, marker=marker, label="validation")
        ax.set_title(f"{label.capitalize()} per epoch")
        ax.set_ylabel(label)
    lr = _as_floats(h.get("lr"))
    if np.isfinite(lr).any():
        ax_lr.plot(epochs, lr, color=GREEN, marker=marker, label="learning rate")
        finite = lr[np.isfinite(lr) & (lr > 0)]
        if len(finite) and finite.max() / finite.min() > 20:
            ax_lr.set_yscale("log")
        else:
            ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax_lr.set_title("Learning rate (mean of each epoch)")
    ax_lr.set_ylabel("learning rate")
    best, stopped = h.get("best_epoch"), bool(h.get("stopped_early"))
    for ax in (ax_acc, ax_loss, ax_lr):
        ax.set_xlabel("epoch")
        ax.grid(True)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(epochs) == 1:  # a single point: centre it and label only the epoch that exists
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
            ax.set_xticks([epochs[0]])
        if best is not None:
            ax.axvline(best, color=RED, linestyle="--", linewidth=1.2,
                       label=f"best epoch {best} (weights kept)" if not stopped or best != epochs[-1]
                       else f"best epoch {best}")
        if stopped:
            ax.axvline(epochs[-1], color=GREY, linestyle=":", linewidth=1.5,
                       label=f"early stop (epoch {int(epochs[-1])})")
        ax.legend(loc="best")
    seconds = sum(v for v in (h.get("seconds") or []) if v)
    fig.suptitle(f"Training history: {len(epochs)} epoch{'s' if len(epochs) != 1 else ''}"
                 + (f", {seconds:.0f} s" if seconds else "")
                 + (" (stopped early)" if stopped else ""))
    return _save(fig, path)


# ---------------------------------------------------------------- evaluation

@_styled
def plot_confusion_matrix(y_true, y_pred, path) -> Path:
    """Counts (log colour scale, so single errors still show) next to the row-normalized matrix in percent."""
    counts = confusion_counts(y_true, y_pred)
    rows = counts.sum(axis=1, keepdims=True)
    percent = 100.0 * counts / np.maximum(rows, 1)
    fig = _figure("confusion_matrix")
    ax_counts, ax_pct = fig.subplots(1, 2)
    shown = np.where(counts > 0, counts, np.nan)  # zero cells stay white
    image = ax_counts.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)))
    fig.colorbar(image, ax=ax_counts, shrink=0.85, label="count (log scale)")
    _annotate_cells(ax_counts, counts, lambda v: f"{v:d}" if v else "", counts.max() ** 0.6)
    image = ax_pct.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(image, ax=ax_pct, shrink=0.85, label="% of the true digit's examples")
    _annotate_cells(ax_pct, percent, lambda v: "" if v == 0 else (f"{v:.1f}" if v >= 0.05 else "<0.1"), 55)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax_counts.set_title("Counts")
    ax_pct.set_title("Row-normalized (% per true digit)")
    for ax in (ax_counts, ax_pct):
        ax.set_xticks(DIGITS)
        ax.set_yticks(DIGITS)
        ax.set_xlabel("predicted digit")
        ax.set_ylabel("true digit")
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle(f"Confusion matrix: {counts.sum():,} test digits, accuracy {accuracy:.2%}")
    return _save(fig, path)


def _annotate_cells(ax, values, fmt, dark_above) -> None:
    for (t, p), value in np.ndenumerate(values):
        text = fmt(value.item())
        if text:
            ax.text(p, t, text, ha="center", va="center", fontsize=8,
                    color="white" if value > dark_above else "black",
                    fontweight="bold" if t == p else "normal", in_layout=False)  # inside its cell


@_styled
def plot_per_class_accuracy(y_true, y_pred, path) -> Path:
    """Accuracy (recall) per true digit, zoomed to where the differences are, errors counted on each bar."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    totals = np.bincount(y_true, minlength=10)[:10]
    correct = np.bincount(y_true[y_true == y_pred], minlength=10)[:10]
    accuracy = 100.0 * correct / np.maximum(totals, 1)
    overall = 100.0 * correct.sum() / max(totals.sum(), 1)
    weakest = weakest_digit(y_true, y_pred)
    fig = _figure("per_class_accuracy")
    ax = fig.subplots()
    colors = [RED if d == weakest and a < 100 else BLUE for d, a in zip(DIGITS, accuracy)]
    bars = ax.bar(DIGITS, accuracy, color=colors, width=0.7)
    ax.bar_label(bars, labels=[f"{a:.1f}%\n{t - c} err" for a, c, t in zip(accuracy, correct, totals)],
                 padding=2, fontsize=8)
    ax.axhline(overall, color=GREY, linestyle="--", linewidth=1)
    low = min(accuracy.min(), overall)
    bottom = max(0.0, math.floor(low - (100 - low) * 0.6 - 0.5))
    ax.set_ylim(bottom, 100.0 + (100 - bottom) * 0.12)  # headroom for the labels on top of the bars
    ax.set_yticks([t for t in ax.get_yticks() if bottom <= t <= 100])
    ax.set_xticks(DIGITS)
    ax.set_xlabel("true digit")
    ax.set_ylabel("accuracy (%, axis zoomed)")
    ax.set_title(f"Per-class accuracy on the test set (dashed: overall {overall:.2f}%, red: weakest digit)",
                 fontsize=11)
    ax.grid(axis="y")
    ax.set_axisbelow(True)
    return _save(fig, path)


@_styled
def plot_predictions(images, y_true, probabilities, path, count: int = 25, seed: int = 0,
                     title: str = "Predictions on test digits") -> Path:
    """A 5x5 grid: predicted digit and confidence above each image, green when right, red when wrong."""
    images, y_true, probabilities = np.asarray(images), np.asarray(y_true), np.asarray(probabilities)
    count = min(count, len(images))
    if count < 1:
        raise ConfigError("no images to show predictions for")
    pick = np.sort(np.random.default_rng(seed).choice(len(images), size=count, replace=False))
    cols = 5
    rows = max(math.ceil(count / cols), 1)
    fig = _figure("predictions", figure_size("predictions", rows))
    predicted, truth = probabilities[pick].argmax(axis=1), y_true[pick]
    right = int((predicted == truth).sum())
    titles = [f"pred {p} ({probabilities[i].max():.0%})" + ("" if p == t else f"\ntrue {t}")
              for i, p, t in zip(pick, predicted, truth)]
    _digit_grid(fig, images[pick], titles, [GREEN if p == t else RED for p, t in zip(predicted, truth)], cols)
    fig.suptitle(f"{title}: {right}/{count} correct (green right, red wrong)")
    return _save(fig, path)


@_styled
def plot_misclassified(images, y_true, probabilities, path, count: int = 24) -> Path:
    """The most confident mistakes first: true label, prediction with confidence, and the runner-up."""
    images, y_true, probabilities = np.asarray(images), np.asarray(y_true), np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    wrong = wrong[np.argsort(-probabilities[wrong].max(axis=1), kind="stable")][:count]
    cols = 6
    fig = _figure("misclassified")
    titles = []
    for i in wrong:
        first, second = (int(d) for d in np.argsort(-probabilities[i])[:2])
        titles.append(f"true {int(y_true[i])} → pred {first} ({_percent(probabilities[i, first])})\n"
                      f"runner-up {second} ({_percent(probabilities[i, second])})")
    if len(wrong):
        _digit_grid(fig, images[wrong], titles, [RED] * len(wrong), cols, fontsize=9)
    else:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0, 0.5, "no misclassified examples", fontsize=14)
    total = int((predicted != y_true).sum())
    fig.suptitle(f"Misclassified test digits: the {len(wrong)} most confident of {total} errors")
    return _save(fig, path)


@_styled
def plot_confidence_histogram(y_true, probabilities, path) -> Path:
    """Top-class confidence for correct vs wrong predictions (log counts: correct ones outnumber errors 100:1)."""
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities)
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == y_true
    bins = np.linspace(0.1, 1.0, 37)
    fig = _figure("confidence_histogram")
    ax = fig.subplots()
    ax.hist(confidence[correct], bins=bins, color=GREEN, alpha=0.75,
            label=f"correct (n={correct.sum():,}, median {np.median(confidence[correct]) if correct.any() else 0:.1%})")
    if (~correct).any():
        ax.hist(confidence[~correct], bins=bins, color=RED, alpha=0.75,
                label=f"wrong (n={(~correct).sum():,}, median {np.median(confidence[~correct]):.1%})")
    ax.set_yscale("log")
    ax.set_xlim(0.1, 1.0)
    ax.set_xlabel("confidence of the predicted digit (top softmax probability)")
    ax.set_ylabel("predictions (log scale)")
    ax.set_title("Confidence: correct vs wrong predictions")
    ax.legend(loc="upper left")
    ax.grid(axis="y")
    ax.set_axisbelow(True)
    return _save(fig, path)


def calibration_bins(y_true, probabilities, bins: int = 10) -> dict:
    """Per confidence bin: mean confidence, accuracy and count; plus the expected calibration error (ECE)."""
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities)
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_conf = np.bincount(which, weights=confidence, minlength=bins) / np.maximum(count, 1)
    accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins) / np.maximum(count, 1)
    ece = float(np.sum(count * np.abs(accuracy - mean_conf)) / max(count.sum(), 1))
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy, "ece": ece}


@_styled
def plot_reliability(y_true, probabilities, path, bins: int = 10) -> Path:
    """Reliability diagram: accuracy vs confidence per bin (the diagonal is perfect calibration), counts below."""
    stats = calibration_bins(y_true, probabilities, bins)
    edges, count = stats["edges"], stats["count"]
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    used = count > 0
    fig = _figure("reliability")
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], color=GREY, linestyle="--", linewidth=1, label="perfect calibration")
    ax.bar(centers[used], stats["accuracy"][used], width=width * 0.92, color=BLUE, alpha=0.85, label="accuracy in bin")
    ax.plot(stats["confidence"][used], stats["accuracy"][used], color=ORANGE, marker="o", linewidth=1.2,
            label="accuracy at the bin's mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE {stats['ece']:.2%})")
    ax.legend(loc="upper left")
    ax.grid(True)
    ax.set_axisbelow(True)
    ax_count.bar(centers[used], count[used], width=width * 0.92, color=GREY)
    ax_count.set_yscale("log")
    ax_count.set_ylabel("predictions")
    ax_count.set_xlabel("confidence of the predicted digit")
    ax_count.grid(axis="y")
    ax_count.set_axisbelow(True)
    return _save(fig, path)


# ---------------------------------------------------------------- the model itself

@_styled
def plot_first_layer(model, path, image=None, max_units: int = 16) -> Path:
    """What the first learned layer looks for.

    For a CNN: each first-layer kernel (red positive, blue negative weights) above the map it produces
    for ``image`` (one digit, 28x28), so the reader sees which strokes and edges each filter picks up.
    For an MLP: the 28x28 input weights of the first hidden units, which look like stroke templates.
    """
    import torch

    layer = next((m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))), None)
    if layer is None:
        raise ConfigError("the model has no convolution or linear layer to show")
    weights = layer.weight.detach().float().cpu().numpy()
    count = min(max_units, weights.shape[0])
    fig = _figure("first_layer")
    if isinstance(layer, torch.nn.Conv2d) and image is not None:
        _conv_kernels_and_maps(fig, model, layer, weights[:count, 0], image)
        kind = f"{weights.shape[2]}x{weights.shape[3]} convolution kernels and their response to one digit"
    else:
        kernels = weights[:count, 0] if weights.ndim == 4 else weights[:count].reshape(-1, 28, 28)
        kind = ("convolution kernels" if weights.ndim == 4 else "hidden units' 28x28 input weights")
        _signed_grid(fig.add_subplot(), [[(kernel, f"#{row + k}", {}) for k, kernel in enumerate(kernels[row:row + 8])]
                                         for row in range(0, count, 8)], cols=8)
    fig.suptitle(f"First layer: {count} of {weights.shape[0]} {kind}", fontsize=12)
    return _save(fig, path)


def _conv_kernels_and_maps(fig, model, layer, kernels, image) -> None:
    import torch

    from .inference import to_model_input

    responses = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: responses.setdefault("maps", output))
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            model.eval()(to_model_input(np.asarray(image)[None]).to(device))
    finally:
        handle.remove()
    maps = responses["maps"][0, : len(kernels)].float().cpu().numpy()
    cols = 8
    grid = fig.add_gridspec(1, 2, width_ratios=[1.3, cols])
    _digit(fig.add_subplot(grid[0, 0]), image, "input digit", fontsize=9)
    rows = []
    for start in range(0, len(kernels), cols):
        rows.append([(kernel, f"kernel {start + k}", {}) for k, kernel in enumerate(kernels[start:start + cols])])
        rows.append([(response, "response", {"fontsize": 7, "color": GREY}) for response in maps[start:start + cols]])
    _signed_grid(fig.add_subplot(grid[0, 1]), rows, cols)


def _signed_grid(ax, rows, cols: int) -> None:
    """Rows of (values, title, text style) as one image on one axes: weights or responses, red positive,
    blue negative, white zero, each tile scaled to its own largest magnitude and stretched (nearest pixel)
    to a common side. An axes per tile made matplotlib's layout and drawing most of the figure's cost."""
    sides = {side for row in rows for values, _, _ in row for side in np.shape(values)}
    side = math.lcm(*sides)
    if side > 256:  # sides with no small common multiple: near enough with nearest-pixel stretching
        side = 8 * max(sides)
    gap, head = side // 8, side // 4  # between tiles, and above each for its title
    sheet = np.full((len(rows) * (side + head), cols * (side + gap) - gap), np.nan, dtype=np.float32)
    for r, row in enumerate(rows):
        for c, (values, title, style) in enumerate(row):
            values = np.asarray(values, dtype=np.float32)
            top, left = r * (side + head) + head, c * (side + gap)
            stretch = np.ix_(np.arange(side) * values.shape[0] // side, np.arange(side) * values.shape[1] // side)
            sheet[top:top + side, left:left + side] = values[stretch] / (np.abs(values).max() or 1.0)
            ax.text(left + side / 2 - 0.5, top - head / 6, title, ha="center", va="bottom",
                    fontsize=style.get("fontsize", 8), color=style.get("color", "black"))
    from matplotlib import colormaps

    ax.imshow(sheet, cmap=colormaps["RdBu_r"].with_extremes(bad="white"), vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()


# ---------------------------------------------------------------- images from outside MNIST

@_styled
def plot_custom_predictions(predictions, path, originals=None) -> Path:
    """One row per image: the original file, the 28x28 the model saw, and the ten probabilities.

    ``predictions`` are ``predict.Prediction`` objects (``.digit .confidence .probabilities .image`` and,
    when known, ``.path``); ``originals`` optionally gives the original pictures (paths, PIL images or arrays)
    in the same order, else each prediction's ``.path`` is opened.
    """
    predictions = list(predictions)
    if not predictions:
        raise ConfigError("no predictions to plot")
    originals = list(originals) if originals is not None else [getattr(p, "path", None) for p in predictions]
    fig = _figure("custom_predictions", figure_size("custom_predictions", len(predictions)))
    axes = fig.subplots(len(predictions), 3, squeeze=False, width_ratios=[1, 1, 2.6])
    for row, (prediction, original) in zip(axes, zip(predictions, originals)):
        _custom_row(row, prediction, original)
    fig.suptitle("Custom images: original, what the model saw, probabilities")
    return _save(fig, path)


def _custom_row(axes, prediction, original) -> None:
    ax_orig, ax_seen, ax_bars = axes
    picture, name = _open_original(original)
    if picture is not None:
        ax_orig.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
    else:
        ax_orig.text(0.5, 0.5, "cannot be\nopened", ha="center", va="center", color=RED, transform=ax_orig.transAxes)
    _frame(ax_orig)
    ax_orig.set_title(_shorten(name), fontsize=9, fontweight="normal")
    seen = getattr(prediction, "image", None)
    if seen is not None:
        _digit(ax_seen, np.asarray(seen), "model input 28x28", fontsize=9)
    else:
        ax_seen.text(0.5, 0.5, "nothing\nto classify", ha="center", va="center", color=GREY,
                     transform=ax_seen.transAxes)
        _frame(ax_seen)
        ax_seen.set_title("model input 28x28", fontsize=9, fontweight="normal")
    probabilities = getattr(prediction, "probabilities", None)
    probabilities = np.zeros(10) if probabilities is None else np.asarray(probabilities, dtype=float)
    digit = getattr(prediction, "digit", None)
    colors = [GREEN if digit is not None and d == digit else BLUE for d in DIGITS]
    bars = ax_bars.bar(DIGITS, probabilities, color=colors, width=0.7)
    ax_bars.bar_label(bars, labels=[f"{p:.0%}" if p >= 0.01 else "" for p in probabilities], padding=1, fontsize=8)
    ax_bars.set_ylim(0, 1.15)
    ax_bars.set_xticks(DIGITS)
    ax_bars.set_xlabel("digit")
    ax_bars.set_ylabel("probability")
    error = getattr(prediction, "error", None)
    if error:
        verdict, color = "error: " + _wrap(str(error)), RED
    elif digit is None:
        verdict, color = "no digit: " + _wrap(str(getattr(prediction, "reason", None) or "not recognised")), RED
    else:
        verdict, color = f"predicted {digit} ({getattr(prediction, 'confidence', 0.0):.1%})", GREEN
    ax_bars.set_title(verdict, color=color, fontsize=11 if "\n" not in verdict else 9.5)


def _frame(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#cccccc")
        spine.set_linewidth(0.8)


def _wrap(text: str, width: int = 58) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, max_lines=2, placeholder="…"))


def _open_original(original) -> tuple[np.ndarray | None, str]:
    """A picture to show (uint8 grey or RGB), and its name; None when it cannot be opened."""
    import io

    from PIL import Image, ImageOps

    if original is None:
        return None, "(no original)"
    if isinstance(original, np.ndarray):
        array = np.asarray(original)
        return (array * 255).astype(np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8), "(array)"
    name = "(image)" if isinstance(original, (bytes, bytearray, Image.Image)) else Path(str(original)).name
    try:
        image = original if isinstance(original, Image.Image) else Image.open(
            io.BytesIO(original) if isinstance(original, (bytes, bytearray)) else original)
        image = ImageOps.exif_transpose(image)
        image.thumbnail((400, 400))  # enough for a 2.6-inch panel; keeps huge photos cheap
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            # Shown on white, as an image viewer would: dropping alpha can leave black ink on black.
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        return np.asarray(image.convert("RGB")), name
    except (OSError, ValueError, Image.DecompressionBombError):
        return None, name


def _percent(p: float) -> str:
    return "<1%" if p < 0.005 else f"{p:.0%}"


def _shorten(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- the registry

@dataclass
class FigureInputs:
    """What the report's figures are drawn from: a model, its metadata's training history, and its
    answers on the test set (with the digits themselves)."""

    model: object
    history: dict | None
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray
    test_images: np.ndarray
    train_images: np.ndarray
    train_labels: np.ndarray


@dataclass(frozen=True)
class FigureKind:
    """One figure, registered once: its file stem, size in inches, place in the report, caption and how
    it is drawn. ``caption`` may depend on the training history; ``draw`` returns None where the inputs
    cannot give the figure."""

    name: str
    size: tuple[float, float]
    section: str
    caption: "str | Callable[[dict | None], str]"
    draw: "Callable[[FigureInputs, Path], Path | None]"
    uses_model: bool = False  # runs the model (torch) to draw; the others need only the inputs' arrays
    cost: int = 2  # drawing time relative to the other figures: the report shares them out between processes by it

    def caption_for(self, history: dict | None = None) -> str:
        return self.caption(history) if callable(self.caption) else self.caption


def _history_caption(history: dict | None) -> str:
    validated = any(v is not None for v in (history or {}).get("val_loss") or [])
    sets = "training and validation sets" if validated else "training set (this run held out no validation set)"
    return (f"Accuracy and loss per epoch on the {sets}, the mean learning rate of each epoch, and the epoch "
            "whose weights were kept.")


# The order is the order on the report's page.
FIGURES: list[FigureKind] = [
    FigureKind("training_history", (15.0, 4.6), "Training", _history_caption,
               lambda i, p: plot_training_history(i.history, p) if has_history(i.history) else None, cost=5),
    FigureKind("confusion_matrix", (14.0, 6.4), "Evaluation",
               "Which digit the model answered (columns) for each true digit (rows). Left: counts on a log "
               "colour scale; right: percent of each true digit's examples.",
               lambda i, p: plot_confusion_matrix(i.y_true, i.y_pred, p), cost=9),
    FigureKind("per_class_accuracy", (8.0, 4.5), "Evaluation",
               "Share of each digit's test examples read correctly (its recall); red: the weakest digit.",
               lambda i, p: plot_per_class_accuracy(i.y_true, i.y_pred, p)),
    FigureKind("predictions", (8.0, 9.0), "Predictions", "25 random test digits with the model's answer and "
               "confidence.", lambda i, p: plot_predictions(i.test_images, i.y_true, i.probabilities, p), cost=3),
    FigureKind("misclassified", (12.0, 9.0), "Predictions", "The model's most confident mistakes: true digit, "
               "answer, and the second choice.",
               lambda i, p: plot_misclassified(i.test_images, i.y_true, i.probabilities, p), cost=5),
    FigureKind("confidence_histogram", (8.0, 4.5), "Confidence", "How sure the model is when right (green) and "
               "when wrong (red).", lambda i, p: plot_confidence_histogram(i.y_true, i.probabilities, p), cost=4),
    FigureKind("reliability", (6.5, 7.5), "Confidence", "Calibration: within each confidence bin, how often the "
               "model is right. Bars on the diagonal mean its confidence can be taken at face value.",
               lambda i, p: plot_reliability(i.y_true, i.probabilities, p), cost=4),
    FigureKind("samples", (7.5, 6.6), "Data", "Random digits from the MNIST training set with their labels.",
               lambda i, p: plot_samples(i.train_images, i.train_labels, p)),
    FigureKind("class_distribution", (8.0, 4.5), "Data", "How many training examples each digit has.",
               lambda i, p: plot_class_distribution(i.train_labels, p)),
    FigureKind("first_layer", (12.0, 6.0), "First layer", "The first layer's learned filters and what each "
               "picks up in one test digit.", lambda i, p: plot_first_layer(i.model, p, image=i.test_images[0]),
               uses_model=True, cost=7),
]
KINDS = {kind.name: kind for kind in FIGURES}

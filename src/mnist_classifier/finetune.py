"""Adapt a trained model to one writer's handwriting from a labelled folder (DIR/0 ... DIR/9).

    result = finetune("my_digits", out="mine.safetensors")     # the shipped model, adapted
    result.summary()   # validation accuracy before/after, MNIST test accuracy before/after, counts, ...

The recipe, for as few as ten images per digit without forgetting MNIST:

- the images are read exactly as ``predict`` reads them (labelled.read_labelled), so the model learns
  from the very arrays it will be asked about; unreadable and "no digit" files are skipped;
- a seeded, stratified part of them (20%) is held out to judge the result;
- every batch is half the writer's images, each under a fresh small random affine, and half MNIST
  training digits, on which the model is also held to the base model's own answers (distillation): the
  MNIST half keeps the old knowledge, and the batch-norm statistics, in place;
- Adam at a low peak learning rate with a one-cycle schedule (warm-up, then cosine decay), for a few
  epochs: the warm-up spares the trained weights the first, noisy steps of a fresh optimizer;
- the epoch with the best validation accuracy (ties: lower loss) is kept; if none beats the base model
  on the held-out images, the base weights are kept and the result says so.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import unwritable
from .errors import ConfigError, ImageError
from .evaluate import Evaluation, evaluate
from .inference import prepare_for_inference, resolve_device, to_model_input
from .models import channels_last
from .persist import LoadedModel, load_model, pretrained_path, save_model
from .reprs import compact_repr
from .train import History, _loss_and_accuracy, _report_epoch, distillation, random_affine

DIGITS = range(10)


@dataclass
class FinetuneConfig:
    epochs: int = 5
    lr: float = 1e-3               # one-cycle peak: a third of the shipped model's training peak
    batch_size: int = 128          # images per step, the shipped model's training batch
    mnist_share: float = 0.5       # part of each batch drawn from MNIST's training digits
    repeats: int = 8               # each of the writer's images is seen this often per epoch, differently distorted
    validation_split: float = 0.2  # per digit, at least one image where the digit has two
    augment: bool = True           # train.random_affine: +-10 deg, +-10% scale, +-2 px shift
    # Weight of matching the base model's answers on the MNIST part: labels alone leave the network free to
    # drift wherever they do not pin it down, and that drift is what forgets MNIST.
    distill: float = 3.0
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        checks = [
            (_positive_int(self.epochs), f"epochs must be a positive integer, got {self.epochs}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be a positive number, got {self.lr}"),
            (_positive_int(self.batch_size) and self.batch_size >= 2,
             f"batch_size must be an integer >= 2, got {self.batch_size}"),
            (0 <= self.mnist_share < 1, f"mnist_share must be in [0, 1), got {self.mnist_share}"),
            (_positive_int(self.repeats), f"repeats must be a positive integer, got {self.repeats}"),
            (0 < self.validation_split < 1, f"validation_split must be in (0, 1), got {self.validation_split}"),
            (self.distill >= 0 and math.isfinite(self.distill), f"distill must be >= 0, got {self.distill}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def from_options(cls, options: dict) -> "FinetuneConfig":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"unknown fine-tuning option(s) {', '.join(unknown)} (options: {', '.join(known)})")
        return cls(**options)

    @property
    def own_per_batch(self) -> int:
        return max(1, round(self.batch_size * (1 - self.mnist_share)))

    def settings(self) -> dict:
        """What the model file records: everything but where it ran and how it printed."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "progress")}


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class Scores:
    accuracy: float
    loss: float

    def beats(self, other: "Scores") -> bool:
        """Higher accuracy, or the same accuracy at a lower loss."""
        return (self.accuracy, -self.loss) > (other.accuracy, -other.loss)


@dataclass
class FinetuneResult:
    model: torch.nn.Module
    metadata: dict  # what the model file holds (or would hold, when not saved); its "finetuned" has the figures
    skipped: list[str] = field(default_factory=list)   # one line per unreadable or "no digit" file
    warnings: list[str] = field(default_factory=list)  # layout and class warnings
    model_path: str | None = None

    def __repr__(self) -> str:
        tuned = self.metadata["finetuned"]
        return compact_repr(self, {"images": tuned["on"]["path"],
                                   "validation_accuracy_before": tuned.get("validation_accuracy_before"),
                                   "validation_accuracy_after": tuned.get("validation_accuracy_after"),
                                   "skipped": len(self.skipped), "model_path": self.model_path})

    def summary(self) -> dict:
        """The ``finetune --json`` object."""
        tuned = self.metadata["finetuned"]
        return {"model_path": self.model_path, "base_model": tuned["from"]["path"], "images": tuned["on"]["path"],
                **{k: v for k, v in tuned["on"].items() if k != "path"},
                **{k: v for k, v in tuned.items() if k not in ("from", "on", "history", "settings")},
                "epochs": len(tuned["history"]["epoch"]), "skipped": len(self.skipped),
                "skipped_files": self.skipped, "warnings": self.warnings, "settings": tuned["settings"]}


@dataclass
class _Run:
    """What one fine-tuning run found: the kept model and the figures that judge it."""

    model: torch.nn.Module
    history: History                # best_epoch None: no epoch beat the base model, whose weights were kept
    validation_before: Scores
    validation_after: Scores
    mnist_before: Evaluation        # the base model on MNIST's test set ...
    mnist_after: Evaluation         # ... and the kept model

    @property
    def kept_base(self) -> bool:
        return self.history.best_epoch is None


# ---------------------------------------------------------------- the job

def finetune(directory, out=None, base=None, config: FinetuneConfig | None = None, data=None,
             data_dir=None, workers: int | None = None, warn=None) -> FinetuneResult:
    """Fine-tune ``base`` (a model file, a persist.LoadedModel, or None: the shipped model) on the labelled
    folder ``directory``; write the result to ``out`` (atomically) when given.

    ``data`` is MNIST (data.load_mnist) for the mixed batches and the test score, loaded from ``data_dir``
    when not given. ``warn`` is called with each warning line as it arises (they are also in the result).
    Bad input raises a one-line MNISTClassifierError before anything is written.
    """
    from .data import load_mnist

    config = config or FinetuneConfig()
    config.validate()
    out = _check_out(out)
    folder = _labelled_folder(directory)
    loaded = base if isinstance(base, LoadedModel) else load_model(base or pretrained_path(),
                                                                   device=resolve_device(config.device))
    images, labels, skipped, warnings = _own_images(folder, loaded, workers, warn or (lambda line: None))
    train_idx, val_idx = stratified_split(labels, config.validation_split, config.seed)
    data = data or load_mnist(data_dir, progress=config.progress)
    run = _tune(loaded.model, _tensors(images, labels, train_idx, val_idx, data, resolve_device(config.device)),
                data, config)
    metadata = _metadata(loaded, folder.root, labels, train_idx, val_idx, config, run)
    result = FinetuneResult(run.model, metadata, skipped, warnings)
    if out is not None:
        save_model(out, result.model, metadata["architecture"], metadata["config"],
                   **{k: v for k, v in metadata.items() if k not in ("architecture", "config")})
        result.model_path = str(out)
    return result


def _check_out(out) -> Path | None:
    if out is None:
        return None
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; the output is a model file, e.g. {out / 'finetuned.safetensors'}")
    problem = unwritable(out)
    if problem:
        raise ConfigError(f"{out}: {problem}")
    return out


def _labelled_folder(directory):
    from .labelled import collect_labelled

    folder = collect_labelled(directory)
    _require_two_digits(folder.root, folder.labels, "images")  # before any warning: the error alone says it
    return folder


def _own_images(folder, loaded: LoadedModel, workers, tell) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """The labelled folder's images as predict sees them, their labels, one line per skipped file and the
    warnings; ``tell`` prints each of those lines as it arises."""
    from .labelled import read_labelled
    from .predict import Predictor

    warnings = list(folder.warnings)
    for line in warnings:
        tell(line)
    read = read_labelled(folder, Predictor(loaded, workers=workers))
    skipped = read.unreadable + read.no_digit_messages("skipped")
    for line in skipped:
        tell(line)
    labels = read.labels()
    _require_two_digits(folder.root, labels, "usable images")
    # Empty digit folders were named already; these had files, but every one was skipped.
    lost = [str(d) for d, count in enumerate(folder.counts()) if count and not np.any(labels == d)]
    if lost:
        warnings.append(f"{folder.root}: no usable images of digit(s) {', '.join(lost)}; "
                        "fine-tuning goes on without them")
        tell(warnings[-1])
    return read.images(), labels, skipped, warnings


def _require_two_digits(root: Path, labels: np.ndarray, what: str) -> None:
    present = np.unique(labels)
    if len(present) == 0:
        raise ImageError(f"{root}: no {what} under the digit subfolders")
    if len(present) == 1:
        raise ImageError(f"{root}: {what} of one digit only ({present[0]}); fine-tuning needs at least two")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) indices holding ``fraction`` of each digit out, at least one image of
    every digit that has two, and never a digit's last image."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for digit in DIGITS:
        idx = rng.permutation(np.flatnonzero(labels == digit))
        held = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) >= 2 else 0
        val += idx[:held].tolist()
        train += idx[held:].tolist()
    if not val:
        raise ImageError("too few images to hold any out for validation: give at least two images of a digit")
    return np.sort(train), np.sort(val)


# ---------------------------------------------------------------- training

@dataclass
class _Tensors:
    """The writer's images split in two, and MNIST's training digits to mix in, all on the training device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mnist_x: torch.Tensor  # uint8 (60000, 28, 28): a batch is made float when it is drawn
    mnist_y: torch.Tensor


def _tensors(images, labels, train_idx, val_idx, data, device) -> _Tensors:
    x, y = to_model_input(images).to(device), torch.as_tensor(labels, dtype=torch.long, device=device)
    train, val = (torch.as_tensor(i, dtype=torch.long, device=device) for i in (train_idx, val_idx))
    return _Tensors(x[train], y[train], x[val], y[val], torch.as_tensor(data.train_images, device=device),
                    torch.as_tensor(data.train_labels, dtype=torch.long, device=device))


def _tune(base_model, sets: _Tensors, data, config: FinetuneConfig) -> _Run:
    """Train a copy of ``base_model``; keep its best epoch, or the base weights if none beats them."""
    torch.manual_seed(config.seed)  # dropout draws from the global generator
    device = resolve_device(config.device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model = copy.deepcopy(base_model).to(device)
    teacher = prepare_for_inference(model)  # a BN-folded copy: the base model's answers, on the training device
    steps = math.ceil(len(sets.train_x) * config.repeats / config.own_per_batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, pct_start=0.3,
                                                   total_steps=config.epochs * steps)
    before = _scores(model, sets.val_x, sets.val_y)
    history, best, best_state = History(), before, None  # best_epoch stays None until an epoch beats the base
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        loss, accuracy, mean_lr = _train_epoch(model, teacher, sets, optimizer, schedule, config, generator)
        scores = _scores(model, sets.val_x, sets.val_y)
        _record(history, epoch, loss, accuracy, scores, mean_lr, time.perf_counter() - started)
        _report_epoch(history, config)
        if scores.beats(best):
            best, best_state, history.best_epoch = scores, copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best_state if best_state is not None else base_model.state_dict())
    model.eval()
    mnist_before = evaluate(base_model, data.test_images, data.test_labels)
    mnist_after = evaluate(model, data.test_images, data.test_labels) if best_state is not None else mnist_before
    return _Run(model, history, before, best, mnist_before, mnist_after)


def _scores(model, x, y) -> Scores:
    loss, accuracy = _loss_and_accuracy(model, x, y)
    return Scores(accuracy, loss)


def _train_epoch(model, teacher, sets: _Tensors, optimizer, schedule, config: FinetuneConfig,
                 generator) -> tuple[float, float, float]:
    """Every own image ``repeats`` times, each batch topped up with MNIST training digits drawn at random.
    Returns the loss, the accuracy and the mean learning rate of the epoch's steps."""
    model.train()
    order = torch.cat([torch.randperm(len(sets.train_x), generator=generator, device=generator.device)
                       for _ in range(config.repeats)])
    own, mixed_in = config.own_per_batch, config.batch_size - config.own_per_batch
    total_loss, correct, seen, lr_sum, steps = 0.0, 0, 0, 0.0, 0
    for start in range(0, len(order), own):
        idx = order[start:start + own]
        pick = torch.randint(len(sets.mnist_x), (mixed_in,), generator=generator, device=generator.device)
        xb = torch.cat([sets.train_x[idx], sets.mnist_x[pick].float().div_(255).unsqueeze(1)])
        yb = torch.cat([sets.train_y[idx], sets.mnist_y[pick]])
        if config.augment:
            xb = random_affine(xb, generator)
        xb = channels_last(xb)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        if config.distill and mixed_in:
            loss = loss + config.distill * distillation(logits[len(idx):], teacher, xb[len(idx):])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr_sum, steps = lr_sum + optimizer.param_groups[0]["lr"], steps + 1
        optimizer.step()
        schedule.step()
        total_loss += loss.item() * len(yb)
        correct += (logits.argmax(1) == yb).sum().item()
        seen += len(yb)
    return total_loss / seen, correct / seen, lr_sum / steps


def _record(history: History, epoch: int, loss: float, accuracy: float, scores: Scores, lr: float,
            seconds: float) -> None:
    history.epoch.append(epoch)
    history.train_loss.append(loss)
    history.train_accuracy.append(accuracy)
    history.val_loss.append(scores.loss)
    history.val_accuracy.append(scores.accuracy)
    history.lr.append(lr)
    history.seconds.append(seconds)


# ---------------------------------------------------------------- the model file

def _metadata(loaded: LoadedModel, root: Path, labels, train_idx, val_idx, config: FinetuneConfig, run: _Run) -> dict:
    """The base model's metadata (architecture, config, how it was trained) with the result's MNIST test
    metrics and a ``finetuned`` record: from what, on what, with which settings, and the figures."""
    base = loaded.metadata
    kept = {k: v for k, v in base.items()
            if k not in ("format_version", "package_version", "torch_version", "created", "finetuned", "metrics")}
    metrics = {k: v for k, v in run.mnist_after.summary().items() if k != "confusion_matrix"}
    return {**kept, "metrics": metrics, "finetuned": {
        "from": {"path": str(loaded.path), "created": base.get("created"),
                 "package_version": base.get("package_version"), "finetuned": base.get("finetuned")},
        "on": {"path": str(root), "images_per_class": np.bincount(labels, minlength=10).tolist(),
               "train_images": len(train_idx), "validation_images": len(val_idx)},
        "settings": config.settings(),
        "validation_accuracy_before": run.validation_before.accuracy,
        "validation_accuracy_after": run.validation_after.accuracy,
        "validation_loss_before": run.validation_before.loss,
        "validation_loss_after": run.validation_after.loss,
        "mnist_test_accuracy_before": run.mnist_before.accuracy,
        "mnist_test_accuracy_after": run.mnist_after.accuracy,
        "kept_base": run.kept_base, "best_epoch": run.history.best_epoch or 0, "history": run.history.to_dict()}}

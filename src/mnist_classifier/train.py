"""The training loop: in-memory tensors, batched augmentation, schedules, early stopping, history.

The whole dataset lives on the device as one tensor; a batch is an index into it, and augmentation
(``augment.augment_batch``) is a few whole-batch tensor operations, so there is no per-sample Python anywhere.

A run is described by a ``Run`` (architecture, settings, output paths), checked whole before any data is
loaded. With a checkpoint folder, every epoch ends by writing a checkpoint (``checkpoint.py``) from which
``resume_run`` continues the run exactly: the resumed run ends with the same weights, bit for bit, as one
that was never interrupted.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .atomic import check_writable
from .augment import augment_batch, random_affine, recipe_named  # noqa: F401 (random_affine is public here too)
from .data import FILES
from .errors import ConfigError, TrainingError
from .inference import resolve_device, to_model_input
from .models import channels_last
from .reprs import compact_repr

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "plateau")
DEFAULT_ARCHITECTURE = "cnn"
MNIST_TRAIN_SIZE = FILES["train_images"][3][0]  # what a split is checked against before MNIST is loaded
SEED_LIMIT = 2 ** 64  # torch seeds are unsigned 64-bit integers
MAX_PARAMETERS = 100_000_000  # far above any digit model; refuses sizes that would exhaust memory instead


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"  # onecycle: warm up then anneal per step; plateau: halve LR when val loss stalls
    validation_split: float = 0.1  # 0 trains on all 60k (no early stopping then)
    early_stopping: int = 5  # patience in epochs on validation loss; 0 disables
    augment: bool = False  # augment each batch as augment_recipe says
    augment_recipe: str | dict = "affine"  # augment.RECIPES name or Recipe fields; affine: +-10 deg, 10% scale, 2 px
    label_smoothing: float = 0.0
    teacher: str | None = None  # a model file whose answers on each (augmented) batch the model also learns
    distill: float = 1.0  # weight of matching the teacher's probabilities (KL divergence) beside the labels
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self, n_train: int | None = None) -> None:
        """Raise ConfigError for the first setting that makes no sense; with ``n_train`` (the number of
        training digits) also for a split that leaves either part less than one batch."""
        checks = [
            (_is_int(self.epochs) and self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs}"),
            (_is_int(self.batch_size) and self.batch_size >= 1,
             f"batch_size must be a positive integer, got {self.batch_size}"),
            (_is_number(self.lr) and self.lr > 0, f"learning rate must be a positive number, got {self.lr}"),
            (_is_number(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be a finite number >= 0, got {self.weight_decay}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r} (choose from {', '.join(OPTIMIZERS)})"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})"),
            (_is_number(self.validation_split) and (self.validation_split == 0 or 0 < self.validation_split < 1),
             f"validation_split must be in (0, 1) (or 0 for none), got {self.validation_split}"),
            (_is_int(self.early_stopping) and self.early_stopping >= 0,
             f"early_stopping patience must be an integer >= 0, got {self.early_stopping}"),
            (_is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (_is_number(self.distill) and self.distill >= 0, f"distill must be a number >= 0, got {self.distill}"),
            (_is_int(self.seed) and 0 <= self.seed < SEED_LIMIT,
             f"seed must be an integer from 0 to 2**64 - 1, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        recipe_named(self.augment_recipe)  # raises ConfigError for an unknown name or field
        if n_train is not None:
            self._check_split(n_train)

    def _check_split(self, n: int) -> None:
        n_val = validation_size(n, self.validation_split)
        if self.validation_split and n_val < self.batch_size:
            raise ConfigError(f"validation_split {self.validation_split} holds out {n_val} of {n} digits, fewer "
                              f"than one batch ({self.batch_size}): use a larger split, or 0 for none")
        if n - n_val < self.batch_size:
            raise ConfigError(f"validation_split {self.validation_split} leaves {n - n_val} of {n} digits to train "
                              f"on, fewer than one batch ({self.batch_size})")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def settings(self) -> dict:
        """The fields that decide the result (not ``progress``), as a model file and a checkpoint record them."""
        return {k: v for k, v in asdict(self).items() if k != "progress"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class History:
    """Per-epoch curves; ``best_epoch`` is the epoch whose weights were kept (1-based)."""

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)  # the mean learning rate of the epoch's steps
    seconds: list = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> "History":
        values = values or {}
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def __len__(self) -> int:
        return len(self.epoch)


def split_validation(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split (MNIST's training file is not shuffled by writer, so a tail split would be biased)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = validation_size(n, fraction)
    return order[n_val:], order[:n_val]


def validation_size(n: int, fraction: float) -> int:
    return int(round(n * fraction))


def import_optimizer_support_beside() -> threading.Thread:
    """Start importing torch._dynamo in a thread: torch.optim imports it when the first optimizer is made,
    which costs the better part of a second of Python. Called before the data are loaded (file reading
    and decompression, which leave the interpreter free), it is done when fit needs it."""
    thread = threading.Thread(target=importlib.import_module, args=("torch._dynamo",), daemon=True,
                              name="import torch._dynamo")
    thread.start()
    return thread


def _optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, pct_start=0.25,
                                                   total_steps=config.epochs * steps_per_epoch)
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    return None


@torch.inference_mode()
def _loss_and_accuracy(model, x, y, batch_size: int = 2048) -> tuple[float, float]:
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(_model_batch(x[start:start + batch_size]))
        target = y[start:start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    return total_loss / len(x), correct / len(x)


def fit(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, config: TrainConfig,
        checkpoints: "Checkpoints | None" = None) -> History:
    """Train ``model`` in place on uint8 images (N, 28, 28) and labels (N,); returns the history.

    With a validation split and early stopping, the weights of the epoch with the lowest validation
    loss are restored at the end. With ``checkpoints``, every epoch ends by writing a checkpoint into its
    folder, and when it holds a ``previous`` checkpoint the run continues from there exactly as it would
    have gone on. A loss that becomes NaN or infinite stops training with a TrainingError.
    """
    config.validate(len(images))
    torch.manual_seed(config.seed)  # dropout and weight init draw from the global generator
    device = resolve_device(config.device)
    generator = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(config.seed)
    model.to(device)
    teacher = _load_teacher(config, device)
    x_train, y_train, x_val, y_val = _split_tensors(images, labels, config, device)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config, math.ceil(len(x_train) / config.batch_size))
    state = TrainingState(model, optimizer, scheduler, generator, EarlyStopping(config.early_stopping))
    if checkpoints is not None:
        checkpoints.start(state, device, _data_digest(images, labels))

    for epoch in range(state.epoch + 1, config.epochs + 1):
        if state.history.stopped_early:
            break
        try:
            _epoch(state, epoch, x_train, y_train, x_val, y_val, config, teacher)
        except NonFiniteLoss as exc:
            kept = checkpoints.kept(epoch - 1) if checkpoints is not None else ""
            raise TrainingError(f"training stopped: {exc} (a lower learning rate may help){kept}") from None
        if checkpoints is not None:
            checkpoints.save(state)

    history, best = state.history, state.stopper.best_state
    if best is not None and history.best_epoch != len(history):
        model.load_state_dict(best)  # restore the best epoch's weights
    if history.best_epoch is None:
        history.best_epoch = len(history)
    model.eval()
    return history


def _split_tensors(images, labels, config: TrainConfig, device):
    """(x_train, y_train, x_val, y_val) on the device; the validation pair is None without a split.

    The images stay uint8 (N, 1, 28, 28), a quarter of their float size, and each batch becomes the
    model's input as it is drawn (_model_batch): writing the whole set out as floats costs more than
    every batch's conversion together.
    """
    images = np.asarray(images)
    x_all = (torch.as_tensor(images[:, None], device=device) if images.dtype == np.uint8
             else to_model_input(images).to(device))
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    if not config.validation_split:
        return x_all, y_all, None, None
    train_idx, val_idx = (idx.to(device) for idx in split_validation(len(x_all), config.validation_split, config.seed))
    return x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx]


def _model_batch(x: torch.Tensor) -> torch.Tensor:
    """Images (B, 1, 28, 28) -> the model's float input in [0, 1]: uint8 is scaled as to_model_input
    scales it, floats are taken as they are."""
    return channels_last(x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x)


def _epoch(state: "TrainingState", epoch: int, x_train, y_train, x_val, y_val, config, teacher) -> None:
    """One epoch: train, validate, record, step the plateau schedule, update early stopping."""
    history, optimizer, scheduler = state.history, state.optimizer, state.scheduler
    started = time.perf_counter()
    train_loss, train_acc, mean_lr = _train_one_epoch(state.model, x_train, y_train, optimizer, scheduler, config,
                                             state.generator, epoch, teacher)
    val_loss, val_acc = _loss_and_accuracy(state.model, x_val, y_val) if x_val is not None else (None, None)
    if val_loss is not None and not math.isfinite(val_loss):
        raise NonFiniteLoss(f"the validation loss became {val_loss} after epoch {epoch}")
    history.epoch.append(epoch)
    history.train_loss.append(train_loss)
    history.train_accuracy.append(train_acc)
    history.val_loss.append(val_loss)
    history.val_accuracy.append(val_acc)
    history.lr.append(mean_lr)
    history.seconds.append(time.perf_counter() - started)
    _report_epoch(history, config)

    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss if val_loss is not None else train_loss)
    if val_loss is not None:
        state.stopper.update(val_loss, state.model, epoch, history)
    state.epoch = epoch


class NonFiniteLoss(Exception):
    """A loss became NaN or infinite; the message says which and where."""


@dataclass
class EarlyStopping:
    """The lowest validation loss so far, the weights of its epoch, and the epochs of patience left."""

    patience: int  # 0: never stop early (the best weights are still kept)
    best_loss: float = math.inf
    best_state: dict | None = None
    patience_left: int | None = None

    def __post_init__(self):
        if self.patience_left is None:
            self.patience_left = self.patience

    def update(self, val_loss: float, model, epoch: int, history: History) -> None:
        if val_loss < self.best_loss:
            self.best_loss, self.patience_left = val_loss, self.patience
            self.best_state = copy.deepcopy(model.state_dict())
            history.best_epoch = epoch
        elif self.patience:
            self.patience_left -= 1
            history.stopped_early = self.patience_left == 0

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_state": self.best_state, "patience_left": self.patience_left}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss, self.best_state = state["best_loss"], state["best_state"]
        self.patience_left = state["patience_left"]


@dataclass
class TrainingState:
    """Everything that changes while a run trains. A checkpoint is its ``state_dict``: the model, the
    optimizer, the LR schedule, early stopping, the history and every random generator's state."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object  # an LR scheduler, or None for a constant rate
    generator: torch.Generator  # data order and augmentation
    stopper: EarlyStopping
    history: History = field(default_factory=History)
    epoch: int = 0  # the last epoch completed

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "early_stopping": self.stopper.state_dict(), "history": self.history.to_dict(),
                "rng": checkpoint.rng_states(self.generator)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.history = History.from_dict(state["history"])
        self.epoch = state["epoch"]
        checkpoint.set_rng_states(state["rng"], self.generator)  # last: loading above draws nothing, but be sure


@dataclass
class Checkpoints:
    """Where a run writes a checkpoint after every epoch, the run's settings recorded in each (what
    ``resume_run`` reads back), and the checkpoint a resumed run continues from."""

    folder: str
    settings: dict
    previous: dict | None = None

    def start(self, state: TrainingState, device: torch.device, data: dict) -> None:
        """Note what this run trains on and where, and continue from ``previous`` if there is one."""
        self._about = {"settings": self.settings, "device": device.type, "data": data,
                       "torch_version": torch.__version__}
        if self.previous is None:
            return
        for key, what in (("device", "a device of another kind"), ("data", "other training data")):
            if self.previous[key] != self._about[key]:
                raise TrainingError(f"{self.folder}: the checkpoint was written for {what} "
                                    f"({self.previous[key]}, not {self._about[key]}): resume it as it was started")
        state.load_state_dict(self.previous["training"])

    def save(self, state: TrainingState) -> None:
        checkpoint.write(self.folder, {**self._about, "training": state.state_dict()})

    def kept(self, epoch: int) -> str:
        """How to say, after a failure in the next epoch, which checkpoint is left."""
        return f"; the checkpoint of epoch {epoch} in {self.folder} is kept" if epoch >= 1 else ""


def _data_digest(images: np.ndarray, labels: np.ndarray) -> dict:
    """Identifies the training data, so a checkpoint is never continued on other digits."""
    digest = hashlib.sha256(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels).astype(np.int64).data)
    return {"n": len(images), "sha256": digest.hexdigest()}


def _load_teacher(config: TrainConfig, device: torch.device):
    """The teacher model, BN folded and frozen, or None."""
    if not config.teacher:
        return None
    from .inference import prepare_for_inference
    from .persist import load_model

    teacher = prepare_for_inference(load_model(config.teacher, device=device).model)
    return teacher.requires_grad_(False)


def _loss(logits, labels, xb, teacher, config: TrainConfig) -> torch.Tensor:
    """Cross-entropy on the labels, plus (with a teacher) the divergence from the teacher's answers on the
    same images: a strong ensemble's soft answers carry what it learned into one small model."""
    loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
    if teacher is None:
        return loss
    return loss + config.distill * distillation(logits, teacher, xb)


def distillation(logits: torch.Tensor, teacher, x: torch.Tensor) -> torch.Tensor:
    """KL divergence from the teacher's answers on the images ``x`` to the model's ``logits`` on them."""
    with torch.inference_mode():
        target = F.log_softmax(teacher(x), dim=1)
    # An inference-mode tensor cannot be saved for backward; a copy made outside it can.
    return F.kl_div(F.log_softmax(logits, dim=1), target.clone(), log_target=True, reduction="batchmean")


def _train_one_epoch(model, x, y, optimizer, scheduler, config, generator, epoch,
                     teacher=None) -> tuple[float, float, float]:
    """Train loss, train accuracy and the mean learning rate of the epoch's steps (one-cycle moves it each step)."""
    from tqdm import tqdm

    model.train()
    order = torch.randperm(len(x), generator=generator, device=generator.device)
    total_loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    lr_sum = 0.0
    per_step_schedule = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    batches = range(0, len(x), config.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
               disable=not config.progress, file=sys.stderr)
    for step, start in enumerate(bar):
        idx = order[start:start + config.batch_size]
        xb, yb = _model_batch(x[idx]), y[idx]
        if config.augment:
            xb = channels_last(augment_batch(xb, yb, generator, config.augment_recipe))
        logits = model(xb)
        loss = _loss(logits, yb, xb, teacher, config)
        if not torch.isfinite(loss):  # stop before a NaN reaches the weights
            bar.close()
            raise NonFiniteLoss(f"the training loss became {loss.item()} at epoch {epoch}, batch {step + 1} "
                                f"of {len(batches)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr_sum += optimizer.param_groups[0]["lr"]
        optimizer.step()
        if per_step_schedule:
            scheduler.step()
        total_loss += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
        if step % 50 == 0 and config.progress:  # .item() syncs; do it rarely
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return total_loss.item() / len(x), correct.item() / len(x), lr_sum / len(batches)


def _report_epoch(history: History, config: TrainConfig) -> None:
    if not config.progress:
        return
    i = -1
    line = (f"epoch {history.epoch[i]}/{config.epochs}  loss {history.train_loss[i]:.4f}  "
            f"acc {history.train_accuracy[i]:.4f}")
    if history.val_loss[i] is not None:
        line += f"  val_loss {history.val_loss[i]:.4f}  val_acc {history.val_accuracy[i]:.4f}"
    line += f"  lr {history.lr[i]:.2e}  {history.seconds[i]:.1f}s"
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the whole job: build, fit, evaluate, save

@dataclass
class TrainResult:
    model: torch.nn.Module
    architecture: str
    model_config: dict
    train_config: TrainConfig
    history: History
    evaluation: "object"  # evaluate.Evaluation on the test set
    train_seconds: float
    model_path: str | None = None

    def __repr__(self) -> str:
        return compact_repr(self, {"architecture": self.architecture, "accuracy": self.evaluation.accuracy,
                                   "epochs": len(self.history), "train_seconds": self.train_seconds,
                                   "model_path": self.model_path})

    def summary(self) -> dict:
        """The ``train --json`` contract: test accuracy and loss, epochs, train_seconds, model_path."""
        return {"architecture": self.architecture, "accuracy": self.evaluation.accuracy,
                "loss": self.evaluation.loss, "n": self.evaluation.n, "epochs": len(self.history),
                "best_epoch": self.history.best_epoch, "stopped_early": self.history.stopped_early,
                "train_seconds": round(self.train_seconds, 3), "model_path": self.model_path,
                "seed": self.train_config.seed}


def training_config(architecture: str, **overrides) -> TrainConfig:
    """The architecture's tuned preset with the caller's overrides (None means 'keep the preset')."""
    from .models import architecture as lookup

    preset = lookup(architecture).training
    return TrainConfig(**{**preset, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class Run:
    """One training run as the CLI or the API asks for it, checked whole (``check``) before any data is
    loaded. Its ``settings`` go into every checkpoint, so that ``resume_run`` continues it unchanged."""

    architecture: str
    config: TrainConfig
    model_options: dict = field(default_factory=dict)  # the constructor options given; the rest: the preset
    out: str | None = None  # the model file to write
    checkpoint_dir: str | None = None  # where a checkpoint is written after every epoch
    previous: dict | None = None  # the checkpoint a resumed run continues from

    def check(self, n_train: int = MNIST_TRAIN_SIZE) -> "Run":
        """Raise a one-line error for any setting or output path that would fail later; returns the run."""
        from .persist import read_metadata

        self.config.validate(n_train)
        resolve_device(self.config.device)
        _check_model(self.architecture, self.model_options)
        if self.config.teacher:
            read_metadata(self.config.teacher)  # a missing or foreign teacher file fails here, not after loading
        if self.out is not None:
            check_writable(self.out)
        if self.checkpoint_dir is not None:
            check_writable(self.checkpoint_dir, folder=True)
            if self.previous is None and checkpoint.checkpoint_path(self.checkpoint_dir).exists():
                raise ConfigError(f"{self.checkpoint_dir} already holds a training checkpoint: resume that run, "
                                  f"or give another folder")
        return self

    def settings(self) -> dict:
        """What a checkpoint records to continue the run, and to refuse continuing it any other way."""
        recorded = {"architecture": self.architecture, "model_options": self.model_options,
                    "config": self.config.settings(), "out": _absolute(self.out)}
        if self.config.augment:  # the values: a recipe's name could come to mean other values
            recorded["augment_recipe_values"] = recipe_named(self.config.augment_recipe).to_dict()
        if self.config.teacher:
            recorded["teacher_sha256"] = _file_sha256(self.config.teacher)
        return recorded

    def checkpoints(self) -> Checkpoints | None:
        if self.checkpoint_dir is None:
            return None
        return Checkpoints(self.checkpoint_dir, self.settings(), self.previous)

    def seconds_before(self) -> float:
        """Training time the interrupted part of a resumed run already spent."""
        return sum(self.previous["training"]["history"]["seconds"]) if self.previous else 0.0


def new_run(architecture: str = DEFAULT_ARCHITECTURE, model_options: dict | None = None, out: str | None = None,
            checkpoint_dir: str | None = None, n_train: int = MNIST_TRAIN_SIZE, **overrides) -> Run:
    """A checked run of the architecture's preset with the given overrides (None keeps the preset)."""
    config = training_config(architecture, **overrides)
    return Run(architecture, config, _given(model_options), out, checkpoint_dir).check(n_train)


def resume_run(checkpoint_dir: str, architecture: str | None = None, model_options: dict | None = None,
               out: str | None = None, device: str | None = None, progress: bool = True,
               write_to: str | None = None, **overrides) -> Run:
    """The run checkpointed in ``checkpoint_dir``, to continue with its own settings, writing its next
    checkpoints there too. A setting given here (``write_to``: a checkpoint folder) must equal the recorded
    one; None means not given. ``device`` and ``progress`` are free."""
    from .models import model_config

    previous = checkpoint.read(checkpoint_dir)
    settings = previous["settings"]
    recorded = {"architecture": settings["architecture"], **settings["config"],
                **model_config(settings["architecture"], **settings["model_options"]),
                "out": settings["out"], "checkpoint_dir": _absolute(checkpoint_dir)}
    given = {"architecture": architecture, **_given(model_options), **overrides, "out": _absolute(out),
             "checkpoint_dir": _absolute(write_to)}
    for name, value in given.items():
        if name not in recorded:
            raise ConfigError(f"unknown training setting {name!r}")
        if value is not None and recorded[name] is not None and value != recorded[name]:
            raise ConfigError(f"{name} {value!r} conflicts with the run checkpointed in {checkpoint_dir} "
                              f"({name} {recorded[name]!r}): a resumed run keeps its own settings")
    config = TrainConfig.from_dict({**settings["config"], "device": device or settings["config"]["device"],
                                    "progress": progress})
    run = Run(settings["architecture"], config, settings["model_options"], settings["out"] or out,
              str(checkpoint_dir), previous).check(previous["data"]["n"])
    _check_unchanged(run, settings)
    return run


def _check_unchanged(run: Run, recorded: dict) -> None:
    """Refuse to resume when a file or a name the run depends on now means something else."""
    now = run.settings()
    if _recipe_values(now) != _recipe_values(recorded):
        raise ConfigError(f"the augmentation recipe {run.config.augment_recipe!r} is not what it was when the run "
                          f"in {run.checkpoint_dir} started, so resuming could not repeat it")
    if now.get("teacher_sha256") != recorded.get("teacher_sha256"):
        raise ConfigError(f"{run.config.teacher}: the teacher model file has changed since the run in "
                          f"{run.checkpoint_dir} started; resuming needs the same file")


def _recipe_values(settings: dict) -> dict | None:
    """A run's recorded recipe with every field: one recorded before a field existed has that field's
    default, which draws nothing and changes nothing."""
    values = settings.get("augment_recipe_values")
    return None if values is None else recipe_named(values).to_dict()


def train_run(run: Run, data) -> TrainResult:
    """Build the run's model, train it on MNIST's training set (continuing a resumed run), score it on the
    test set and save it."""
    from .evaluate import evaluate
    from .models import build_model, model_config

    torch.manual_seed(run.config.seed)  # the same seed gives the same initial weights
    model = build_model(run.architecture, **run.model_options)
    started = time.perf_counter()
    history = fit(model, data.train_images, data.train_labels, run.config, run.checkpoints())
    train_seconds = time.perf_counter() - started + run.seconds_before()
    if run.config.progress:  # the last epoch's line is not the end: say what the next seconds are for
        print(f"scoring on the {len(data.test_labels):,} test digits ...", file=sys.stderr, flush=True)
    evaluation = evaluate(model, data.test_images, data.test_labels)
    result = TrainResult(model, run.architecture, model_config(run.architecture, **run.model_options), run.config,
                         history, evaluation, train_seconds)
    if run.out is not None:
        result.model_path = str(save_result(result, run.out, data.sha256))
    return result


def train_architecture(architecture: str, data, config: TrainConfig, model_options: dict | None = None,
                       out: str | None = None, checkpoint_dir: str | None = None) -> TrainResult:
    """Build a registered architecture, train it on MNIST's training set, score it on the test set, save it."""
    run = Run(architecture, config, _given(model_options), out, checkpoint_dir)
    return train_run(run.check(len(data.train_images)), data)


def _check_model(architecture: str, options: dict) -> None:
    """Build the model on the meta device: the options are checked without memory or random draws."""
    from .models import build_model

    try:
        with torch.device("meta"):
            model = build_model(architecture, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{architecture}: invalid options {options} ({exc})") from None
    size = sum(p.numel() for p in model.parameters())
    if size > MAX_PARAMETERS:
        raise ConfigError(f"{architecture} with {options} has {size:,} parameters, more than the "
                          f"{MAX_PARAMETERS:,} allowed")


def _given(options: dict | None) -> dict:
    return {k: v for k, v in (options or {}).items() if v is not None}


def _absolute(path) -> str | None:
    return str(Path(path).absolute()) if path is not None else None


def _file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_result(result: TrainResult, path, dataset_sha256: str):
    from . import persist

    training = result.train_config.settings()
    if result.train_config.augment:  # the values themselves: a recipe's name may mean other values later
        training["augment_recipe_values"] = recipe_named(result.train_config.augment_recipe).to_dict()
    metrics = {k: v for k, v in result.evaluation.summary().items() if k != "confusion_matrix"}
    return persist.save_model(path, result.model, result.architecture, result.model_config,
                              training=training, metrics=metrics, history=result.history.to_dict(),
                              train_seconds=round(result.train_seconds, 3), dataset_sha256=dataset_sha256)

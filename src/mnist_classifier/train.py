"""The training loop: in-memory tensors, batched augmentation, schedules, early stopping, history.

The whole dataset lives on the device as one tensor; a batch is an index into it, and augmentation
(``augment.augment_batch``) is a few whole-batch tensor operations, so there is no per-sample Python anywhere.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from .augment import augment_batch, random_affine, recipe_named  # noqa: F401 (random_affine is public here too)
from .errors import ConfigError
from .inference import resolve_device, to_model_input

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "plateau")


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

    def validate(self) -> None:
        checks = [
            (isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs}"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"batch_size must be a positive integer, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r} (choose from {', '.join(OPTIMIZERS)})"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})"),
            (self.validation_split == 0 or 0 < self.validation_split < 1,
             f"validation_split must be in (0, 1) (or 0 for none), got {self.validation_split}"),
            (self.early_stopping >= 0, f"early_stopping patience must be >= 0, got {self.early_stopping}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.distill >= 0 and math.isfinite(self.distill), f"distill must be a number >= 0, got {self.distill}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        recipe_named(self.augment_recipe)  # raises ConfigError for an unknown name or field

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class History:
    """Per-epoch curves; ``best_epoch`` is the epoch whose weights were kept (1-based)."""

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
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
    n_val = int(round(n * fraction))
    return order[n_val:], order[:n_val]


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
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    return total_loss / len(x), correct / len(x)


def fit(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, config: TrainConfig) -> History:
    """Train ``model`` in place on uint8 images (N, 28, 28) and labels (N,); returns the history.

    With a validation split and early stopping, the weights of the epoch with the lowest validation
    loss are restored at the end.
    """
    config.validate()
    torch.manual_seed(config.seed)  # dropout and weight init draw from the global generator
    generator = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    if device.type == "cuda":
        generator = torch.Generator(device=device).manual_seed(config.seed)
    model.to(device)
    teacher = _load_teacher(config, device)

    x_all = to_model_input(images).to(device).contiguous(memory_format=torch.channels_last)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    if config.validation_split:
        train_idx, val_idx = split_validation(len(x_all), config.validation_split, config.seed)
        x_train, y_train = x_all[train_idx.to(device)], y_all[train_idx.to(device)]
        x_val, y_val = x_all[val_idx.to(device)], y_all[val_idx.to(device)]
    else:
        x_train, y_train, x_val, y_val = x_all, y_all, None, None

    steps = math.ceil(len(x_train) / config.batch_size)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config, steps)
    history = History()
    best_loss, best_state, patience_left = math.inf, None, config.early_stopping

    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        lr_at_start = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = _train_one_epoch(model, x_train, y_train, optimizer, scheduler, config,
                                                 generator, epoch, teacher)
        val_loss, val_acc = _loss_and_accuracy(model, x_val, y_val) if x_val is not None else (None, None)
        history.epoch.append(epoch)
        history.train_loss.append(train_loss)
        history.train_accuracy.append(train_acc)
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_acc)
        history.lr.append(lr_at_start)
        history.seconds.append(time.perf_counter() - started)
        _report_epoch(history, config)

        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss if val_loss is not None else train_loss)
        if val_loss is None:
            continue
        if val_loss < best_loss:
            best_loss, history.best_epoch, patience_left = val_loss, epoch, config.early_stopping
            best_state = copy.deepcopy(model.state_dict())
        elif config.early_stopping:
            patience_left -= 1
            if patience_left == 0:
                history.stopped_early = True
                break

    if best_state is not None and history.best_epoch != len(history):
        model.load_state_dict(best_state)  # restore the best epoch's weights
    if history.best_epoch is None:
        history.best_epoch = len(history)
    model.eval()
    return history


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


def _train_one_epoch(model, x, y, optimizer, scheduler, config, generator, epoch, teacher=None) -> tuple[float, float]:
    from tqdm import tqdm

    model.train()
    order = torch.randperm(len(x), generator=generator, device=generator.device)
    total_loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    per_step_schedule = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    batches = range(0, len(x), config.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
               disable=not config.progress, file=sys.stderr)
    for step, start in enumerate(bar):
        idx = order[start:start + config.batch_size]
        xb, yb = x[idx], y[idx]
        if config.augment:
            xb = augment_batch(xb, yb, generator, config.augment_recipe).contiguous(memory_format=torch.channels_last)
        logits = model(xb)
        loss = _loss(logits, yb, xb, teacher, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if per_step_schedule:
            scheduler.step()
        total_loss += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
        if step % 50 == 0 and config.progress:  # .item() syncs; do it rarely
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return total_loss.item() / len(x), correct.item() / len(x)


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


def train_architecture(architecture: str, data, config: TrainConfig, model_options: dict | None = None,
                       out: str | None = None) -> TrainResult:
    """Build a registered architecture, train it on MNIST's training set, score it on the test set, save it."""
    from .evaluate import evaluate
    from .models import build_model, model_config

    options = {k: v for k, v in (model_options or {}).items() if v is not None}
    torch.manual_seed(config.seed)  # the same seed gives the same initial weights
    model = build_model(architecture, **options)
    started = time.perf_counter()
    history = fit(model, data.train_images, data.train_labels, config)
    train_seconds = time.perf_counter() - started
    evaluation = evaluate(model, data.test_images, data.test_labels)
    result = TrainResult(model, architecture, model_config(architecture, **options), config, history, evaluation,
                         train_seconds)
    if out is not None:
        result.model_path = str(save_result(result, out, data.sha256))
    return result


def save_result(result: TrainResult, path, dataset_sha256: str):
    from . import persist

    training = {k: v for k, v in asdict(result.train_config).items() if k not in ("progress",)}
    if result.train_config.augment:  # the values themselves: a recipe's name may mean other values later
        training["augment_recipe_values"] = recipe_named(result.train_config.augment_recipe).to_dict()
    metrics = {k: v for k, v in result.evaluation.summary().items() if k != "confusion_matrix"}
    return persist.save_model(path, result.model, result.architecture, result.model_config,
                              training=training, metrics=metrics, history=result.history.to_dict(),
                              train_seconds=round(result.train_seconds, 3), dataset_sha256=dataset_sha256)

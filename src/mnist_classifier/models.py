"""The architectures, and the one registry that maps a name to a constructor and its training preset.

Every model takes a float tensor of shape (N, 1, 28, 28) with ink in [0, 1] on a 0 background (MNIST
style, as ``preprocess`` produces) and returns logits (N, 10). The MNIST mean/std standardization happens
inside the model, so no caller can forget it or apply it twice.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # pixel statistics of the MNIST training set


class Standardize(nn.Module):
    """(x - mean) / std with MNIST's statistics, as the first layer of every model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MNIST_MEAN) / MNIST_STD


class MLP(nn.Module):
    """Seed 000: flatten -> [Linear -> ReLU -> Dropout] per hidden layer -> Linear(10)."""

    def __init__(self, hidden_layers=(128, 64), dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [Standardize(), nn.Flatten()]
        width = 28 * 28
        for size in hidden_layers:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class MLPBatchNorm(nn.Module):
    """Seed 001: 512 -> BN -> ReLU -> Dropout .3, 256 -> BN -> ReLU -> Dropout .2, 128 -> ReLU, 10."""

    def __init__(self, hidden_layers=(512, 256, 128), dropouts=(0.3, 0.2, 0.0)):
        super().__init__()
        if len(dropouts) != len(hidden_layers):
            raise ConfigError(f"dropouts has {len(dropouts)} values but there are {len(hidden_layers)} hidden layers")
        layers: list[nn.Module] = [Standardize(), nn.Flatten()]
        width = 28 * 28
        for i, (size, rate) in enumerate(zip(hidden_layers, dropouts)):
            last = i == len(hidden_layers) - 1  # the seed's last hidden layer has no BN and no dropout
            layers.append(nn.Linear(width, size))
            layers += [nn.ReLU()] if last else [nn.BatchNorm1d(size), nn.ReLU(), nn.Dropout(rate)]
            width = size
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    # No conv bias: the batch norm right after it has its own shift.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DigitCNN(nn.Module):
    """Our CNN: three stages of 3x3 conv-BN-ReLU, each ending in a 2x2 max-pool (28 -> 14 -> 7 -> 3).

    ``channels`` sets the width of each stage and ``convs`` how many convolutions a stage has. The
    widths double as the maps halve, so every stage costs about the same; at (16, 32, 64) the whole
    net is ~2 M multiply-adds per digit, which is what lets a 2-core CPU both train it to 99.6% in
    minutes and read 20k digits a second. The 3x3xC head keeps spatial layout for the classifier,
    which beats global pooling on digits, whose meaning depends on where strokes are.
    """

    def __init__(self, channels=(16, 32, 64), convs=(1, 1, 1), dropout: float = 0.1, strided_stem: bool = False):
        super().__init__()
        layers: list[nn.Module] = [Standardize()]
        width = 1
        if strided_stem:
            # One 5x5 stride-2 conv replaces the first stage: no 28x28 feature maps at all, which is
            # where a small CNN spends most of its memory traffic on a CPU.
            layers += [nn.Conv2d(1, channels[0], 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(channels[0]),
                       nn.ReLU(inplace=True)]
            width = channels[0]
        for stage, (out, count) in enumerate(zip(channels, convs)):
            if strided_stem and stage == 0:
                continue
            for _ in range(count):
                layers += _conv_bn_relu(width, out)
                width = out
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(width * 3 * 3, 10)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Ensemble(nn.Module):
    """Several models read every digit; the answer is their mean log-probability (a geometric mean).

    Members that learned different things make different mistakes: a CNN tuned to MNIST's writers and
    one trained on other writers' variation (augment's "writers" recipe) together read both MNIST and
    other hands better than either alone. ``members`` lists each one's architecture and config, as a
    model file records them.
    """

    def __init__(self, members=None):
        super().__init__()
        members = members if members is not None else [{"architecture": "cnn"}, {"architecture": "cnn"}]
        self.members = nn.ModuleList(build_model(m["architecture"], **m.get("config", {})) for m in members)

    def forward(self, x):
        return torch.stack([torch.log_softmax(member(x), dim=1) for member in self.members]).mean(0)


# ---------------------------------------------------------------------------------------------- options

# Bounds on what a constructor may be asked for. A model file's config is checked against them before
# anything is built, so a file cannot make the loader allocate more than a real model of that size.
MAX_WIDTH = 4096    # units in one hidden layer (the seeds use at most 512)
MAX_LAYERS = 8      # hidden layers of an MLP
MAX_CHANNELS = 512  # channels of one CNN stage (the presets use at most 64)
MAX_CONVS = 4       # convolutions in one CNN stage
MAX_MEMBERS = 8     # models in one ensemble


@dataclass(frozen=True)
class Option:
    """What one constructor option may be: a whole number, a number or a flag within bounds, or a list of
    them whose length is bounded too (``items``: the fewest and most)."""

    kind: type  # int, float or bool
    low: float = 0
    high: float = 0
    high_open: bool = False  # the range is [low, high) rather than [low, high]
    items: tuple[int, int] | None = None
    meaning: str = ""  # what it sets, for the CLI's help

    def check(self, name: str, value) -> None:
        values = value if self.items else [value]
        fits = isinstance(values, (list, tuple)) and all(self._fits(v) for v in values)
        if self.items and fits:
            fits = self.items[0] <= len(values) <= self.items[1]
        if not fits:
            raise ConfigError(f"{name} must be {self.description()}, got {_short(value)}")

    def _fits(self, v) -> bool:
        if self.kind is bool:
            return isinstance(v, bool)
        if isinstance(v, bool) or not isinstance(v, int if self.kind is int else (int, float)):
            return False
        return self.low <= v < self.high if self.high_open else self.low <= v <= self.high

    def description(self) -> str:
        if self.kind is bool:
            what = "true or false"
        elif self.kind is int:
            what = f"whole number from {self.low} to {self.high}"
        else:
            what = f"in [{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if not self.items:
            return what if self.kind is not int else f"a {what}"
        fewest, most = self.items
        count = f"a list of {most}" if fewest == most else f"a non-empty list of at most {most}"
        return f"{count} {what.replace('whole number', 'whole numbers') if self.kind is int else 'numbers ' + what}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_members(name: str, members) -> None:
    """An ensemble's members: a bounded list of {"architecture": NAME, "config": {...}}, no ensembles."""
    shape_ok = (isinstance(members, list) and 1 <= len(members) <= MAX_MEMBERS
                and all(isinstance(m, dict) and set(m) <= {"architecture", "config"} for m in members))
    if not shape_ok or any(m.get("architecture") == "ensemble" for m in members):
        raise ConfigError(f"an ensemble needs a list of 1 to {MAX_MEMBERS} members, each {{'architecture': NAME, "
                          f"'config': {{...}}}}, none of them an ensemble, got {_short(members)}")
    for i, member in enumerate(members):
        try:
            check_config(member.get("architecture"), member.get("config", {}))
        except ConfigError as exc:
            raise ConfigError(f"{name}[{i}]: {exc}") from None


DROPOUT = Option(float, 0.0, 1.0, high_open=True, meaning="dropout rate")
HIDDEN_LAYERS = Option(int, 1, MAX_WIDTH, items=(1, MAX_LAYERS), meaning="hidden layer sizes")


def _one_dropout_per_layer(config: dict) -> str | None:
    hidden, dropouts = config["hidden_layers"], config["dropouts"]
    if len(dropouts) != len(hidden):
        return f"dropouts has {len(dropouts)} values but there are {len(hidden)} hidden layers"
    return None


@dataclass(frozen=True)
class Architecture:
    """A registry entry: how to build the model, and the training settings it was designed with."""

    name: str
    builder: Callable[..., nn.Module]
    config: dict  # constructor keyword arguments (overridable)
    options: dict  # option name -> its Option (or a checking function), checked before building
    training: dict  # TrainConfig fields this architecture is tuned for (overridable)
    description: str = ""
    channels_last: bool = field(default=False)  # conv nets run faster on CPU in NHWC
    agree: Callable[[dict], str | None] = field(default=lambda config: None)  # options that must fit each other


CNN_OPTIONS = {"channels": Option(int, 1, MAX_CHANNELS, items=(3, 3), meaning="stage widths"),
               "convs": Option(int, 1, MAX_CONVS, items=(3, 3), meaning="convolutions per stage"),
               "dropout": DROPOUT, "strided_stem": Option(bool, meaning="a stride-2 first convolution")}

REGISTRY: dict[str, Architecture] = {
    a.name: a for a in [
        Architecture("mlp", MLP, {"hidden_layers": [128, 64], "dropout": 0.2},
                     {"hidden_layers": HIDDEN_LAYERS, "dropout": DROPOUT},
                     {"epochs": 10, "batch_size": 32, "lr": 1e-3, "schedule": "constant", "augment": False},
                     "seed 000: 784-128-64-10 MLP with dropout"),
        Architecture("mlp-bn", MLPBatchNorm, {"hidden_layers": [512, 256, 128], "dropouts": [0.3, 0.2, 0.0]},
                     {"hidden_layers": HIDDEN_LAYERS,
                      "dropouts": Option(float, 0.0, 1.0, True, (1, MAX_LAYERS), "dropout rate per hidden layer")},
                     {"epochs": 15, "batch_size": 128, "lr": 1e-3, "schedule": "plateau", "augment": False},
                     "seed 001: 512-256-128 MLP with batch norm and dropout", agree=_one_dropout_per_layer),
        Architecture("cnn", DigitCNN,
                     {"channels": [16, 32, 64], "convs": [1, 1, 1], "dropout": 0.1, "strided_stem": False},
                     CNN_OPTIONS,
                     # All 60k digits and a fixed one-cycle schedule: no validation split, so no early stopping.
                     {"epochs": 15, "batch_size": 128, "lr": 3e-3, "schedule": "onecycle", "augment": True,
                      "label_smoothing": 0.05, "validation_split": 0.0},
                     "our default CNN, tuned for accuracy per CPU-second", channels_last=True),
        Architecture("cnn-fast", DigitCNN,
                     {"channels": [16, 32, 48], "convs": [1, 1, 1], "dropout": 0.0, "strided_stem": True},
                     CNN_OPTIONS,
                     # Batch 384: fewer optimizer steps per epoch (per-step overhead is a third of the time
                     # on 2 cores) with a one-cycle peak LR raised to match.
                     {"epochs": 2, "batch_size": 384, "lr": 8e-3, "schedule": "onecycle", "augment": False,
                      "validation_split": 0.0},
                     "the fastest path to 99%: a strided-stem CNN trained for two epochs", channels_last=True),
        Architecture("ensemble", Ensemble, {"members": [{"architecture": "cnn"}, {"architecture": "cnn"}]},
                     {"members": _check_members},
                     # Trained as one model, the members learn alike; `combine` joins separately trained ones.
                     {"epochs": 15, "batch_size": 128, "lr": 3e-3, "schedule": "onecycle", "augment": True,
                      "label_smoothing": 0.05, "validation_split": 0.0},
                     "several models averaged: the shipped model joins an MNIST CNN and an other-writers CNN"),
    ]
}


@dataclass(frozen=True)
class ModelOption:
    """One constructor option as the CLI offers it: its rule, the architectures that take it, an example."""

    name: str
    option: Option
    architectures: list[str]
    example: object  # the first such architecture's default


def model_options() -> list[ModelOption]:
    """Every constructor option of the registry that is a plain value (an ensemble's members are not)."""
    found: dict[str, ModelOption] = {}
    for arch in REGISTRY.values():
        for name, option in arch.options.items():
            if not isinstance(option, Option):
                continue
            if name in found:
                found[name].architectures.append(arch.name)
            else:
                found[name] = ModelOption(name, option, [arch.name], arch.config[name])
    return list(found.values())


def architecture(name: str) -> Architecture:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(name, REGISTRY, n=1) if isinstance(name, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown architecture {_short(name)} (choose from {', '.join(REGISTRY)}){hint}") from None


def check_config(name: str, overrides) -> dict:
    """The full config of architecture ``name`` with ``overrides``, every option checked against its
    bounds; raises ConfigError (one line) before anything is built."""
    arch = architecture(name)
    if not isinstance(overrides, dict):
        raise ConfigError(f"{name} config must be a mapping of options, got {_short(overrides)}")
    unknown = set(overrides) - set(arch.config)
    if unknown:
        raise ConfigError(f"{name} has no option {', '.join(sorted(map(str, unknown)))[:60]} "
                          f"(options: {', '.join(arch.config)})")
    config = {**arch.config, **overrides}
    for option, value in config.items():
        check = arch.options[option]
        (check.check if isinstance(check, Option) else check)(option, value)
    problem = arch.agree(config)
    if problem:
        raise ConfigError(f"{name}: {problem}")
    return config


def channels_last(x):
    """A tensor or module in NHWC memory order, the layout the CPU's convolution kernels run fastest in."""
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last)


def build_model(name: str, **overrides) -> nn.Module:
    """Build a registered architecture; keyword arguments override its default config."""
    arch = architecture(name)
    model = arch.builder(**check_config(name, overrides))
    return channels_last(model) if arch.channels_last else model


def model_config(name: str, **overrides) -> dict:
    """The full constructor config a model was built with (defaults plus overrides), for the model file."""
    return {**architecture(name).config, **overrides}

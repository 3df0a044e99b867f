"""Labelled folders of people's own images: DIR/0 ... DIR/9, the layout torchvision's ImageFolder uses.

    folder = collect_labelled("my_digits")            # paths and labels, warnings about the layout
    read = read_labelled(folder, Predictor())         # what predict answers for each file
    read.images(), read.labels()                      # the 28x28 arrays the model saw, for fine-tuning
    evaluate_labelled(read).summary()                 # the `evaluate --images --json` figures

``evaluate --images`` and ``finetune`` both read folders through here, so both see exactly the images and
answers ``predict`` gives. An unreadable file is left out (one line naming it); a readable image that holds
no digit is kept as a wrong answer (``NO_DIGIT``) when scoring, and skipped when fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError
from .evaluate import DIGITS, NO_DIGIT, Evaluation
from .predict import collect_images
from .decode import IMAGE_EXTENSIONS
from .reprs import compact_repr

LAYOUT_HINT = "expected one subfolder per digit, DIR/0 ... DIR/9, holding that digit's images"


@dataclass
class LabelledFolder:
    root: Path
    paths: list[str]
    labels: np.ndarray  # (N,) int64, the digit each path's folder names
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return compact_repr(self, {"root": str(self.root), "images": len(self.paths), "warnings": self.warnings})

    def counts(self) -> list[int]:
        """Image files per digit."""
        return np.bincount(self.labels, minlength=10).tolist()


def collect_labelled(directory, extensions=IMAGE_EXTENSIONS) -> LabelledFolder:
    """The image files under DIR/0 ... DIR/9 (searched recursively, as ImageFolder does), with their labels.

    Raises ImageError for a missing DIR or one without any digit subfolder. Other subfolders, image files
    lying directly in DIR and digits without images are not errors: each gives one warning line.
    """
    root = Path(directory)
    if not root.exists():
        raise ImageError(f"{root}: folder not found")
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder ({LAYOUT_HINT})")
    digit_folders, warnings = _digit_folders(root, extensions)
    paths, labels = [], []
    for digit in DIGITS:
        folder = digit_folders.get(digit)
        found = collect_images([folder], recursive=True, extensions=extensions) if folder else []
        if not found:
            warnings.append(f"{root / str(digit)}: no images of digit {digit}")
        paths += found
        labels += [digit] * len(found)
    return LabelledFolder(root, paths, np.asarray(labels, dtype=np.int64), warnings)


def _digit_folders(root: Path, extensions) -> tuple[dict[int, Path], list[str]]:
    suffixes = {"." + e.lower().lstrip(".") for e in extensions}
    folders, warnings, loose = {}, [], 0
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue  # .DS_Store, .ipynb_checkpoints and the like are nobody's digits
        if entry.is_dir() and entry.name in {str(d) for d in DIGITS}:
            folders[int(entry.name)] = entry
        elif entry.is_dir():
            warnings.append(f"{entry}: ignored, not a digit folder (0-9)")
        elif entry.suffix.lower() in suffixes:
            loose += 1
    if not folders:
        raise ImageError(f"{root}: no digit subfolders 0-9 ({LAYOUT_HINT})")
    if loose:
        warnings.append(f"{root}: {loose} image file(s) directly in the folder ignored (they need a digit subfolder)")
    return folders, warnings


@dataclass
class LabelledRead:
    """A labelled folder with predict's answer for each of its files, in the same order."""

    folder: LabelledFolder
    predictions: list  # predict.Prediction per path

    def __repr__(self) -> str:
        return compact_repr(self, {"root": str(self.folder.root), "images": len(self.predictions),
                                   "unreadable": len(self.unreadable)})

    @property
    def unreadable(self) -> list[str]:
        """One line per file that could not be read, naming it."""
        return [p.error for p in self.predictions if p.error is not None]

    def _no_digit_rows(self) -> list[int]:
        return [i for i, p in enumerate(self.predictions) if p.error is None and p.digit is None]

    def no_digit_messages(self, consequence: str) -> list[str]:
        """One line per readable image answered "no digit", ending with what that means for the caller."""
        return [f"{self.predictions[i].path}: no digit: {self.predictions[i].reason}; {consequence}"
                for i in self._no_digit_rows()]

    def _with_digit(self) -> list[int]:
        return [i for i, p in enumerate(self.predictions) if p.digit is not None]

    def images(self) -> np.ndarray:
        """(M, 28, 28) float32: the images the model saw, for the files it read a digit from."""
        rows = self._with_digit()
        if not rows:
            return np.zeros((0, 28, 28), dtype=np.float32)
        return np.stack([self.predictions[i].image for i in rows]).astype(np.float32)

    def labels(self) -> np.ndarray:
        """The labels of ``images()``, row for row."""
        return self.folder.labels[self._with_digit()]


def read_labelled(folder: LabelledFolder, predictor, progress: bool = False) -> LabelledRead:
    """Run ``predictor`` (a predict.Predictor) over every file: the same decoding and answers as predict."""
    return LabelledRead(folder, predictor.predict_many(folder.paths, progress=progress))


@dataclass
class FolderEvaluation:
    """``evaluate --images``: the MNIST evaluation's figures over a labelled folder, plus what was not read."""

    evaluation: Evaluation
    read: LabelledRead

    def __repr__(self) -> str:
        return compact_repr(self, {"root": str(self.read.folder.root), "n": self.evaluation.n,
                                   "accuracy": self.evaluation.accuracy, "unreadable": len(self.read.unreadable)})

    def summary(self) -> dict:
        base = self.evaluation.summary()
        no_digit = self.evaluation.no_digit_per_class
        for digit, row in base["per_class"].items():
            row["no_digit"] = no_digit[int(digit)]
        no_digit_files = self.read.no_digit_messages("counted as wrong")
        return {"images": str(self.read.folder.root), **base,
                "no_digit": len(no_digit_files), "no_digit_files": no_digit_files,
                "unreadable": len(self.read.unreadable), "unreadable_files": self.read.unreadable,
                "warnings": self.read.folder.warnings}


def evaluate_labelled(read: LabelledRead) -> FolderEvaluation:
    """Score predict's answers against the folder labels. Unreadable files are left out of ``n``; an image
    answered "no digit" stays in as a wrong answer (a uniform guess in the loss)."""
    rows = [i for i, p in enumerate(read.predictions) if p.error is None]
    if not rows:
        raise ImageError(f"{read.folder.root}: no readable images under the digit subfolders")
    answers = [read.predictions[i] for i in rows]
    y_pred = np.array([NO_DIGIT if p.digit is None else p.digit for p in answers], dtype=np.int64)
    uniform = np.full(10, 0.1, dtype=np.float32)
    probabilities = np.stack([uniform if p.digit is None else np.asarray(p.probabilities, dtype=np.float32)
                              for p in answers])
    return FolderEvaluation(Evaluation(read.folder.labels[rows], y_pred, probabilities), read)


def evaluate_images(directory, predictor, progress: bool = False) -> FolderEvaluation:
    """``evaluate --images DIR``: collect, read and score a labelled folder with a predict.Predictor."""
    return evaluate_labelled(read_labelled(collect_labelled(directory), predictor, progress=progress))

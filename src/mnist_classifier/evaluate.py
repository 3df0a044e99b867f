"""Metrics over a labelled set: accuracy, loss, per-class precision/recall/F1, confusion, confused pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, log_loss

from .engines import as_engine

DIGITS = list(range(10))
NO_DIGIT = -1  # a predicted label: the image was read but held no digit (a wrong answer, never a confusion)


@dataclass
class Evaluation:
    y_true: np.ndarray  # (N,) int
    y_pred: np.ndarray  # (N,) int: a digit, or NO_DIGIT
    probabilities: np.ndarray  # (N, 10) float32, kept for plots (confidence, calibration)

    @property
    def n(self) -> int:
        return len(self.y_true)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.y_true == self.y_pred))

    @property
    def loss(self) -> float:
        """Mean cross-entropy of the predicted probabilities."""
        probabilities = self.probabilities.astype(np.float64)
        probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only within 1e-7
        return float(log_loss(self.y_true, probabilities, labels=DIGITS))

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @property
    def confusion(self) -> np.ndarray:
        """Counts: rows are true digits, columns predicted digits ("no digit" answers are left out)."""
        return confusion_matrix(self.y_true, self.y_pred, labels=DIGITS)

    @property
    def per_class_accuracy(self) -> list[float]:
        # Over every image of the digit: a "no digit" answer is outside the confusion matrix but still a miss.
        return [float(np.mean(self.y_pred[self.y_true == d] == d)) if np.any(self.y_true == d) else 0.0
                for d in DIGITS]

    @property
    def no_digit_per_class(self) -> list[int]:
        return np.bincount(self.y_true[self.y_pred == NO_DIGIT], minlength=10).tolist()

    def classification_report(self) -> dict:
        """scikit-learn's per-class precision/recall/F1/support, keyed by digit as a string."""
        return classification_report(self.y_true, self.y_pred, labels=DIGITS, target_names=[str(d) for d in DIGITS],
                                     output_dict=True, zero_division=0, digits=4)

    def most_confused(self, top: int = 10) -> list[dict]:
        """The largest off-diagonal cells: which true digit is most often read as which other digit."""
        counts = self.confusion.copy()
        np.fill_diagonal(counts, 0)
        order = np.argsort(counts, axis=None)[::-1][:top]
        pairs = [np.unravel_index(i, counts.shape) for i in order]
        return [{"true": int(t), "predicted": int(p), "count": int(counts[t, p])} for t, p in pairs if counts[t, p]]

    def misclassified(self) -> np.ndarray:
        return np.flatnonzero(self.y_true != self.y_pred)

    def summary(self) -> dict:
        """The JSON-ready figures (the ``evaluate --json`` contract: accuracy, loss, n, and more)."""
        report = self.classification_report()
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "n": self.n,
            "errors": int((self.y_true != self.y_pred).sum()),
            "per_class": {str(d): {"precision": report[str(d)]["precision"], "recall": report[str(d)]["recall"],
                                   "f1": report[str(d)]["f1-score"], "support": int(report[str(d)]["support"]),
                                   "accuracy": self.per_class_accuracy[d]} for d in DIGITS},
            "macro_f1": report["macro avg"]["f1-score"],
            "most_confused": self.most_confused(),
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate(model, images, labels) -> Evaluation:
    """Run the model (a torch module, or an engine from ``engines.open_engine``) over images (uint8 (N, 28, 28)
    or model-ready floats) and score it against labels."""
    probabilities = as_engine(model).probabilities(images)
    return Evaluation(y_true=np.asarray(labels).astype(np.int64), y_pred=probabilities.argmax(axis=1),
                      probabilities=probabilities)

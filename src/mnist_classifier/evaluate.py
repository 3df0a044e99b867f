"""Metrics over a labelled set: accuracy, loss, per-class precision/recall/F1, confusion, confused pairs.

The metrics are scikit-learn's definitions (log_loss, confusion_matrix, classification_report with
zero_division=0), computed here in a few lines of numpy: importing scikit-learn's metrics costs every
`train`, `evaluate` and `report` about a second. The tests check every value against scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engines import as_engine
from .reprs import compact_repr

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
        eps = np.finfo(probabilities.dtype).eps  # as scikit-learn clips: a zero probability costs 36, not inf
        truth = np.clip(probabilities[np.arange(self.n), self.y_true], eps, 1 - eps)
        return float(np.mean(-np.log(truth)))

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @property
    def weakest_digit(self) -> int:
        return weakest_digit(self.y_true, self.y_pred)

    def __repr__(self) -> str:
        return compact_repr(self, {"n": self.n, "accuracy": self.accuracy, "loss": self.loss})

    @property
    def confusion(self) -> np.ndarray:
        """Counts: rows are true digits, columns predicted digits ("no digit" answers are left out)."""
        return confusion_counts(self.y_true, self.y_pred)

    @property
    def per_class_accuracy(self) -> list[float]:
        # Over every image of the digit: a "no digit" answer is outside the confusion matrix but still a miss.
        return [float(np.mean(self.y_pred[self.y_true == d] == d)) if np.any(self.y_true == d) else 0.0
                for d in DIGITS]

    @property
    def no_digit_per_class(self) -> list[int]:
        return np.bincount(self.y_true[self.y_pred == NO_DIGIT], minlength=10).tolist()

    def classification_report(self) -> dict:
        """Per-class precision, recall, F1 and support keyed by digit as a string, and their "macro avg" and
        "weighted avg" (by support): scikit-learn's classification_report with zero_division=0. A "no digit"
        answer is a miss of its true digit and nobody's false positive."""
        precision, recall, f1, support = per_class_scores(self.y_true, self.y_pred)
        report = {str(d): {"precision": float(precision[d]), "recall": float(recall[d]), "f1-score": float(f1[d]),
                           "support": float(support[d])} for d in DIGITS}
        for name, weights in (("macro avg", None), ("weighted avg", support if support.any() else None)):
            report[name] = {metric: float(np.average(values, weights=weights)) for metric, values
                            in (("precision", precision), ("recall", recall), ("f1-score", f1))}
            report[name]["support"] = float(support.sum())
        return report

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


def confusion_counts(y_true, y_pred) -> np.ndarray:
    """(10, 10) int64 counts of (true digit, answered digit); answers that are no digit are left out."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    counted = (y_pred >= 0) & (y_pred < 10) & (y_true >= 0) & (y_true < 10)
    return np.bincount(y_true[counted] * 10 + y_pred[counted], minlength=100).reshape(10, 10)


def per_class_scores(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, F1, support), ten of each, as scikit-learn defines them with zero_division=0."""
    confusion = confusion_counts(y_true, y_pred)
    hits = np.diag(confusion).astype(np.float64)
    answered = confusion.sum(axis=0)  # times each digit was the answer
    support = np.bincount(np.asarray(y_true, dtype=np.int64), minlength=10)[:10]
    precision = np.divide(hits, answered, out=np.zeros(10), where=answered > 0)
    recall = np.divide(hits, support, out=np.zeros(10), where=support > 0)
    both = answered + support  # 2 tp + fp + fn
    f1 = np.divide(2 * hits, both, out=np.zeros(10), where=both > 0)
    return precision, recall, f1, support


def weakest_digit(y_true, y_pred) -> int:
    """The digit read correctly least often (least recall; a "no digit" answer is a miss); a tie goes to the
    lower F1, then to the lower digit. The per-class chart marks it and the report's text names it."""
    _, recall, f1, _ = per_class_scores(y_true, y_pred)
    return min(DIGITS, key=lambda d: (recall[d], f1[d], d))


def evaluate(model, images, labels) -> Evaluation:
    """Run the model (a torch module, or an engine from ``engines.open_engine``) over images (uint8 (N, 28, 28)
    or model-ready floats) and score it against labels."""
    probabilities = as_engine(model).probabilities(images)
    return Evaluation(y_true=np.asarray(labels).astype(np.int64), y_pred=probabilities.argmax(axis=1),
                      probabilities=probabilities)

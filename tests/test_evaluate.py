"""The metrics are scikit-learn's: every value checked against scikit-learn itself, as an oracle."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix, log_loss

from mnist_classifier.evaluate import DIGITS, NO_DIGIT, Evaluation, confusion_counts, weakest_digit


def scored(seed: int, n: int = 3000, no_digit: float = 0.05, missing=()) -> Evaluation:
    """Answers of a mediocre model: a digit right two times in three, some "no digit", some digits never
    answered (``missing``), and some probabilities exactly 0 or 1."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, n)
    logits = rng.normal(size=(n, 10)) * 3
    logits[np.arange(n), y_true] += rng.choice([0.0, 4.0, 4.0], n)
    logits[:, list(missing)] = -np.inf
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32)
    probabilities[:5] = np.eye(10, dtype=np.float32)[(y_true[:5] + 1) % 10]  # sure and wrong: p(truth) = 0
    y_pred = probabilities.argmax(axis=1)
    y_pred[rng.random(n) < no_digit] = NO_DIGIT
    return Evaluation(y_true, y_pred, probabilities)


@pytest.mark.parametrize("seed, missing", [(0, ()), (1, (3,)), (2, (0, 7, 9))])
def test_the_metrics_are_scikit_learns(seed, missing):
    ev = scored(seed, missing=missing)
    rows = ev.probabilities.astype(np.float64)
    rows /= rows.sum(axis=1, keepdims=True)
    assert ev.loss == log_loss(ev.y_true, rows, labels=DIGITS)
    assert np.array_equal(ev.confusion, confusion_matrix(ev.y_true, ev.y_pred, labels=DIGITS))
    oracle = classification_report(ev.y_true, ev.y_pred, labels=DIGITS, target_names=[str(d) for d in DIGITS],
                                   output_dict=True, zero_division=0)
    ours = ev.classification_report()
    for key in [str(d) for d in DIGITS] + ["macro avg", "weighted avg"]:
        for metric in ("precision", "recall", "f1-score", "support"):
            assert ours[key][metric] == oracle[key][metric], (key, metric)
    for d in missing:
        assert ours[str(d)]["precision"] == 0.0 and ours[str(d)]["f1-score"] == 0.0  # never answered


def test_confusion_leaves_out_the_no_digit_answers():
    counts = confusion_counts([1, 1, 2, 3], [1, NO_DIGIT, 2, 5])
    assert counts.sum() == 3 and counts[1, 1] == 1 and counts[2, 2] == 1 and counts[3, 5] == 1


def test_the_weakest_digit_is_the_least_recall_then_the_lower_f1():
    """3 and 5 are both read right 9 times in 10; 5 is also answered for an 8, so its F1 is lower: 5 is the
    weakest (the chart's red bar and the report's named digit), not 3, the lower digit."""
    y_true = np.repeat(DIGITS, 10)
    y_true = np.concatenate([y_true, np.full(10, 8)])
    y_pred = y_true.copy()
    y_pred[30] = 8          # a 3 read as 8
    y_pred[50] = NO_DIGIT   # a 5 answered "no digit"
    y_pred[-1] = 5          # an 8 read as 5
    assert weakest_digit(y_true, y_pred) == 5
    assert weakest_digit(y_true, y_true) == 0  # all equal: the lowest digit
    probabilities = np.eye(10, dtype=np.float32)[np.where(y_pred < 0, 0, y_pred)]
    assert Evaluation(y_true, y_pred, probabilities).weakest_digit == 5

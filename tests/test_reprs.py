"""Every result type shows as one short line: what a REPL or a log line needs, never a 28x28 array or a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mnist_classifier.evaluate import Evaluation
from mnist_classifier.finetune import FinetuneResult
from mnist_classifier.labelled import FolderEvaluation, LabelledFolder, LabelledRead
from mnist_classifier.predict import Prediction
from mnist_classifier.preprocess import PreparedDigit
from mnist_classifier.report import Report
from mnist_classifier.reprs import compact_repr
from mnist_classifier.segment import PreparedNumber, Segment
from mnist_classifier.train import History, TrainConfig, TrainResult


def _evaluation() -> Evaluation:
    y_true = np.array([7, 2, 1, 0])
    probabilities = np.full((4, 10), 0.01, dtype=np.float32)
    probabilities[np.arange(4), [7, 2, 1, 6]] = 0.91
    return Evaluation(y_true, probabilities.argmax(axis=1), probabilities)


def test_compact_repr_leaves_out_what_says_nothing_and_names_what_is_big():
    class Thing:
        pass

    shown = compact_repr(Thing(), {"a": 1, "gone": None, "off": False, "rate": 0.123456, "image": np.zeros((28, 28)),
                                   "model": torch.nn.Linear(2, 3), "rows": list(range(9)), "pair": (1, 2),
                                   "meta": {"x": 1, "y": 2}, "t": torch.zeros(4, 1, 28, 28)})
    assert shown == ("Thing(a=1, rate=0.1235, image=<28x28 float64>, model=<Linear>, rows=<9 items>, pair=(1, 2), "
                     "meta=<2 keys>, t=<4x1x28x28 torch.float32>)")


def test_every_result_type_is_one_short_line(tmp_path):
    evaluation = _evaluation()
    folder = LabelledFolder(tmp_path, [str(tmp_path / f"{d}/{d}.png") for d in range(4)], np.arange(4))
    read = LabelledRead(folder, [Prediction(p, digit=d, confidence=0.9) for d, p in enumerate(folder.paths)])
    history = History(epoch=[1, 2], train_loss=[0.3, 0.2], train_accuracy=[0.9, 0.95], lr=[1e-3, 1e-3],
                      seconds=[4.0, 4.0])
    tuned = {"on": {"path": "my_digits"}, "validation_accuracy_before": 0.8, "validation_accuracy_after": 0.95}
    shown = {
        "evaluation": repr(evaluation),
        "train": repr(TrainResult(torch.nn.Linear(784, 10), "mlp", {}, TrainConfig(), history, evaluation, 8.42125,
                                  "m.safetensors")),
        "finetune": repr(FinetuneResult(torch.nn.Linear(784, 10), {"finetuned": tuned}, skipped=["a.png: empty file"],
                                        model_path="mine.safetensors")),
        "folder": repr(folder),
        "read": repr(read),
        "folder evaluation": repr(FolderEvaluation(evaluation, read)),
        "report": repr(Report(tmp_path, tmp_path / "index.html", {"accuracy": 0.9966}, {"samples": Path("s.png")})),
        "digit": repr(PreparedDigit(np.zeros((28, 28), np.float32), None, None)),
        "number": repr(PreparedNumber([Segment((0, 0, 9, 9), np.zeros((28, 28), np.float32))] * 5, size=(640, 200))),
        "no number": repr(PreparedNumber([], reason="no ink", scale=0.5)),
    }
    assert shown == {
        "evaluation": "Evaluation(n=4, accuracy=0.75, loss=1.222)",
        "train": "TrainResult(architecture='mlp', accuracy=0.75, epochs=2, train_seconds=8.4213, "
                 "model_path='m.safetensors')",
        "finetune": "FinetuneResult(images='my_digits', validation_accuracy_before=0.8, validation_accuracy_after=0.95, "
                    "skipped=1, model_path='mine.safetensors')",
        "folder": f"LabelledFolder(root='{tmp_path}', images=4, warnings=[])",
        "read": f"LabelledRead(root='{tmp_path}', images=4, unreadable=0)",
        "folder evaluation": f"FolderEvaluation(root='{tmp_path}', n=4, accuracy=0.75, unreadable=0)",
        "report": f"Report(index='{tmp_path / 'index.html'}', accuracy=0.9966, figures=1)",
        "digit": "PreparedDigit(image=<28x28 float32>)",
        "number": "PreparedNumber(segments=<5 items>, size=(640, 200))",
        "no number": "PreparedNumber(segments=[], reason='no ink', scale=0.5)",
    }

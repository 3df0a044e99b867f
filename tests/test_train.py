import math

import numpy as np
import pytest
import torch

from mnist_classifier.errors import ConfigError
from mnist_classifier.models import build_model
from mnist_classifier.train import TrainConfig, fit, random_affine, training_config


@pytest.fixture(scope="module")
def subset(mnist):
    return mnist.train_images[:3000], mnist.train_labels[:3000]


def quiet(**kw):
    return TrainConfig(progress=False, **kw)


@pytest.mark.parametrize("options, message", [
    ({"epochs": -1}, "epochs must be a positive integer, got -1"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"validation_split": 1.5}, r"validation_split must be in \(0, 1\)"),
    ({"validation_split": 1.0}, r"validation_split must be in \(0, 1\)"),
    ({"validation_split": -0.1}, r"validation_split must be in \(0, 1\)"),
    ({"lr": 0}, "learning rate must be a positive number"),
    ({"lr": float("nan")}, "learning rate must be a positive number"),
    ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ({"schedule": "cosine"}, "unknown schedule 'cosine'"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"distill": -1.0}, "distill must be a number >= 0"),
])
def test_nonsense_hyperparameters_are_rejected(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)


def test_preset_with_overrides():
    config = training_config("cnn", epochs=2, lr=None)
    assert config.epochs == 2 and config.lr == 3e-3  # None keeps the preset
    assert config.schedule == "onecycle" and config.augment is True


def _train(subset, seed, **kw):
    torch.manual_seed(seed)
    model = build_model("cnn-fast")
    history = fit(model, *subset, quiet(epochs=1, seed=seed, validation_split=0.1, batch_size=100, **kw))
    return model, history


def test_same_seed_same_weights(subset):
    a, _ = _train(subset, seed=3, augment=True)
    b, _ = _train(subset, seed=3, augment=True)
    c, _ = _train(subset, seed=4, augment=True)
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert any(not torch.equal(wa, wc) for wa, wc in zip(a.state_dict().values(), c.state_dict().values()))


def test_history_is_complete(subset):
    model = build_model("mlp")
    history = fit(model, *subset, quiet(epochs=3, validation_split=0.2, schedule="onecycle", lr=3e-3))
    assert history.epoch == [1, 2, 3]
    for curve in (history.train_loss, history.train_accuracy, history.val_loss, history.val_accuracy, history.lr):
        assert len(curve) == 3 and all(math.isfinite(v) for v in curve)
    assert history.lr[0] < history.lr[1]  # one-cycle warms up
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_accuracy[-1] > 0.85


def test_early_stopping_restores_best_weights(subset):
    # A huge learning rate makes validation loss worse after the first epochs, so patience runs out.
    model = build_model("mlp")
    config = quiet(epochs=30, validation_split=0.2, lr=0.05, early_stopping=2, optimizer="sgd")
    history = fit(model, *subset, config)
    assert history.stopped_early and len(history) < 30
    best = int(np.nanargmin(history.val_loss)) + 1
    assert history.best_epoch == best
    # The restored model scores exactly the best epoch's validation loss.
    from mnist_classifier.train import _loss_and_accuracy, split_validation
    from mnist_classifier.inference import to_model_input

    _, val_idx = split_validation(len(subset[0]), 0.2, config.seed)
    x = to_model_input(subset[0][val_idx.numpy()])
    y = torch.as_tensor(subset[1][val_idx.numpy()]).long()
    assert _loss_and_accuracy(model, x, y)[0] == pytest.approx(history.val_loss[best - 1], rel=1e-5)


def test_plateau_schedule_halves_the_rate_when_validation_stalls():
    from mnist_classifier.train import _optimizer, _scheduler

    config = quiet(lr=0.01, schedule="plateau")
    optimizer = _optimizer(build_model("mlp"), config)
    scheduler = _scheduler(optimizer, config, steps_per_epoch=10)
    for loss in [1.0, 0.9, 0.9, 0.9, 0.9]:  # three epochs without improvement exhaust patience 2
        scheduler.step(loss)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


def test_random_affine_keeps_shape_and_ink():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    out = random_affine(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    ink = out.sum(dim=(1, 2, 3))
    assert torch.all((ink > 0.7 * 32) & (ink < 1.3 * 32))  # +-10% scale changes area by at most ~21%
    assert not torch.equal(out, x)


@pytest.mark.slow
def test_real_training_reaches_97_percent(mnist):
    """A short real run on the full MNIST: one epoch of cnn-fast."""
    from mnist_classifier.train import train_architecture

    result = train_architecture("cnn-fast", mnist, training_config("cnn-fast", progress=False))
    assert result.evaluation.accuracy >= 0.97
    assert result.summary()["epochs"] == training_config("cnn-fast").epochs


def test_a_student_learns_its_teachers_answers(subset, tmp_path):
    """Distillation: trained on the teacher's answers as well as the labels, a small model agrees with the
    teacher on digits it never saw far more often than the same model trained on the labels alone, when the
    teacher's answers differ from the labels (here a teacher that reads every digit d as 9 - d)."""
    from mnist_classifier.inference import predict_proba
    from mnist_classifier.persist import save_model

    images, labels = subset
    teacher = build_model("mlp", hidden_layers=[32], dropout=0.0)
    fit(teacher, images, 9 - labels, quiet(epochs=2, validation_split=0.0, batch_size=64))
    teacher_path = save_model(tmp_path / "teacher.safetensors", teacher, "mlp", {"hidden_layers": [32], "dropout": 0.0})
    unseen = images[-500:]
    agrees = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        student = build_model("mlp", hidden_layers=[32], dropout=0.0)
        fit(student, images[:2000], labels[:2000],
            quiet(epochs=2, validation_split=0.0, batch_size=64, teacher=str(teacher_path), distill=weight))
        agrees[weight] = float(np.mean(predict_proba(student, unseen).argmax(1) == predict_proba(teacher, unseen).argmax(1)))
    assert agrees[5.0] > agrees[0.0] + 0.3, agrees

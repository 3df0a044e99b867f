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


def test_uint8_digits_train_as_their_float_input_does(subset):
    """The uint8 training set, turned into the model's input batch by batch, gives the very weights that
    the same digits given as floats in [0, 1] give, validation figures included."""
    images, labels = subset
    a, history_a = _train((images, labels), seed=5, augment=True)
    b, history_b = _train((images.astype(np.float32) / 255, labels), seed=5, augment=True)
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert history_a.val_loss == history_b.val_loss and history_a.val_accuracy[0] > 0.8


def test_history_is_complete(subset):
    model = build_model("mlp")
    history = fit(model, *subset, quiet(epochs=3, validation_split=0.2, schedule="onecycle", lr=3e-3))
    assert history.epoch == [1, 2, 3]
    for curve in (history.train_loss, history.train_accuracy, history.val_loss, history.val_accuracy, history.lr):
        assert len(curve) == 3 and all(math.isfinite(v) for v in curve)
    assert history.lr[0] < history.lr[1]  # one-cycle warms up
    # Each epoch's lr is the mean over its steps, not the value it started with (one-cycle starts at max/25).
    assert history.lr[0] > 3e-3 / 25 * 1.5
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


# ---------------------------------------------------------------- nonsense refused before the data loads

@pytest.fixture
def no_data_loading(monkeypatch, tmp_path):
    """Any call of the MNIST loader fails the test; the working folder is an empty temporary one."""
    def loader_called(*args, **kwargs):
        raise AssertionError("the data loader was called before the settings were checked")

    monkeypatch.setattr("mnist_classifier.data.load_mnist", loader_called)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train_error(capsys, *args) -> str:
    """Run ``mnist-classifier train ARGS`` in this process; returns its one error line (exit status 1)."""
    from mnist_classifier import cli

    assert cli.main(["train", *map(str, args), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    prefix = "mnist-classifier train: error: "
    assert err.startswith(prefix)
    return err[len(prefix):].strip()


@pytest.mark.parametrize("args, message", [
    (["--validation-split", "1e-6"], "validation_split 1e-06 holds out 0 of 60000 digits, fewer than one batch (128): "
                                     "use a larger split, or 0 for none"),
    (["-a", "mlp", "--validation-split", "0.0004"], "validation_split 0.0004 holds out 24 of 60000 digits, fewer than "
                                                   "one batch (32): use a larger split, or 0 for none"),
    (["--validation-split", "0.9999"], "validation_split 0.9999 leaves 6 of 60000 digits to train on, fewer than "
                                       "one batch (128)"),
    (["--batch-size", "60001"], "validation_split 0.0 leaves 60000 of 60000 digits to train on, fewer than one "
                                "batch (60001)"),
    (["--weight-decay", "inf"], "weight_decay must be a finite number >= 0, got inf"),
    (["--weight-decay", "nan"], "weight_decay must be a finite number >= 0, got nan"),
    (["--weight-decay", "-0.1"], "weight_decay must be a finite number >= 0, got -0.1"),
    (["--seed", str(2 ** 64 + 1)], f"seed must be an integer from 0 to 2**64 - 1, got {2 ** 64 + 1}"),
    (["--seed", "-1"], "seed must be an integer from 0 to 2**64 - 1, got -1"),
    (["--early-stopping", "-1"], "early_stopping patience must be an integer >= 0, got -1"),
    (["-a", "mlp", "--hidden-layers", ",".join(["4096"] * 8)],  # each layer in bounds, all of them too big
     f"mlp with {{'hidden_layers': {[4096] * 8}}} has 120,725,514 parameters, more than the 100,000,000 allowed"),
    (["-a", "mlp", "--hidden-layers", "0"], "hidden_layers must be a non-empty list of at most 8 whole numbers from 1 to 4096, got [0]"),
    (["--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
])
def test_nonsense_settings_are_refused_before_the_data_loads(no_data_loading, capsys, args, message):
    assert train_error(capsys, *args, "--out", "m.safetensors") == message
    assert list(no_data_loading.iterdir()) == []  # nothing written


def test_output_paths_are_checked_before_the_data_loads(no_data_loading, capsys):
    folder = no_data_loading
    (folder / "a-file").write_text("")
    (folder / "m-report").write_text("")
    assert train_error(capsys, "--out", folder) == f"{folder}: cannot write the file there (is a directory)"
    under_a_file = folder / "a-file" / "m.safetensors"
    assert train_error(capsys, "--out", under_a_file) == \
        f"{under_a_file}: cannot write the file there ({folder / 'a-file'} is not a directory)"
    # /sys refuses new files even to root
    assert train_error(capsys, "--out", "/sys/m.safetensors") == \
        "/sys/m.safetensors: cannot write the file there (cannot write in /sys (Permission denied))"
    assert train_error(capsys, "--out", "m.safetensors") == "m-report: cannot write the folder there (it is a file)"
    assert train_error(capsys, "--out", "n.safetensors", "--checkpoint-dir", "a-file") == \
        "a-file: cannot write the folder there (it is a file)"
    assert train_error(capsys, "--teacher", "none.safetensors", "--out", "n.safetensors") == \
        "none.safetensors: model file not found"
    assert train_error(capsys, "--resume", "none") == "none: no checkpoint to resume (checkpoint.safetensors not found)"
    assert sorted(p.name for p in folder.iterdir()) == ["a-file", "m-report"]


def test_a_nonsense_setting_is_reported_before_missing_data(tmp_path):
    """A real process whose MNIST folder does not exist: the setting's error comes first, in one line."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "MNIST_DATA": str(tmp_path / "no-mnist")}
    proc = subprocess.run([sys.executable, "-m", "mnist_classifier.cli", "train", "--weight-decay", "inf", "--quiet",
                           "--out", str(tmp_path / "m.safetensors")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 1
    assert proc.stderr == "mnist-classifier train: error: weight_decay must be a finite number >= 0, got inf\n"
    assert list(tmp_path.iterdir()) == []


def test_the_api_refuses_nonsense_before_loading_data(tmp_path):
    from mnist_classifier import MNISTClassifier

    clf = MNISTClassifier(data_dir=tmp_path / "no-mnist", device="cpu")
    clf.build_model(hidden_layers=[8])
    with pytest.raises(ConfigError, match="validation_split 1e-06 holds out 0 of 60000 digits"):
        clf.train_model(validation_split=1e-6)
    with pytest.raises(ConfigError, match=f"seed must be an integer from 0 to 2\\*\\*64 - 1, got {2 ** 64}"):
        clf.train_model(seed=2 ** 64)
    assert clf.data is None


# ---------------------------------------------------------------- a loss that stops being a number

class NaNFrom(torch.nn.Module):
    """An MLP whose answers become NaN from its ``n``-th training forward pass on."""

    def __init__(self, n: int):
        super().__init__()
        self.net, self.calls, self.n = build_model("mlp", hidden_layers=[8]), 0, n

    def forward(self, x):
        logits = self.net(x)
        self.calls += self.training
        return logits * float("nan") if self.training and self.calls >= self.n else logits


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(subset, tmp_path):
    from mnist_classifier import checkpoint
    from mnist_classifier.errors import TrainingError
    from mnist_classifier.train import Checkpoints

    images, labels = subset[0][:1000], subset[1][:1000]
    model = NaNFrom(n=4 + 3)  # 4 batches per epoch: the 3rd batch of epoch 2
    with pytest.raises(TrainingError) as error:
        fit(model, images, labels, quiet(epochs=3, batch_size=250, validation_split=0.0),
            Checkpoints(str(tmp_path), settings={}))
    assert str(error.value) == (f"training stopped: the training loss became nan at epoch 2, batch 3 of 4 (a lower "
                                f"learning rate may help); the checkpoint of epoch 1 in {tmp_path} is kept")
    kept = checkpoint.read(tmp_path)["training"]
    assert kept["epoch"] == 1 and len(kept["history"]["train_loss"]) == 1
    assert all(torch.isfinite(w).all() for w in kept["model"].values())


def test_train_stops_on_a_diverging_loss_with_one_line(mnist_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = train_error(capsys, "-a", "mlp", "--hidden-layers", "16", "--optimizer", "sgd", "--lr", "1e4",
                          "--batch-size", "1000", "--validation-split", "0", "--data-dir", mnist_dir,
                          "--out", "m.safetensors", "--no-report")
    assert message.startswith("training stopped: the training loss became nan at epoch 1, batch ")
    assert message.endswith(" of 60 (a lower learning rate may help)")
    assert list(tmp_path.iterdir()) == []

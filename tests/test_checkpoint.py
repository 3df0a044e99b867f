"""Checkpoints: a pickle-free format that round-trips every piece of training state exactly, and runs that,
interrupted after any epoch and resumed, end with the same weights, bit for bit, as runs never interrupted."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mnist_classifier import checkpoint
from mnist_classifier.errors import ConfigError, TrainingError
from mnist_classifier.train import new_run, resume_run, train_run


@pytest.fixture(scope="module")
def small(mnist):
    """1,000 training digits and 200 test digits: enough for every code path, quick to train."""
    return SimpleNamespace(train_images=mnist.train_images[:1000], train_labels=mnist.train_labels[:1000],
                           test_images=mnist.test_images[:200], test_labels=mnist.test_labels[:200],
                           sha256=mnist.sha256)


def assert_same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ---------------------------------------------------------------- the format

def _optimizer_after_a_step(cls, **options):
    model = torch.nn.Linear(4, 3)
    optimizer = cls(model.parameters(), **options)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return optimizer, scheduler


def test_flatten_round_trips_optimizer_schedule_and_generator_states_exactly():
    adam, onecycle = _optimizer_after_a_step(torch.optim.Adam, lr=1e-3)
    sgd, _ = _optimizer_after_a_step(torch.optim.SGD, lr=0.1, momentum=0.9)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(adam)  # its state holds inf
    state = {"adam": adam.state_dict(), "sgd": sgd.state_dict(), "onecycle": onecycle.state_dict(),
             "plateau": plateau.state_dict(), "rng": checkpoint.rng_states(torch.Generator().manual_seed(5)),
             "nan": float("nan"), "nothing": None}
    body, tensors = checkpoint.flatten(state)
    json.loads(json.dumps(body), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))  # strict JSON
    back = checkpoint.unflatten(json.loads(json.dumps(body)), tensors)

    assert set(back["adam"]["state"]) == {0, 1}  # integer keys, as load_state_dict needs them
    assert back["adam"]["param_groups"][0]["betas"] == adam.state_dict()["param_groups"][0]["betas"]
    assert isinstance(back["adam"]["param_groups"][0]["betas"], tuple)
    for name in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(back["adam"]["state"][1][name], adam.state_dict()["state"][1][name])
    assert torch.equal(back["sgd"]["state"][0]["momentum_buffer"], sgd.state_dict()["state"][0]["momentum_buffer"])
    assert back["onecycle"] == onecycle.state_dict() and back["plateau"] == plateau.state_dict()
    assert back["plateau"]["best"] == float("inf") and np.isnan(back["nan"]) and back["nothing"] is None
    numpy_state = np.random.get_state()
    assert back["rng"]["numpy"][0] == numpy_state[0] and back["rng"]["numpy"][1].dtype == np.uint32
    np.testing.assert_array_equal(back["rng"]["numpy"][1], numpy_state[1])
    assert back["rng"]["python"] == random.getstate()
    restored = torch.Generator()
    checkpoint.set_rng_states(back["rng"], restored)
    assert torch.equal(torch.rand(8, generator=restored), torch.rand(8, generator=torch.Generator().manual_seed(5)))


def test_a_checkpoint_is_safetensors_with_a_json_header_and_reads_back(tmp_path):
    state = {"epoch": 3, "weights": {"w": torch.arange(6.0).view(2, 3)}, "best": {1: (0.5, float("-inf"))}}
    path = checkpoint.write(tmp_path / "run", state)
    assert path == tmp_path / "run" / checkpoint.FILE_NAME
    with safe_open(str(path), framework="pt") as fh:  # a plain safetensors file: no pickle anywhere
        header = json.loads(fh.metadata()[checkpoint.METADATA_KEY])
        assert list(fh.keys()) == ["/weights/w"]
    assert header["format_version"] == checkpoint.FORMAT_VERSION
    back = checkpoint.read(tmp_path / "run")
    assert back["epoch"] == 3 and back["best"] == {1: (0.5, float("-inf"))}
    assert torch.equal(back["weights"]["w"], state["weights"]["w"])


def test_a_failed_write_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    checkpoint.write(tmp_path, {"epoch": 1})

    def crash(tensors, filename, metadata):
        open(filename, "wb").write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(OSError):
        checkpoint.write(tmp_path, {"epoch": 2})
    assert checkpoint.read(tmp_path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.FILE_NAME]  # no .part left behind


@pytest.mark.parametrize("content, message", [
    (None, "no checkpoint to resume (checkpoint.safetensors not found)"),
    (b"", "not a readable checkpoint"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{}              ", "not a readable checkpoint"),
])
def test_a_missing_or_corrupt_checkpoint_is_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / checkpoint.FILE_NAME).write_bytes(content)
    with pytest.raises(TrainingError, match="^" + str(tmp_path)) as error:
        checkpoint.read(tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------- interrupted and resumed runs, in one process

class Interrupted(Exception):
    pass


def interrupt_after(monkeypatch, epoch: int) -> None:
    """Let checkpoints be written up to ``epoch``, then stop the run as a kill would."""
    write = checkpoint.write

    def write_then_stop(folder, state):
        path = write(folder, state)
        if state["training"]["epoch"] == epoch:
            raise Interrupted
        return path

    monkeypatch.setattr(checkpoint, "write", write_then_stop)


def stir_every_generator() -> None:
    """What another run in between would do to the global generators a resume must restore."""
    torch.rand(10)
    np.random.rand(10)
    random.random()


SETTINGS = {
    # dropout (the global generator), a plateau schedule, SGD momentum, early stopping that fires after the
    # resumed epoch and restores the best epoch's weights
    "plateau+early-stopping": (1000, dict(architecture="mlp", model_options={"hidden_layers": [32], "dropout": 0.3},
                                          epochs=8, optimizer="sgd", lr=0.1, schedule="plateau",
                                          validation_split=0.2, early_stopping=1)),
    # a per-step one-cycle schedule, the writers augmentation recipe, AdamW with weight decay, batch norm
    "onecycle+writers": (300, dict(architecture="cnn-fast", model_options={"channels": [4, 8, 8]}, epochs=2,
                                   batch_size=100, optimizer="adamw", weight_decay=1e-3, schedule="onecycle",
                                   lr=3e-3, augment=True, augment_recipe="writers", validation_split=0.0)),
}


def _run(data, folder=None, **settings):
    return train_run(new_run(checkpoint_dir=folder, n_train=len(data.train_images), progress=False, **settings), data)


def _first(data, n: int):
    return SimpleNamespace(**{**vars(data), "train_images": data.train_images[:n],
                              "train_labels": data.train_labels[:n]})


@pytest.mark.parametrize("name", SETTINGS)
def test_an_interrupted_run_resumes_to_the_same_weights(small, tmp_path, monkeypatch, name):
    digits, settings = SETTINGS[name]
    data = _first(small, digits)
    reference = _run(data, **settings)
    stop = len(reference.history) - 1  # the last epoch is trained after the resume
    with monkeypatch.context() as patch:
        interrupt_after(patch, stop)
        with pytest.raises(Interrupted):
            _run(data, tmp_path, **settings)
    assert checkpoint.read(tmp_path)["training"]["epoch"] == stop
    stir_every_generator()
    resumed = train_run(resume_run(tmp_path, progress=False), data)
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())
    for curve in ("train_loss", "val_loss", "lr", "best_epoch", "stopped_early"):
        assert getattr(resumed.history, curve) == getattr(reference.history, curve), curve
    if name.startswith("plateau"):
        assert reference.history.stopped_early and reference.history.best_epoch < len(reference.history)


def test_distillation_resumes_exactly_and_refuses_a_changed_teacher(small, tmp_path, monkeypatch):
    from mnist_classifier.persist import save_model
    from mnist_classifier.models import build_model

    teacher_path = tmp_path / "teacher.safetensors"
    save_model(teacher_path, build_model("mlp", hidden_layers=[8]), "mlp", {"hidden_layers": [8], "dropout": 0.2})
    settings = dict(architecture="mlp", model_options={"hidden_layers": [16]}, epochs=2, batch_size=250,
                    validation_split=0.0, teacher=str(teacher_path), distill=2.0, label_smoothing=0.1)
    reference = _run(small, **settings)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)
        with pytest.raises(Interrupted):
            _run(small, tmp_path / "run", **settings)
    stir_every_generator()
    resumed = train_run(resume_run(tmp_path / "run", progress=False), small)
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())

    save_model(teacher_path, build_model("mlp", hidden_layers=[8]), "mlp", {"hidden_layers": [8], "dropout": 0.2})
    with pytest.raises(ConfigError, match="the teacher model file has changed since the run in .* started"):
        resume_run(tmp_path / "run")


def test_a_run_recorded_before_a_recipe_field_existed_resumes_to_the_same_weights(small, tmp_path, monkeypatch):
    digits, settings = SETTINGS["onecycle+writers"]
    data = _first(small, digits)
    reference = _run(data, **settings)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)
        with pytest.raises(Interrupted):
            _run(data, tmp_path, **settings)
    state = checkpoint.read(tmp_path)
    del state["settings"]["augment_recipe_values"]["p_open_four"]  # as the previous release recorded it
    checkpoint.write(tmp_path, state)
    resumed = train_run(resume_run(tmp_path, progress=False), data)
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())

    state = checkpoint.read(tmp_path)
    state["settings"]["augment_recipe_values"]["p_slant"] = 0.0  # a recipe that now means other values
    checkpoint.write(tmp_path, state)
    with pytest.raises(ConfigError, match="the augmentation recipe 'writers' is not what it was"):
        resume_run(tmp_path)


def test_resume_refuses_conflicting_settings_and_other_data(small, tmp_path, monkeypatch):
    settings = dict(architecture="mlp", model_options={"hidden_layers": [16]}, epochs=2, batch_size=500,
                    validation_split=0.0)
    folder = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)
        with pytest.raises(Interrupted):
            _run(small, folder, **settings)
    with pytest.raises(ConfigError) as error:
        resume_run(folder, epochs=5)
    assert str(error.value) == (f"epochs 5 conflicts with the run checkpointed in {folder} (epochs 2): "
                                f"a resumed run keeps its own settings")
    with pytest.raises(ConfigError, match=r"hidden_layers \[32\] conflicts with .* \(hidden_layers \[16\]\)"):
        resume_run(folder, model_options={"hidden_layers": [32]})
    with pytest.raises(ConfigError, match="architecture 'cnn' conflicts"):
        resume_run(folder, architecture="cnn")
    resume_run(folder, epochs=2, batch_size=500, architecture="mlp")  # the same values are no conflict
    with pytest.raises(ConfigError, match="already holds a training checkpoint: resume that run"):
        _run(small, folder, **settings)
    other = SimpleNamespace(**{**vars(small), "train_labels": (small.train_labels + 1) % 10})
    with pytest.raises(TrainingError, match="the checkpoint was written for other training data"):
        train_run(resume_run(folder, progress=False), other)


def test_the_api_checkpoints_and_resumes(mnist, tmp_path, monkeypatch):
    from mnist_classifier import MNISTClassifier

    def classifier():
        clf = MNISTClassifier(device="cpu", seed=2)
        clf.data = SimpleNamespace(**vars(mnist))
        clf.data.train_images, clf.data.train_labels = mnist.train_images[:1000], mnist.train_labels[:1000]
        torch.manual_seed(0)
        clf.build_model(hidden_layers=[16])
        return clf

    options = dict(epochs=3, batch_size=200, validation_split=0.2, early_stopping=0, progress=False)
    reference = classifier()
    reference.train_model(**options)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        with pytest.raises(Interrupted):
            classifier().train_model(checkpoint_dir=tmp_path, **options)
    stir_every_generator()
    resumed = classifier()
    history = resumed.train_model(resume=tmp_path, progress=False)
    assert history.epoch == [1, 2, 3] and history.val_loss == reference.history.val_loss
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())
    with pytest.raises(ConfigError, match="epochs 4 conflicts"):
        classifier().train_model(resume=tmp_path, epochs=4)


# ---------------------------------------------------------------- the command, killed with SIGKILL

def test_train_killed_after_an_epoch_and_resumed_writes_the_same_model_file(tmp_path, mnist_dir, monkeypatch):
    """The real command, killed with SIGKILL as soon as an epoch's checkpoint is on disk, then resumed, ends
    with the very weights of an uninterrupted run (here, in this process) with the same seed."""
    from mnist_classifier import cli

    # Dropout draws from torch's global generator, the split and the data order from the run's own.
    options = ["-a", "mlp", "--hidden-layers", "16", "--epochs", "6", "--batch-size", "1000",
               "--validation-split", "0.5", "--schedule", "onecycle", "--seed", "7",
               "--data-dir", mnist_dir, "--quiet", "--no-report"]
    killed_out, folder = tmp_path / "resumed.safetensors", tmp_path / "checkpoints"
    uninterrupted = tmp_path / "uninterrupted.safetensors"
    # The number of threads changes how float sums round: the processes use as many as this one.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-m", "mnist_classifier.cli", "train", *map(str, options)]
    proc = subprocess.Popen([*command, "--out", str(killed_out), "--checkpoint-dir", str(folder)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    path = checkpoint.checkpoint_path(folder)
    deadline = time.monotonic() + 300
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read()
    proc.stderr.close()
    killed_at = checkpoint.read(folder)["training"]["epoch"]
    assert killed_at < 6 and not killed_out.exists()

    resumed = subprocess.run([*command[:4], "--resume", str(folder), "--quiet", "--no-report", "--data-dir",
                              str(mnist_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "after 6 epochs" in resumed.stdout and str(killed_out) in resumed.stdout
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *map(str, options), "--out", str(uninterrupted)]) == 0
    assert_same_weights(load_file(killed_out), load_file(uninterrupted))

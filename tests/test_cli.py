"""The console command, run as a real subprocess: exit codes, one-line errors, JSON contracts."""

import json
import os
import subprocess
import sys

import pytest

from mnist_classifier.train import training_config


def run_cli(*args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "mnist_classifier.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no traceback
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_every_subcommand_has_help(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "usage: mnist-classifier " + command in proc.stdout


def test_version():
    from mnist_classifier import __version__

    assert run_cli("--version").stdout.strip() == f"mnist-classifier {__version__}"


def test_the_command_exits_with_mains_code_and_its_objects_frozen(tmp_path):
    """The console command is console_main: main's exit code, and the garbage collector's last walk over
    every object skipped (they are frozen when the command is done, as an exit handler sees)."""
    from importlib.metadata import entry_points

    (command,) = [e for e in entry_points(group="console_scripts") if e.name == "mnist-classifier"]
    assert command.value == "mnist_classifier.cli:console_main"
    script = ("import atexit, gc, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 1000)); "
              "from mnist_classifier.cli import console_main; sys.argv = ['mnist-classifier', *sys.argv[1:]]; "
              "console_main()")
    missing = tmp_path / "missing.png"
    proc = subprocess.run([sys.executable, "-c", script, "predict", str(missing)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stdout.strip().endswith("frozen True"), (proc.stdout, proc.stderr)


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "-3"], "epochs must be a positive integer, got -3"),
    (["--validation-split", "1.5"], "validation_split must be in (0, 1)"),
    (["--architecture", "mlp", "--hidden-layers", ""], "hidden_layers must be a non-empty list"),
])
def test_train_rejects_nonsense_before_writing_anything(tmp_path, args, fragment):
    out = tmp_path / "model.safetensors"
    proc = run_cli("train", *args, "--out", out, "--quiet")
    assert_one_line_error(proc, fragment)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_train_unknown_architecture_is_a_usage_error():
    proc = run_cli("train", "--architecture", "resnet")
    assert proc.returncode == 2 and "unknown architecture 'resnet' (choose from mlp, mlp-bn, cnn" in proc.stderr
    typo = run_cli("train", "-a", "cnnfast")
    assert typo.returncode == 2 and typo.stderr.strip().endswith("did you mean 'cnn-fast'?")


def test_missing_data_folder(tmp_path):
    proc = run_cli("train", "--data-dir", tmp_path / "none", "--out", tmp_path / "m.safetensors", "--quiet")
    assert_one_line_error(proc, "MNIST data folder does not exist")


def test_evaluate_shipped_model_json(pretrained):
    proc = run_cli("evaluate", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 10000
    assert result["accuracy"] == pytest.approx(pretrained.metadata["metrics"]["accuracy"], abs=1e-9)
    assert 0 < result["loss"] < 0.1
    assert set(result["per_class"]) == {str(d) for d in range(10)}
    assert {"true", "predicted", "count"} == set(result["most_confused"][0])


def test_evaluate_human_output():
    proc = run_cli("evaluate")
    assert proc.returncode == 0 and "accuracy" in proc.stdout and "most confused:" in proc.stdout


@pytest.mark.parametrize("content, fragment", [
    (b"", "not a readable safetensors model file"),
    (b"{not a model}", "not a readable safetensors model file"),
])
def test_evaluate_bad_model_file(tmp_path, content, fragment):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    assert_one_line_error(run_cli("evaluate", path, "--json"), str(path), fragment)


def test_evaluate_missing_model(tmp_path):
    assert_one_line_error(run_cli("evaluate", tmp_path / "nope.safetensors"), "model file not found")


@pytest.mark.slow
def test_train_then_evaluate_round_trip(tmp_path):
    """The main job end to end on the real MNIST: one epoch of cnn-fast, then evaluate the saved file."""
    out = tmp_path / "fast.safetensors"
    proc = run_cli("train", "--architecture", "cnn-fast", "--out", out, "--json", "--quiet", "--no-report")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["accuracy"] >= 0.97 and summary["epochs"] == training_config("cnn-fast").epochs
    assert summary["model_path"] == str(out) and summary["train_seconds"] > 0
    evaluated = json.loads(run_cli("evaluate", out, "--json").stdout)
    assert evaluated["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-9)
    assert evaluated["loss"] == pytest.approx(summary["loss"], rel=1e-6)


def test_the_cli_offers_the_librarys_choices_and_defaults():
    """Choices and defaults are read from the library, never typed again in the CLI."""
    from mnist_classifier.augment import RECIPES
    from mnist_classifier.cli import build_parser
    from mnist_classifier.engines import default_engine
    from mnist_classifier.predict import DEFAULT_THRESHOLD, DEFAULT_TOP_K, IMAGE_EXTENSIONS
    from mnist_classifier.server import limits
    from mnist_classifier.train import OPTIMIZERS, SCHEDULES

    def option(command, flag):
        sub = build_parser(command)._subparsers._group_actions[0].choices[command]
        return next(a for a in sub._actions if flag in a.option_strings)

    assert list(option("train", "--optimizer").choices) == list(OPTIMIZERS)
    assert list(option("train", "--schedule").choices) == list(SCHEDULES)
    assert list(option("train", "--augment-recipe").choices) == list(RECIPES)
    assert option("predict", "--top-k").default == DEFAULT_TOP_K
    assert f"(default: {DEFAULT_THRESHOLD})" in option("predict", "--threshold").help
    assert ",".join(IMAGE_EXTENSIONS) in option("predict", "--ext").help
    for command in ("predict", "evaluate", "serve"):
        assert option(command, "--engine").default == default_engine(command)
    assert (option("serve", "--host").default, option("serve", "--port").default) == \
        (limits.DEFAULT_HOST, limits.DEFAULT_PORT)


def test_every_model_option_of_the_registry_is_a_train_flag():
    """The flags come from the registry: each architecture's options, with their rule and example in the help."""
    from mnist_classifier.cli import _given_model_options, build_parser
    from mnist_classifier.models import REGISTRY

    parser = build_parser("train")
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train._actions}
    declared = {name for arch in REGISTRY.values() for name in arch.options if name != "members"}
    assert declared <= set(flags)
    assert "a list of 3 whole numbers from 1 to 512, e.g. 16,32,64" in flags["channels"].help
    args = parser.parse_args(["train", "-a", "cnn", "--channels", "8,16,24", "--convs", "2,1,1", "--strided-stem",
                              "--dropout", "0.3"])
    assert _given_model_options(args) == {"hidden_layers": None, "dropout": 0.3, "dropouts": None,
                                          "channels": [8, 16, 24], "convs": [2, 1, 1], "strided_stem": True}
    args = parser.parse_args(["train", "-a", "mlp-bn", "--dropouts", "0.5,0.25"])
    assert _given_model_options(args)["dropouts"] == [0.5, 0.25]

"""The README cannot drift from the code: every `mnist-classifier` command in its shell blocks parses with
the real CLI (subcommands, options, choices) and those that read images run as written; its shell lines use
the venv as its set-up says, and its installs resolve from the checkout; the values it gives for rows with
no digit or an error are what the CLI writes; its Python blocks import what they name, call MNISTClassifier
methods that exist, and run as written."""

from __future__ import annotations

import ast
import csv
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_classifier import MNISTClassifier
from mnist_classifier.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.S | re.M)


def shell_lines() -> list[str]:
    """Every line of the shell blocks, in README order, continuation lines joined."""
    return [line for block in blocks("bash") for line in block.replace("\\\n", " ").splitlines()]


def line_commands(line: str) -> list[list[str]]:
    """The commands of one shell line as words: `a && b` and `a; b` split, comments and VAR=value dropped."""
    found = []
    for part in re.split(r"&&|;", line.split("  #")[0]):
        words = shlex.split(part, comments=True)
        while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value before a command
            words = words[1:]
        if words:
            found.append(words)
    return found


def shell_commands() -> list[list[str]]:
    return [words for line in shell_lines() for words in line_commands(line)]


def commands() -> list[str]:
    """Each `mnist-classifier ...` command of the shell blocks (the words after the program's name)."""
    return [shlex.join(words[1:]) for words in shell_commands() if words[0].endswith("mnist-classifier")]


def test_the_readme_has_commands_and_python_to_check():
    assert len(commands()) >= 30 and len(blocks("python")) >= 3


@pytest.mark.parametrize("command", commands())
def test_every_readme_command_parses(command):
    words = shlex.split(command)
    try:
        build_parser(words[0]).parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"`mnist-classifier {command}` does not parse (exit {exc.code})")


@pytest.mark.parametrize("block", blocks("python"), ids=lambda b: b.strip().splitlines()[0][:40])
def test_every_readme_python_block_names_what_exists(block):
    tree = ast.parse(block)  # a syntax error fails here
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name) and node.func.value.id == "clf":
            assert callable(getattr(MNISTClassifier, node.func.attr, None)), f"MNISTClassifier.{node.func.attr}"


# ---------------------------------------------------------------- the README's commands, run as written

# The commands a newcomer runs on images. Training (minutes: test_train covers it), serving (the server
# tests start it) and Ray (test_ray) are left to their own tests.
RUNS_HERE = {"evaluate", "predict", "finetune", "export", "report"}
ASSETS = README.parent / "assets" / "sample_digits"
CLI = Path(sys.executable).with_name("mnist-classifier")


def runnable_commands() -> list[list[str]]:
    seen, runs = set(), []
    for command in commands():
        words = shlex.split(command)
        if words[0] in RUNS_HERE and "ray" not in words and command not in seen:
            seen.add(command)
            runs.append(words)
    return runs


def _readme_folder(folder: Path, mnist) -> None:
    """The files the README's commands name: photos, scans, numbers, and folders of labelled digits."""
    from PIL import Image

    shutil.copy(ASSETS / "photo_8.jpg", folder / "photo.jpg")
    shutil.copytree(ASSETS, folder / "scans", ignore=shutil.ignore_patterns("*.json"))
    (folder / "photos").mkdir()
    shutil.copy(ASSETS / "photo_8.jpg", folder / "photos" / "kitchen.JPG")
    shutil.copy(ASSETS / "paper_5_large.jpg", folder / "photos" / "desk.JPG")
    shutil.copy(ASSETS / "paper_7.png", folder / "a.png")
    shutil.copy(ASSETS / "paper_2_small_corner.jpg", folder / "b.jpg")
    shutil.copy(ASSETS / "number_2026.jpg", folder / "2026.jpg")
    Image.open(ASSETS / "number_2026.jpg").save(folder / "cheque.png")
    for name, start in (("my_digits", 0), ("other_digits", 5000)):
        for digit in range(10):
            (folder / name / str(digit)).mkdir(parents=True)
            picks = np.flatnonzero(mnist.test_labels[start:] == digit)[:12] + start
            for i in picks:
                Image.fromarray(255 - mnist.test_images[i]).save(folder / name / str(digit) / f"{i}.png")


@pytest.mark.slow
def test_the_readme_commands_run_as_written(tmp_path, mnist, mnist_dir):
    """Each command of the README that reads images runs, in README order, as a user types it (a fresh
    process in a folder holding the files it names) and does what the README says it does."""
    _readme_folder(tmp_path, mnist)
    cli = Path(sys.executable).with_name("mnist-classifier")
    env = {**os.environ, "MNIST_DATA": str(mnist_dir)}
    outputs = {}
    for words in runnable_commands():
        done = subprocess.run([str(cli), *words], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"`mnist-classifier {shlex.join(words)}` failed: {done.stderr[-2000:]}"
        outputs[shlex.join(words)] = done.stdout
    assert len(outputs) >= 15
    assert "2026" in outputs["predict --number 2026.jpg"]
    assert json.loads(outputs["evaluate --json"])["accuracy"] >= 0.996
    own = json.loads(outputs["evaluate --images my_digits/ --json"])
    assert own["n"] == 120 and own["accuracy"] >= 0.9
    assert (tmp_path / "mine.safetensors").is_file() and (tmp_path / "digits.onnx").is_file()
    assert (tmp_path / "report" / "index.html").is_file()
    with open(tmp_path / "digits.csv", newline="") as table:
        assert len(list(csv.DictReader(table))) == len(list(ASSETS.glob("*.[pj][np]g")))
    rows = json.loads(outputs["predict 'photos/*.JPG' --json"])
    assert sorted((Path(row["path"]).name, row["digit"]) for row in rows) == [("desk.JPG", 5), ("kitchen.JPG", 8)]


def run_cli(words: list[str], folder: Path, mnist_dir: Path) -> subprocess.CompletedProcess:
    """`mnist-classifier WORDS` as a user types it in `folder`, in the README's shell (MNIST_DATA set)."""
    env = {**os.environ, "MNIST_DATA": str(mnist_dir)}
    return subprocess.run([str(CLI), *words], cwd=folder, env=env, capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- rows with no digit, and error rows


def readme_empty_rows() -> dict[str, tuple]:
    """The README's table of what a "no digit" row and an error row hold: field -> (no digit, error).
    A cell's value is its last `literal` (JSON), ten times over when the cell says "ten"."""
    text = README.read_text()
    table = re.search(r'^\| field \| a "no digit" row \| an error row \|\n\|[-|]+\|\n((?:\|.*\n)+)', text, re.M)[1]

    def value(cell: str):
        literal = json.loads(re.findall(r"`([^`]+)`", cell)[-1])
        return [literal] * 10 if cell.startswith("ten ") else literal

    values = {}
    for line in table.splitlines():
        names, no_digit, error = (cell.strip() for cell in line.strip("|").split("|"))
        for name in re.findall(r"`(\w+)`", names):
            values[name] = (value(no_digit), value(error))
    return values


def test_the_readme_says_what_rows_with_no_digit_or_an_error_hold(tmp_path, mnist_dir):
    """A blank page and a file that is no image, through `predict --json` and `predict --number --json`:
    every field but `path` is what the README's table says, and only the error sets the exit code."""
    from PIL import Image

    Image.new("L", (200, 120), 255).save(tmp_path / "blank.png")  # blank paper, 200 wide and 120 high
    (tmp_path / "bad.png").write_text("this is not an image\n")
    table = readme_empty_rows()
    assert run_cli(["predict", "blank.png", "--json"], tmp_path, mnist_dir).returncode == 0
    rows = []
    for number in ([], ["--number"]):
        done = run_cli(["predict", *number, "blank.png", "bad.png", "--json"], tmp_path, mnist_dir)
        assert done.returncode == 1, done.stderr
        rows += json.loads(done.stdout)
    for row in rows:
        which = 1 if row["path"] == "bad.png" else 0
        assert set(row) - {"path"} <= set(table), "a field of these rows that the README's table leaves out"
        assert {name: row[name] for name in row if name != "path"} == \
            {name: table[name][which] for name in row if name != "path"}, row["path"]
    assert set(table) == {name for row in rows for name in row} - {"path"}


# ---------------------------------------------------------------- the venv, as the set-up uses it

def is_package_install(words: list[str]) -> bool:
    return words[0].endswith("pip") and words[1:2] == ["install"] and \
        any(w.startswith(".[") or w.startswith("mnist-classifier") for w in words[2:])


ACTIVATE = ". .venv/bin/activate"


def test_the_readme_uses_the_venv_as_its_set_up_says():
    """Before the line that activates the venv (and sets MNIST_DATA "for every other command"), each tool
    runs from .venv/bin/ (but `python3 -m venv`, which makes it); after it, no line names .venv/bin/ or sets
    MNIST_DATA again."""
    lines = shell_lines()
    at = [i for i, line in enumerate(lines) if line.startswith(ACTIVATE)]
    assert len(at) == 1 and line_commands(lines[at[0]])[1][:2] == ["export", "MNIST_DATA=../shared/mnist"]
    before = [words for line in lines[:at[0]] for words in line_commands(line)]
    assert len(before) >= 4
    for words in before:
        assert words[0].startswith(".venv/bin/") or words[:3] == ["python3", "-m", "venv"], shlex.join(words)
    for line in lines[at[0] + 1:]:
        assert ".venv/bin/" not in line and "MNIST_DATA" not in line, line


def package_installs() -> list[list[str]]:
    return [words for words in shell_commands() if is_package_install(words)]


def test_every_readme_install_mirrors_the_set_up():
    """Each later `pip install` of the package installs it from the checkout with the set-up's constraints,
    naming extras the package has."""
    from importlib.metadata import metadata

    setup, *later = package_installs()
    assert setup[:-1] == [".venv/bin/pip", "install", "-c", "constraints.txt", "-e"]
    extras = set(metadata("mnist-classifier").get_all("Provides-Extra"))
    assert later
    for words in [setup, *later]:
        assert words[1:-1] == setup[1:-1], shlex.join(words)
        named = re.fullmatch(r"\.\[([\w,-]+)\]", words[-1])
        assert named and set(named[1].split(",")) <= extras, shlex.join(words)


@pytest.mark.slow
def test_every_readme_install_resolves_from_the_checkout():
    """Each later `pip install` line, dry-run offline in the checkout: it would install this checkout
    (editable) and nothing else, everything it adds being in the venv the set-up made."""
    for words in package_installs()[1:]:
        call = [sys.executable, "-m", "pip", *words[1:], "--dry-run", "--no-index", "--no-build-isolation",
                "--quiet", "--report", "-"]
        done = subprocess.run(call, cwd=README.parent, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        install = json.loads(done.stdout)["install"]
        assert [(i["metadata"]["name"], i["download_info"]) for i in install] == \
            [("mnist-classifier", {"url": README.parent.as_uri(), "dir_info": {"editable": True}})], shlex.join(words)


# ---------------------------------------------------------------- the README's Python, run as written

# Run as one session, as a reader types the blocks in turn: each statement executed, the value of each bare
# expression (what a REPL shows) recorded by its source line.
SESSION = """
import ast, json, sys
source = sys.stdin.read()
scope, shown = {}, {}
for statement in ast.parse(source).body:
    code = ast.get_source_segment(source, statement)
    if isinstance(statement, ast.Expr):
        shown[code] = repr(eval(compile(ast.Expression(statement.value), "<readme>", "eval"), scope))
    else:
        exec(compile(ast.Module([statement], []), "<readme>", "exec"), scope)
names = ("accuracy", "digit", "confidence")
print(json.dumps({"shown": shown, **{name: scope[name] for name in names}}, default=str))
"""
FEWER_EPOCHS = ("clf.train_model(epochs=15,", "clf.train_model(epochs=1,")  # minutes -> seconds; else as written


@pytest.mark.slow
def test_the_readme_python_runs_as_written(tmp_path, mnist, mnist_dir):
    """The README's Python blocks, in order, in one fresh process in a folder holding the files they name:
    only the training's epoch count is lowered. What they return is what the README's comments say."""
    _readme_folder(tmp_path, mnist)
    shutil.copytree(ASSETS, tmp_path / "assets" / "sample_digits")
    script = "\n".join(blocks("python"))
    assert FEWER_EPOCHS[0] in script
    script = script.replace(*FEWER_EPOCHS)
    env = {**os.environ, "MNIST_DATA": str(mnist_dir), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", SESSION], input=script, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    session = json.loads(done.stdout.strip().splitlines()[-1])
    shown = session["shown"]
    assert session["accuracy"] > 0.97 and session["digit"] == 7 and session["confidence"] > 0.5
    assert (tmp_path / "digits.safetensors").is_file() and (tmp_path / "mine.safetensors").is_file()
    assert (tmp_path / "assets" / "training_history.png").is_file()
    assert shown['predictor.predict("photo.jpg")'].startswith("Prediction(path='photo.jpg', digit=8, confidence=0.9")
    assert shown['predictor.read_number("cheque.png").number'] == "'2026'"
    scored = ast.literal_eval(shown['clf.evaluate_images("my_digits")'])
    assert scored["n"] == 120 and scored["accuracy"] >= 0.9
    tuned = ast.literal_eval(shown['clf.finetune("my_digits", out="mine.safetensors", epochs=5)'])
    assert tuned["model_path"].endswith("mine.safetensors")

"""The README runs as written, so it cannot drift from the code: every `mnist-classifier` command in its shell
blocks parses with the real CLI (subcommands, options, choices) and runs, in a temporary folder holding the
files it names, with only what costs minutes shrunk (epochs, training reports), but for the `--engine ray`
lines, which tests/test_ray.py runs; the servers it starts answer its curl calls; its installs resolve from
the checkout; its shell lines use the venv as its set-up says; the values it gives for rows with no digit
or an error are what the CLI writes; its Python blocks import what they name, call MNISTClassifier methods
that exist, and run as written."""

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
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mnist_classifier import MNISTClassifier
from mnist_classifier.cli import build_parser
from servers import free_port, wait_until_ready

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

# Which test below runs each README command, by its subcommand. The `--engine ray` lines are left to
# tests/test_ray.py, which runs the pipeline and `predict --engine ray` itself on one local Ray: a fresh
# local Ray for each README line costs about 20 s on 2 cores (over 40 s for the two local lines), and the
# s3:// line with `--ray-address auto` needs a cluster and a bucket.
RUNS_HERE = {"evaluate", "predict", "finetune", "export", "report"}
KINDS = {**dict.fromkeys(RUNS_HERE, "images"), "train": "training", "combine": "training", "serve": "serve"}
ASSETS = README.parent / "assets" / "sample_digits"
CLI = Path(sys.executable).with_name("mnist-classifier")


def kind(words: list[str]) -> str | None:
    """The test that runs a README command (its words after `mnist-classifier`); None: no test does."""
    return "ray" if "ray" in words else KINDS.get(words[0])


def commands_of(what: str) -> list[list[str]]:
    """The README commands of one kind, in README order, each once."""
    seen, runs = set(), []
    for command in commands():
        words = shlex.split(command)
        if kind(words) == what and command not in seen:
            seen.add(command)
            runs.append(words)
    return runs


def runnable_commands() -> list[list[str]]:
    return commands_of("images")


def run_cli(words: list[str], folder: Path, mnist_dir: Path) -> subprocess.CompletedProcess:
    """`mnist-classifier WORDS` as a user types it in `folder`, in the README's shell (MNIST_DATA set)."""
    env = {**os.environ, "MNIST_DATA": str(mnist_dir)}
    return subprocess.run([str(CLI), *words], cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def test_every_readme_command_is_run_by_a_test():
    """A command of a new kind fails here until a test runs it."""
    assert [command for command in commands() if kind(shlex.split(command)) is None] == []


# The other shell lines and where each is checked: curl (the serve test), `pip install` of the package
# (test_every_readme_install_resolves_from_the_checkout, and the venv tests), and these.
OTHER_SHELL = {
    "python3 -m venv .venv": "the venv these tests run in; test_the_readme_uses_the_venv_as_its_set_up_says",
    ".venv/bin/python -m pytest": "this test run",
    ". .venv/bin/activate": "the shell the commands here run in (this venv's CLI, MNIST_DATA set)",
    "export MNIST_DATA=../shared/mnist": "conftest.py makes it absolute; every command here runs with it",
    "pip install jupyterlab": "a third-party install; tests/test_notebooks.py runs both notebooks",
    "jupyter lab notebooks/": "an interactive server; tests/test_notebooks.py runs both notebooks",
}


def test_every_readme_shell_line_is_checked_somewhere():
    unchecked = [shlex.join(words) for words in shell_commands()
                 if not (words[0].endswith("mnist-classifier") or words[0] == "curl" or is_package_install(words))
                 and shlex.join(words) not in OTHER_SHELL]
    assert unchecked == []


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
    outputs = {}
    for words in runnable_commands():
        done = run_cli(words, tmp_path, mnist_dir)
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


# ---------------------------------------------------------------- training, checkpoints, the shipped model's recipe


def as_trained_here(words: list[str]) -> list[str]:
    """A README training command as the test runs it. Two changes, for time alone (the presets' 2 to 15
    epochs are minutes per line on 2 cores, a cnn epoch some 10-20 s): every `train` but a resume runs one
    epoch (`--epochs 1`, replacing a count or added; a resumed run keeps the count it was started with), and
    every `train` but the bare one (the set-up's main job, whose report is checked) adds `--no-report` (some
    6 s each; `report` is run by the images test). Architectures, recipes and paths are as written (cnn-fast
    for the cnn lines would change what they do: its preset does not augment, so `--augment-recipe writers`
    would train without it), and `combine --out src/mnist_classifier/pretrained/...` runs in the temporary
    folder, so it writes that path there, never the package's own file."""
    words = list(words)
    if words[0] != "train":
        return words
    if words != ["train"] and "--no-report" not in words:
        words.append("--no-report")
    if "--resume" in words:
        return words
    if "--epochs" in words:
        words[words.index("--epochs") + 1] = "1"
        return words
    return words + ["--epochs", "1"]


TRAINED = re.compile(r"^(?P<architecture>\S+): test accuracy (?P<accuracy>[\d.]+)%, loss \S+ after (?P<epochs>\d+) "
                     r"epochs in \S+; saved (?P<path>\S+)$", re.M)
COMBINED = re.compile(r"^ensemble of 2: test accuracy (?P<accuracy>[\d.]+)%, loss \S+; saved (?P<path>\S+)$", re.M)


def _tensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(path)


@pytest.mark.slow
def test_the_readme_training_commands_run_as_written(tmp_path, mnist_dir, pretrained_path):
    """The README's `train` and `combine` lines, in README order, each once, as fresh processes in an empty
    folder: the set-up's and the tour's trainings, a checkpointed run and its resume, and the recipe of the
    shipped model, whose combined file `evaluate` then scores as combine did."""
    shipped = pretrained_path.read_bytes()
    outputs, progress, checkpointed = {}, {}, None
    for words in commands_of("training"):
        run = as_trained_here(words)
        done = run_cli(run, tmp_path, mnist_dir)
        assert done.returncode == 0, f"`mnist-classifier {shlex.join(run)}` failed: {done.stderr[-2000:]}"
        outputs[shlex.join(words)], progress[shlex.join(words)] = done.stdout, done.stderr
        if "--checkpoint-dir" in words:  # the model file as the checkpointed run left it, before the resume
            checkpointed = _tensors(tmp_path / TRAINED.search(done.stdout)["path"])
    assert len(outputs) >= 8

    trained = {command: TRAINED.search(out) for command, out in outputs.items()
               if command.split()[0] == "train" and "--json" not in command}
    assert all(trained.values()) and all(m["epochs"] == "1" for m in trained.values())
    # after one epoch the cnns already read 99% of MNIST's test digits, the seed's MLP about 96%
    cnn = trained["train"]
    assert (cnn["architecture"], cnn["path"]) == ("cnn", "models/cnn.safetensors") and float(cnn["accuracy"]) > 97
    assert (tmp_path / "models" / "cnn-report" / "index.html").is_file()  # the main job saves its report too
    fast = trained["train -a cnn-fast"]
    assert fast["architecture"] == "cnn-fast" and float(fast["accuracy"]) > 97
    mlp = json.loads(outputs["train -a mlp --json"])
    assert mlp["architecture"] == "mlp" and mlp["epochs"] == 1 and mlp["accuracy"] > 0.9

    # --checkpoint-dir writes the checkpoint; --resume DIR continues from it (here: no epoch is left to run)
    # and ends with the same model file, bit for bit
    assert (tmp_path / "runs" / "cnn" / "checkpoint.safetensors").is_file()
    started, resume = "train --architecture cnn --checkpoint-dir runs/cnn", "train --resume runs/cnn"
    assert "epoch 1/1" in progress[started] and "epoch 1/1" not in progress[resume]
    first, resumed = trained[started], trained[resume]
    assert (tmp_path / resumed["path"]).resolve() == (tmp_path / first["path"]).resolve()  # it names it absolute
    assert resumed["accuracy"] == first["accuracy"]
    after = _tensors(tmp_path / resumed["path"])
    assert after.keys() == checkpointed.keys() and all(np.array_equal(after[k], checkpointed[k]) for k in after)

    # combine: the ensemble of the two recipe members, written inside the temporary folder only
    combined = COMBINED.search(outputs["combine models/cnn.safetensors models/cnn-writers.safetensors --out "
                                       "src/mnist_classifier/pretrained/digits.safetensors"])
    assert combined and combined["path"] == "src/mnist_classifier/pretrained/digits.safetensors"
    assert pretrained_path.read_bytes() == shipped
    from mnist_classifier.persist import read_metadata

    members = read_metadata(tmp_path / combined["path"])["member_models"]
    assert [m["training"]["augment_recipe"] for m in members] == ["affine", "writers"]
    scored = run_cli(["evaluate", combined["path"], "--json"], tmp_path, mnist_dir)
    assert scored.returncode == 0, scored.stderr[-2000:]
    evaluation = json.loads(scored.stdout)
    assert evaluation["architecture"] == "ensemble" and f"{evaluation['accuracy']:.2%}" == combined["accuracy"] + "%"
    assert evaluation["accuracy"] > 0.97


# ---------------------------------------------------------------- serve, and the README's curl calls against it

README_URL = "http://127.0.0.1:8000"


def as_served_here(words: list[str], port: int) -> list[str]:
    """A README `serve` line on a free port of 127.0.0.1: only the host and port change (`--host 0.0.0.0`
    would listen on every interface of the machine running the tests)."""
    place = ("--host", "--port")
    kept = [word for i, word in enumerate(words) if word not in place and words[i - 1] not in place]
    return kept + ["--host", "127.0.0.1", "--port", str(port)]


def readme_fields(after: str) -> tuple[list[str], dict[str, list[str]]]:
    """The fields the README lists in the sentence starting `after` ("A `--json` row holds ..."), and those it
    lists in parentheses there ("`digits` (each with `digit`, ...)") by the field they follow."""
    sentence = re.search(re.escape(after) + r"(.*?)\.\s", " ".join(README.read_text().split()))[1]
    inner = {m[1]: re.findall(r"`(\w+)`", m[2]) for m in re.finditer(r"`(\w+)` \(([^)]*)\)", sentence)}
    return re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", sentence)), inner


def wait_until_answered(url, process, log_path, host=None, seconds=120):
    """servers.wait_until_ready, sending `host` as the Host header when given."""
    if host is None:
        return wait_until_ready(url, process, log_path, seconds)
    request = urllib.request.Request(f"{url}/readyz", headers={"Host": host})
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, f"the server exited early:\n{log_path.read_text()}"
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"the server was not ready in {seconds} s:\n{log_path.read_text()}")


@pytest.mark.slow
def test_the_readme_servers_answer_the_readme_curl_calls(tmp_path, mnist, pretrained_path):
    """Each README `serve` line starts (on a free port), answers the README's curl calls (only host:port
    rewritten) with JSON rows holding the fields the README lists, and stops."""
    assert shutil.which("curl"), "curl is needed to run the README's curl calls (apt-get install curl)"
    _readme_folder(tmp_path, mnist)
    shutil.copytree(ASSETS, tmp_path / "assets" / "sample_digits")
    shutil.copy(pretrained_path.with_suffix(".onnx"), tmp_path / "digits.onnx")  # what `export --out` writes
    row_fields, _ = readme_fields("A `--json` row holds")
    number_fields, inner = readme_fields("A `--number` row holds")
    curls = [words for words in shell_commands() if words[0] == "curl"]
    assert len(curls) == 3 and all(words[-1].startswith(README_URL) for words in curls)
    served = set()
    for words in commands_of("serve"):
        if shlex.join(as_served_here(words, 0)) in served:
            continue  # `serve` and `serve --port 8000` are one server once the port is a free one
        served.add(shlex.join(as_served_here(words, 0)))
        port = free_port()
        run = as_served_here(words, port)
        url = f"http://127.0.0.1:{port}"
        host = words[words.index("--allowed-host") + 1] if "--allowed-host" in words else None
        log = tmp_path / f"serve-{port}.log"
        with open(log, "w") as sink:
            server = subprocess.Popen([str(CLI), *run], cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_until_answered(url, server, log, host)
            # an --allowed-host line answers that name only (the curl calls send it): 400 for the address
            if host:
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(f"{url}/readyz", timeout=10)
                assert refused.value.code == 400
            headers = ["-H", f"Host: {host}"] if host else []
            answers = {}
            for curl in curls:
                call = [word.replace(README_URL, url) for word in curl] + headers
                done = subprocess.run(call, cwd=tmp_path, capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
                answers[curl[-1].removeprefix(README_URL)] = json.loads(done.stdout)
            one = answers["/v1/predict"]
            assert list(one) == row_fields + ["image"] and one["digit"] == 7
            assert np.array(one["image"]).shape == (28, 28)
            batch = answers["/v1/predict/batch"]
            assert [list(row) for row in batch] == [row_fields] * 2
            assert [(row["path"], row["digit"]) for row in batch] == [("a.png", 7), ("b.jpg", 2)]
            number = answers["/v1/predict/number"]
            assert list(number) == number_fields and number["number"] == "2026"
            assert [list(d) for d in number["digits"]] == [inner["digits"]] * 4
            if "--engine" in words:
                model = urllib.request.Request(f"{url}/v1/model")
                with urllib.request.urlopen(model, timeout=10) as response:
                    assert json.load(response)["server"]["engine"] == words[words.index("--engine") + 1]
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        assert server.returncode in (0, -15), log.read_text()[-2000:]
    assert len(served) == 3


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

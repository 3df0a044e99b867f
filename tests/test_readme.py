"""The README cannot drift from the code's names: every `mnist-classifier` command in its shell blocks parses
with the real CLI (subcommands, options, choices), and every Python block compiles, imports what it
names, and calls MNISTClassifier methods that exist."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

from mnist_classifier import MNISTClassifier
from mnist_classifier.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.S | re.M)


def commands() -> list[str]:
    """Each `mnist-classifier ...` command of the shell blocks, continuation lines joined, comments dropped."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;", line.split("  #")[0]):
                words = shlex.split(part, comments=True)
                while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value before a command
                    words = words[1:]
                if words and words[0].endswith("mnist-classifier"):
                    found.append(shlex.join(words[1:]))
    return found


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

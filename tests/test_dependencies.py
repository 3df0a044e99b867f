"""Every third-party module the package imports is declared in pyproject.toml, not only pulled in by another."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mnist_classifier"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _imported_modules() -> dict[str, set[str]]:
    """Top-level name of each absolute import (at any depth of the code) -> the files importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], set()).add(path.relative_to(ROOT).as_posix())
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_normalized(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip()).group()) for r in requirements}


def test_every_third_party_import_is_a_declared_dependency():
    distributions = importlib.metadata.packages_distributions()  # import name -> the distributions holding it
    declared = _declared()
    missing = {}
    for module, files in _imported_modules().items():
        if module in sys.stdlib_module_names or module == "mnist_classifier":
            continue
        # A module that is not installed here is looked for under its own name.
        candidates = {_normalized(d) for d in distributions.get(module, [module])}
        if not candidates & declared:
            missing[module] = (sorted(candidates), sorted(files))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_imports_inside_functions_are_seen():
    # tqdm is imported only where a progress bar is drawn, inside a function: the walk must reach it.
    assert "src/mnist_classifier/predict.py" in _imported_modules()["tqdm"]

"""Both notebooks run end to end, in a kernel on this interpreter, in their quick setting."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["training_demo.ipynb", "analysis_demo.ipynb"]


def kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel that is exactly this test's Python (the project's venv), whatever kernels the machine has."""
    spec = tmp_path / "kernels" / "mnist-classifier"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mnist-classifier (test)", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name="mnist-classifier", kernel_spec_manager=specs)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "parameters" in code[0].metadata.get("tags", [])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("MNIST_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MNIST_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MNIST_DATA", str(mnist_dir))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, km=kernel_manager(tmp_path), timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert f"python {sys.executable}\n" in text  # the kernel ran on this interpreter
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 5
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert len(pngs) >= 5, pngs
    if name == "training_demo.ipynb":
        assert "epoch 2/2" in text and "test accuracy" in text
        assert (tmp_path / "out" / "cnn-fast-demo.safetensors").is_file()
        assert (tmp_path / "out" / "report" / "index.html").is_file()
    else:
        assert "top-2 accuracy" in text and "most confused pairs" in text

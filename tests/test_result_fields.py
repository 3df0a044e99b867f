"""One contract for a result row, wherever it comes from: the CLI's --json and --csv, the REST API and
Python each give rows that validate against server/schemas.py, with every documented field present and
none undocumented; the README names the same fields."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_classifier import MNISTClassifier
from mnist_classifier.cli import main
from mnist_classifier.formats import CSV_FIELDS, NUMBER_CSV_FIELDS
from mnist_classifier.predict import Predictor
from mnist_classifier.server import create_app, schemas

README = Path(__file__).resolve().parents[1] / "README.md"
ONLY_ON_REQUEST = {"image"}  # the 28x28 grid: in REST answers that ask for it


def fields(model) -> set[str]:
    return set(model.model_fields)


def check_digit_row(row: dict, with_image: bool = False) -> None:
    schemas.Prediction.model_validate(row)
    for top in row["top_k"]:
        schemas.TopK.model_validate(top)
    assert set(row) == fields(schemas.Prediction) - (set() if with_image else ONLY_ON_REQUEST), sorted(row)


def check_number_row(row: dict) -> None:
    schemas.NumberResult.model_validate(row)
    assert set(row) == fields(schemas.NumberResult), sorted(row)
    for digit in row["digits"]:
        assert set(digit) == fields(schemas.DigitRead)


@pytest.fixture(scope="module")
def files(tmp_path_factory, mnist):
    """A scanned digit, a blank page, a file that is not an image, and a written number."""
    folder = tmp_path_factory.mktemp("rows")
    Image.fromarray(255 - mnist.test_images[0]).resize((84, 84)).save(folder / "seven.png")
    Image.new("L", (64, 64), 255).save(folder / "blank.png")
    (folder / "broken.png").write_bytes(b"not an image")
    number = np.concatenate([255 - mnist.test_images[i] for i in (1, 2, 3)], axis=1)
    Image.fromarray(number).resize((252, 84)).save(folder / "number.png")
    return folder


def test_cli_json_rows_are_the_schemas(files, capsys):
    main(["predict", "--json", *(str(files / n) for n in ("seven.png", "blank.png", "broken.png"))])
    rows = json.loads(capsys.readouterr().out)
    assert [r["digit"] is None for r in rows] == [False, True, True] and rows[2]["error"] and rows[1]["reason"]
    for row in rows:
        check_digit_row(row)
    assert main(["predict", "--number", "--json", str(files / "number.png"), str(files / "broken.png")]) == 1
    numbers = json.loads(capsys.readouterr().out)
    assert numbers[0]["number"] == "210" and numbers[1]["error"]
    for row in numbers:
        check_number_row(row)


def test_rest_answers_are_the_schemas(pretrained, files):
    with TestClient(create_app(pretrained, torch_threads=1), base_url="http://localhost") as client:
        def upload(name):
            return {"file": (name, (files / name).read_bytes(), "image/png")}

        check_digit_row(client.post("/v1/predict", files=upload("seven.png")).json(), with_image=True)
        check_digit_row(client.post("/v1/predict", files=upload("blank.png")).json(), with_image=True)
        batch = [("files", (n, (files / n).read_bytes(), "image/png")) for n in ("seven.png", "broken.png")]
        for include_image in (False, True):
            rows = client.post(f"/v1/predict/batch?include_image={str(include_image).lower()}", files=batch).json()
            for row in rows:
                check_digit_row(row, with_image=include_image)
        check_number_row(client.post("/v1/predict/number", files=upload("number.png")).json())


def test_python_rows_are_the_schemas(pretrained, files):
    predictor = Predictor(pretrained)
    for prediction in predictor.predict_many([str(files / n) for n in ("seven.png", "blank.png", "broken.png")]):
        check_digit_row(prediction.to_dict())
        check_digit_row(prediction.to_dict(include_image=True), with_image=True)
    check_number_row(predictor.read_number(str(files / "number.png")).to_dict())
    # The seed's classify_images_in_directory adds the file's name to each row, as the seed did.
    for row in MNISTClassifier().classify_images_in_directory(files):
        assert row.pop("filename") == Path(row["path"]).name
        check_digit_row(row)


def test_csv_columns_are_the_schemas_scalar_fields(files, tmp_path):
    out = tmp_path / "rows.csv"
    main(["predict", "--csv", str(out), str(files / "seven.png"), str(files / "broken.png")])
    header = next(csv.reader(io.StringIO(out.read_text())))
    assert header == CSV_FIELDS
    # Every field of a row, flattened: probabilities as p0..p9; top_k and the image are left to --json.
    assert set(CSV_FIELDS) == fields(schemas.Prediction) - {"probabilities", "top_k", "image"} | \
        {f"p{d}" for d in range(10)}
    # A number's digits are flattened into three columns; its size and single-digit fields are left to --json.
    assert set(NUMBER_CSV_FIELDS) == fields(schemas.NumberResult) - {"digit", "probabilities", "size"} | \
        {"confidences", "boxes"}


def test_the_readme_names_the_schemas_fields():
    text = " ".join(README.read_text().split())
    digit_row = re.search(r"A `--json` row holds (.*?)\. A `--number` row", text).group(1)
    number_row = re.search(r"A `--number` row holds (.*?)\. An image", text).group(1)
    named = [set(re.findall(r"`([a-z_]+)`", re.sub(r"\(each with [^)]*\)", "", row))) for row in (digit_row, number_row)]
    assert named[0] == fields(schemas.Prediction) - ONLY_ON_REQUEST
    assert named[1] == fields(schemas.NumberResult)
    each_digit = re.search(r"`digits` \(each with (.*?)\)", number_row).group(1)
    assert set(re.findall(r"`([a-z_]+)`", each_digit)) == fields(schemas.DigitRead)

"""Shapes of requests and answers, for the OpenAPI document only.

Responses are built from the prediction pipeline's own ``to_dict`` rows and sent as they are; these models
describe them in /docs and /openapi.json without re-validating every response (which would cost time on
the hot path). They forbid fields they do not name, and tests/test_result_fields.py validates real rows
of the CLI, the REST API and Python against them, both ways: no row field undocumented, no documented
field missing.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    detail: str = Field(description="one line saying what is wrong", examples=["digit.png: cannot decode image"])


class Row(BaseModel):
    model_config = {"extra": "forbid"}  # a field the pipeline adds must be documented here


class TopK(Row):
    digit: int
    probability: float


class Prediction(Row):
    path: str = Field(description="the uploaded file's name ('image' for JSON, 'body' for a raw body)")
    digit: Optional[int] = Field(description="0-9, or null when the image holds no digit (`reason`) or could not "
                                 "be read (`error`)")
    confidence: float = Field(description="probability of `digit` (0-1); 0.0 when `digit` is null")
    probabilities: list[float] = Field(description="ten probabilities, for digits 0..9; ten 0.0 when `digit` is null")
    top_k: list[TopK] = Field(description="the most likely digits, best first; empty when `digit` is null")
    error: Optional[str] = Field(None, description="null, or one line naming the file and what is wrong when it "
                                 "could not be read (then `reason` is null)")
    reason: Optional[str] = Field(None, description="why the image holds no digit, e.g. 'uniform image (a single "
                                  "colour, no ink)'; null when there is a digit or an `error`")
    uncertain: Optional[bool] = Field(None, description="true when the best guess is below the threshold, "
                                      "or when `note` warns about the answer; false when `digit` is null")
    note: Optional[str] = Field(None, description="a warning about the answer: the image seems to hold several "
                                "digits side by side (read it with /v1/predict/number); null when `digit` is null")
    image: Optional[list[list[float]]] = Field(None, description="the 28x28 grid the model saw: ink 1.0 on 0.0; "
                                               "null when `digit` is null")


class DigitRead(Row):
    digit: int
    confidence: float
    box: list[int] = Field(description="x0, y0, x1, y1 in the uploaded image's pixels")
    probabilities: list[float]


class NumberResult(Row):
    path: str
    number: Optional[str] = Field(description="the digits read left to right, or null when none is found "
                                  "(`reason`) or the file could not be read (`error`)")
    digit: Optional[int] = Field(None, description="the digit when exactly one was found; null otherwise")
    confidence: float = Field(description="the product of the digits' confidences: the whole number right; "
                              "0.0 when `number` is null")
    probabilities: list[float] = Field(description="the single digit's ten probabilities (ten 0.0 otherwise)")
    digits: list[DigitRead] = Field(description="one entry per digit, left to right; empty when `number` is null")
    size: Optional[list[int]] = Field(None, description="width, height of the uploaded image; null on an "
                                      "`error` row")
    uncertain: bool = Field(False, description="true when a digit's confidence is below the threshold; false "
                            "when `number` is null")
    reason: Optional[str] = Field(None, description="why `number` is null when the file was read, e.g. 'uniform "
                                  "image (a single colour, no ink)'; null on an `error` row")
    error: Optional[str] = Field(None, description="null, or one line naming the file and what is wrong when it "
                                 "could not be read (then `reason` and `size` are null)")


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Ready(BaseModel):
    status: str = Field(examples=["ready"])
    architecture: Optional[str] = Field(None, description="the served model's architecture")


class ModelInfo(BaseModel):
    """The model file's own metadata (architecture, config, training, metrics, history, ...) plus `server`."""

    model_config = {"extra": "allow"}
    architecture: str
    metrics: dict = Field(description="test-set accuracy, loss, n, per-class figures, most confused pairs")
    server: dict = Field(description="engine, max_request_bytes, max_batch_files, batching statistics")


_BINARY = {"type": "string", "format": "binary"}
_BASE64 = {"type": "string", "description": "the image file's bytes in base64 (a data: URL works too)"}

SINGLE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {**_BINARY, "description": "PNG, JPEG, ..."}}}},
    "application/json": {"schema": {"type": "object", "required": ["image"],
                                    "properties": {"image": _BASE64,
                                                   "name": {"type": "string", "description": "echoed as `path`"}}}},
    "image/png": {"schema": {**_BINARY, "description": "the raw image as the whole body (any image/* type)"}},
}}}

BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"],
                                       "properties": {"files": {"type": "array", "items": _BINARY}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"],
                                    "properties": {"images": {"type": "array", "items": _BASE64}}}},
}}}

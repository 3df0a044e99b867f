"""Shapes of requests and answers, for the OpenAPI document only.

Responses are built from the prediction pipeline's own ``to_dict`` rows and sent as they are; these models
describe them in /docs and /openapi.json without re-validating every response (which would cost time on
the hot path and duplicate the contract the pipeline already owns).
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    detail: str = Field(description="one line saying what is wrong", examples=["digit.png: cannot decode image"])


class Prediction(BaseModel):
    path: str = Field(description="the uploaded file's name ('image' for JSON, 'body' for a raw body)")
    digit: Optional[int] = Field(description="0-9, or null when the image holds no digit")
    confidence: float = Field(description="probability of `digit` (0-1)")
    probabilities: list[float] = Field(description="ten probabilities, for digits 0..9")
    top_k: Any = Field(None, description="the most likely digits, best first")
    error: Optional[str] = Field(None, description="null, or one line when the file could not be read")
    reason: Optional[str] = Field(None, description="why `digit` is null or uncertain")
    uncertain: Optional[bool] = Field(None, description="true when the best guess is below the threshold")
    image: Optional[list[list[float]]] = Field(None, description="the 28x28 grid the model saw: ink 1.0 on 0.0")


class NumberResult(BaseModel):
    path: Optional[str] = None
    number: Optional[str] = Field(description="the digits read left to right, or null when none is found")
    digits: Any = Field(None, description="one result per digit, with its box in the image")
    error: Optional[str] = None


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

"""Request and response bodies of the Open Inference Protocol (KServe v2) as the gateway speaks it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TensorIn(BaseModel):
    name: str = Field(max_length=200)
    shape: list[int] = Field(max_length=16)
    datatype: str = Field(max_length=16)
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = Field(default=None, max_length=64)
    inputs: list[TensorIn] = Field(max_length=16)
    parameters: dict[str, Any] | None = None


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float] | list[int]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    outputs: list[TensorOut]
    parameters: dict[str, Any]


class ErrorBody(BaseModel):
    error: str
    field: str | None = None
    given: Any = None
    expected: Any = None
    reason: str | None = None


class TensorMeta(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    parameters: dict[str, Any]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((400, "the input breaks the model's input spec"), (401, "missing or bad API key"),
                       (403, "key lacks the scope, or a detector rejected the input"), (404, "unknown model"),
                       (413, "request body too large"), (422, "malformed request body"),
                       (429, "rate limit or daily query budget exhausted"),
                       (503, "the audit log could not record the request"))
}

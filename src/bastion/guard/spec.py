"""The model's input contract and the checks every request passes before it reaches the model.

The spec is declared (``input_shape`` in guard.yaml or ``--input-shape``) or taken from the model
(ONNX declares it) or the reference data; bounds come from the model wrapper. A request that breaks it
gets a :class:`RequestRejected` naming the field, what was given and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: KServe v2 tensor types the gateway accepts for float inputs (integers are converted when in range)
DATATYPES = ("FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8")


class RequestRejected(Exception):
    """A request the gateway refuses: HTTP ``status`` and a JSON body naming what was wrong."""

    def __init__(self, status: int, error: str, field: str | None = None, given: Any = None,
                 expected: Any = None, reason: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.given = given
        self.expected = expected
        self.reason = reason
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error}
        for k in ("field", "given", "expected", "reason"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v if isinstance(v, (int, float, bool)) else _short(v)
        return out


def _short(v: Any, limit: int = 200) -> str:
    text = str(v)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]  # without the batch
    bounds: tuple[float, float]
    max_batch: int = 64
    name: str = "input"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": "FP32", "shape": [-1, *self.shape],
                "parameters": {"min": self.bounds[0], "max": self.bounds[1], "max_batch": self.max_batch}}

    def parse(self, inputs: list[Any]) -> np.ndarray:
        """Check a KServe v2 ``inputs`` list; return a float32 array (N, *shape) or raise RequestRejected."""
        if len(inputs) != 1:
            raise RequestRejected(400, "invalid input", "inputs", f"{len(inputs)} tensors", "exactly one tensor")
        t = inputs[0]
        f = "inputs[0]"
        if t.datatype not in DATATYPES:
            raise RequestRejected(400, "invalid input", f"{f}.datatype", t.datatype, "FP32 (or FP64/FP16/INT*)")
        want = [-1, *self.shape]
        shape = t.shape
        if len(shape) != len(want) or any(s != w for s, w in zip(shape[1:], self.shape, strict=False)):
            raise RequestRejected(400, "invalid input", f"{f}.shape", shape, want)
        n = shape[0]
        if not 1 <= n <= self.max_batch:
            raise RequestRejected(400, "invalid input", f"{f}.shape[0]", n, f"a batch of 1 to {self.max_batch}")
        try:
            arr = np.asarray(t.data)
        except (ValueError, TypeError):
            raise RequestRejected(400, "invalid input", f"{f}.data", "ragged nested lists",
                                  f"{n * self.size} numbers, flat or nested as {want}") from None
        if arr.dtype.kind not in "iuf":
            raise RequestRejected(400, "invalid input", f"{f}.data", f"values of type {arr.dtype.kind!r}"
                                  if arr.dtype.kind != "O" else "non-numeric values", "numbers")
        if arr.size != n * self.size:
            raise RequestRejected(400, "invalid input", f"{f}.data", f"{arr.size} numbers",
                                  f"{n * self.size} numbers for shape {shape}")
        arr = arr.astype(np.float64, copy=False)
        if not np.isfinite(arr).all():
            raise RequestRejected(400, "invalid input", f"{f}.data", "NaN or infinite values", "finite numbers")
        lo, hi = self.bounds
        amin, amax = float(arr.min()), float(arr.max())
        if amin < lo or amax > hi:
            raise RequestRejected(400, "invalid input", f"{f}.data", f"values in [{amin:g}, {amax:g}]",
                                  f"values in [{lo:g}, {hi:g}]")
        return arr.reshape(n, *self.shape).astype(np.float32)

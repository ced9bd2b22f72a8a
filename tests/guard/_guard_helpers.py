"""Helpers the gateway tests import (a module of its own: two conftest.py files share that module name)."""

from __future__ import annotations

import torch

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def batch(x: torch.Tensor) -> dict[str, object]:
    """A KServe v2 request body for the batch ``x``."""
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}

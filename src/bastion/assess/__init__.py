"""Robustness evaluation and reports (placeholder: its owner replaces this module)."""

from __future__ import annotations

from typing import Any


def evaluate(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("evaluate is being written")


__all__ = ["evaluate"]

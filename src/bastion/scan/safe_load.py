"""Safe loading (placeholder: its owner replaces this module)."""

from __future__ import annotations

from typing import Any


def safe_load(path: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("safe_load is being written")

"""Boundary checks shared by the monitors: windows are 2-D finite float arrays of the reference's width."""

from __future__ import annotations

from typing import Any

import numpy as np

from bastion.errors import InputError


def as_rows(x: Any, argument: str, *, width: int | None = None, min_rows: int = 2) -> np.ndarray:
    """Flatten ``x`` to (n, features) float64, refusing NaN/inf, too few rows, or a width that changed."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(argument, type(x).__name__, "a numeric array or tensor") from exc
    if arr.ndim == 0:
        raise InputError(argument, "a scalar", "an array with one row per example")
    arr = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    if len(arr) < min_rows:
        raise InputError(argument, f"{len(arr)} rows", f"at least {min_rows} examples")
    if not np.isfinite(arr).all():
        raise InputError(argument, "NaN or infinite values", "finite numbers")
    if width is not None and arr.shape[1] != width:
        raise InputError(argument, f"{arr.shape[1]} features per example",
                         f"{width}, the width of the reference data")
    return arr


def check_alpha(alpha: float) -> float:
    if not 0.0 < float(alpha) < 1.0:
        raise InputError("alpha", alpha, "a significance level strictly between 0 and 1")
    return float(alpha)


def require_fitted(obj: object, attribute: str) -> None:
    if not hasattr(obj, attribute):
        raise InputError(type(obj).__name__, "an unfitted monitor", "fit(reference) to be called first")

"""Checks at the boundary: turn what the user passed into tensors we can trust, or say what is wrong."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.errors import InputError

#: inputs may exceed the declared bounds by float rounding; beyond this they are the caller's mistake
BOUNDS_TOLERANCE = 1e-5


def as_tensor(x: Any, argument: str = "x", *, device: torch.device | None = None) -> Tensor:
    """Convert array-likes to a float32 tensor (float tensors keep their dtype) on ``device``."""
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise InputError(argument, type(x).__name__, "an array or tensor") from exc
        if arr.dtype == object:
            raise InputError(argument, "an object array", "a numeric array")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise InputError(argument, f"dtype {t.dtype}", "a numeric dtype")
    if not t.is_floating_point():
        t = t.float()
    if device is not None:
        t = t.to(device)
    return t


def check_inputs(x: Any, bounds: tuple[float, float] | None = None, *, argument: str = "x",
                 device: torch.device | None = None) -> Tensor:
    """Validate an input batch: at least 2-D (a batch), non-empty, finite, within bounds."""
    t = as_tensor(x, argument, device=device)
    if t.dim() < 2:
        raise InputError(argument, f"shape {tuple(t.shape)}", "a batch with shape (N, ...) and N >= 1")
    if t.shape[0] == 0:
        raise InputError(argument, "an empty batch", "at least one example")
    if not torch.isfinite(t).all():
        n_bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(dim=1).sum())
        raise InputError(argument, f"{n_bad} example(s) containing NaN or Inf", "finite values")
    if bounds is not None:
        lo, hi = bounds
        tmin, tmax = float(t.min()), float(t.max())
        if tmin < lo - BOUNDS_TOLERANCE or tmax > hi + BOUNDS_TOLERANCE:
            raise InputError(argument, f"values in [{tmin:.4g}, {tmax:.4g}]",
                             f"values inside the model's bounds [{lo}, {hi}] (rescale the data or pass bounds=)")
        t = t.clamp(lo, hi)
    return t


def check_labels(y: Any, n: int, num_classes: int | None = None, *, argument: str = "y",
                 device: torch.device | None = None) -> Tensor:
    """Validate labels: integer class indices, one per example, inside [0, num_classes)."""
    if isinstance(y, Tensor):
        t = y
    else:
        arr = np.asarray(y)
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise InputError(argument, "non-integer values", "integer class indices")
        elif arr.dtype.kind not in "iub":
            raise InputError(argument, f"dtype {arr.dtype}", "integer class indices")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_floating_point() and (not torch.isfinite(t).all() or not torch.equal(t, t.round())):
        raise InputError(argument, "non-integer values", "integer class indices")
    t = t.long().reshape(-1) if t.dim() <= 1 else t
    if t.dim() != 1:
        raise InputError(argument, f"shape {tuple(t.shape)}", f"shape ({n},): one class index per example")
    if t.shape[0] != n:
        raise InputError(argument, f"{t.shape[0]} labels", f"{n} labels, one per example")
    if n and int(t.min()) < 0:
        raise InputError(argument, f"label {int(t.min())}", "labels >= 0")
    if num_classes is not None and n and int(t.max()) >= num_classes:
        raise InputError(argument, f"label {int(t.max())}", f"labels in [0, {num_classes - 1}] for a {num_classes}-class model")
    if device is not None:
        t = t.to(device)
    return t


def check_bounds(bounds: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise InputError("bounds", repr(bounds), "a pair (low, high)") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError("bounds", (lo, hi), "(low, high) with low < high, both finite")
    return lo, hi


def check_class_labels(y: Any, n: int, *, argument: str = "y", num_classes: int | None = None) -> tuple[Tensor, int]:
    """Validate the labels of data a model will be *trained* on and return them with the class count.

    The same rules as :func:`check_labels` (integers, one per example, inside ``[0, num_classes)`` when the
    count is known); with no model to ask, the count is ``max + 1`` and every class below it must have
    examples: labels 0-9 plus a stray 10 and 42 are not a 43-class problem but a data error, and training on
    them would silently build a model with 33 classes that never occur.
    """
    t = check_labels(y, n, num_classes, argument=argument)
    classes = int(t.max()) + 1 if num_classes is None else num_classes
    if n and int(t.min()) == int(t.max()):
        raise InputError(argument, f"labels of one class only ({int(t[0])})", "examples of at least two classes")
    if num_classes is None:
        counts = torch.bincount(t, minlength=classes)
        absent = [int(c) for c in torch.nonzero(counts == 0).flatten()]
        if absent:
            shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
            present = [int(c) for c in torch.nonzero(counts).flatten()]
            raise InputError(argument, f"labels {_ranges(present)} with no example of class {shown} "
                             f"({len(absent)} of {classes} classes absent)",
                             "consecutive class indices 0..K-1, each with examples (relabel the data)")
    return t, classes


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 3, 10, 42]`` -> ``0-3, 10, 42``."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def expected_input(model: Any) -> str | None:
    """Describe the input a model takes (``(1, H, W)``, ``(64,)``), from its first layer or ONNX signature.

    Used to say what was expected when a data file does not fit: the model's own error ("size mismatch,
    m1: [1 x 192], m2: [64 x 10]") rarely says it in the user's terms. None when it cannot be read.
    """
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, (list, tuple)) and len(shape) > 1:
        dims = ", ".join(str(d) if isinstance(d, int) else "?" for d in shape[1:])
        return f"inputs of shape ({dims}{',' if len(shape) == 2 else ''}) without the batch"
    module = getattr(model, "module", None)
    if not isinstance(module, torch.nn.Module):
        return None
    for name, tensor in module.named_parameters():
        if not name.endswith("weight"):
            continue
        if tensor.dim() == 4:
            return f"images with {tensor.shape[1]} channel(s): shape ({tensor.shape[1]}, H, W) without the batch"
        if tensor.dim() == 3:
            return f"sequences with {tensor.shape[1]} channel(s): shape ({tensor.shape[1]}, L) without the batch"
        if tensor.dim() == 2:
            return f"{tensor.shape[1]} features per example: shape ({tensor.shape[1]},) without the batch"
        return None
    return None


def check_fits(model: Any, x: Tensor, argument: str = "--data") -> int | None:
    """Run one example through ``model`` (``Model.probe``); a misfit names the shape the model expects."""
    try:
        classes: int | None = model.probe(x, argument)
    except InputError as exc:
        wanted = expected_input(model)
        if wanted is None or "shape" not in str(exc.given):
            raise
        raise InputError(exc.argument, exc.given, f"{wanted} ({exc.expected})") from None
    return classes


def epsilon_range_warnings(epsilons: list[float], labels: list[str], norm: str, bounds: tuple[float, float],
                           n_features: int, option: str = "--eps") -> list[str]:
    """Budgets large enough to reach every input in the valid range: the attack then proves nothing.

    The diameter of the input box is ``(high - low)`` in L-inf, ``(high - low) * d ** (1 / p)`` in Lp.
    """
    width = bounds[1] - bounds[0]
    p = {"linf": math.inf, "l2": 2.0, "l1": 1.0}.get(norm)
    if p is None:
        return []
    diameter = width if p == math.inf else width * n_features ** (1.0 / p)
    return [f"{option} {lab} ({norm}) reaches every input in [{bounds[0]:g}, {bounds[1]:g}] (the box's {norm} "
            f"diameter is {diameter:.4g}): any model fails at that budget, so it measures nothing"
            for e, lab in zip(epsilons, labels, strict=True) if e >= diameter]

"""What the gradient attacks share: objective and input-gradient in one pass, per-class gradients,
argument checks.

Gradients are taken with ``torch.autograd.grad`` with respect to the input only: the model's parameters
keep their ``requires_grad`` flags and never accumulate ``.grad``, and the model is never put in train
mode. Nothing here copies a tensor to the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from bastion.attacks.evasion.base import PRECISIONS, autocast, is_adversarial
from bastion.core.adapters import Model
from bastion.errors import InputError


def bcast(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example vector (N,) so it broadcasts against a batch like (N, ...)."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def logits_of(net: Model, x: Tensor, precision: str = "fp32") -> Tensor:
    """fp32 logits without a graph (success checks, final evaluations)."""
    with torch.no_grad(), autocast(net.device, precision):
        out = net.scores(x)
    return out.float()


def value_and_grad(net: Model, x: Tensor, fn: Callable[[Tensor], Tensor],
                   precision: str = "fp32") -> tuple[Tensor, Tensor, Tensor]:
    """Per-example ``fn(logits)``, its gradient with respect to ``x``, and the logits, in one pass.

    The forward pass runs under autocast for bf16/fp16; the objective is computed on fp32 logits so a
    low-precision model still gives a well-scaled gradient. Returns detached (value, grad, logits).
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with autocast(net.device, precision):
            out = net.scores(xg)
        logits = out.float()
        value = fn(logits)
        (grad,) = torch.autograd.grad(value.sum(), xg)
    return value.detach(), grad.detach(), logits.detach()


def class_gradients(net: Model, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """Logits at ``x`` and the gradients of the logits ``classes`` (N, K) for every example.

    The batch is replicated K times so one forward and one backward pass give all K gradients.
    Returns logits (N, C) and gradients (N, K, *x.shape[1:]).
    """
    n, k = classes.shape
    rest = x.shape[1:]
    xr = x.detach().unsqueeze(1).expand(n, k, *rest).reshape(n * k, *rest).clone().requires_grad_(True)
    with torch.enable_grad():
        logits = net.scores(xr).float()
        picked = logits.gather(1, classes.reshape(-1, 1)).sum()
        (grad,) = torch.autograd.grad(picked, xr)
    return logits.detach().reshape(n, k, -1)[:, 0], grad.reshape(n, k, *rest)


# --- argument checks shared by the attacks' constructors -------------------------------------------
def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(name, repr(value), f"an integer >= {minimum}")
    return value


def check_float(name: str, value: object, *, low: float = 0.0, high: float = math.inf,
                low_open: bool = True, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(name, repr(value), "a number")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if not math.isfinite(v) or too_low or too_high:
        lo_s = f"> {low}" if low_open else f">= {low}"
        hi_s = "" if math.isinf(high) else (f" and < {high}" if high_open else f" and <= {high}")
        raise InputError(name, value, f"a finite number {lo_s}{hi_s}")
    return v


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError("precision", repr(precision), f"one of {', '.join(repr(p) for p in PRECISIONS)}")
    return precision


def take(state: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """Keep only ``rows`` of every per-example tensor in an attack's working state."""
    return {k: v[rows] for k, v in state.items()}


def shrink_toward(net: Model, x: Tensor, adv: Tensor, y: Tensor, target: Tensor | None,
                  steps: int = 10) -> Tensor:
    """Bisect on the segment from ``x`` to ``adv`` for the adversarial point closest to ``x``.

    ``adv`` rows that are not adversarial come back unchanged. Costs ``steps`` forward passes.
    """
    lo_t = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)  # known benign fraction
    hi_t = torch.ones_like(lo_t)  # known adversarial fraction
    for _ in range(steps):
        mid = (lo_t + hi_t) / 2
        ok = is_adversarial(logits_of(net, x + bcast(mid, x) * (adv - x)).argmax(dim=1), y, target)
        hi_t = torch.where(ok, mid, hi_t)
        lo_t = torch.where(ok, lo_t, mid)
    return x + bcast(hi_t, x) * (adv - x)

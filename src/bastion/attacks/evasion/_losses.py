"""Per-example attack objectives over logits, oriented so that larger always means more adversarial.

Every function takes fp32 logits (N, C) and returns a vector (N,). Untargeted objectives push away from
the label ``y``; targeted ones pull toward ``target``. The gradient attacks maximise them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from bastion.errors import InputError

LOSSES = ("ce", "dlr", "margin")

#: keeps the DLR ratio finite when the top logits tie
_DLR_TINY = 1e-12

#: objective(logits, y, target) -> (N,) to maximise
Objective = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def check_loss(loss: str, allowed: tuple[str, ...] = LOSSES) -> str:
    """Validate a loss name (case-insensitive) and return it in canonical form."""
    key = str(loss).lower()
    if key not in allowed:
        raise InputError("loss", repr(loss), f"one of {', '.join(repr(a) for a in allowed)}")
    return key


def _pick(logits: Tensor, cls: Tensor) -> Tensor:
    return logits.gather(1, cls.unsqueeze(1)).squeeze(1)


def max_other(logits: Tensor, cls: Tensor) -> Tensor:
    """Largest logit among the classes other than ``cls``."""
    return logits.scatter(1, cls.unsqueeze(1), float("-inf")).amax(dim=1)


def argmax_other(logits: Tensor, cls: Tensor) -> Tensor:
    """Index of the largest logit among the classes other than ``cls``."""
    return logits.scatter(1, cls.unsqueeze(1), float("-inf")).argmax(dim=1)


def ce(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of the label: grows as the model loses confidence in ``y``."""
    return F.cross_entropy(logits, y, reduction="none")


def targeted_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Negative cross-entropy of the target: grows as the model gains confidence in ``target``."""
    return -F.cross_entropy(logits, target, reduction="none")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner logit margin, best other class minus the label; positive iff misclassified."""
    return max_other(logits, y) - _pick(logits, y)


def targeted_margin(logits: Tensor, target: Tensor) -> Tensor:
    """Target logit minus the best other class; positive iff the model predicts ``target``."""
    return _pick(logits, target) - max_other(logits, target)


def _sorted_desc(logits: Tensor) -> Tensor:
    # The ratios read the four largest logits at most; a partial sort is cheaper on every step.
    return logits.topk(min(4, logits.shape[1]), dim=1).values


def _rank(s: Tensor, k: int) -> Tensor:
    # With fewer classes than the ratio asks for, fall back on the smallest logit available.
    return s[:, min(k, s.shape[1] - 1)]


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020): the margin divided by z_pi1 - z_pi3.

    Dividing by a spread of the logits makes it invariant to their scale and shift, so it cannot be
    masked by a model that simply inflates its logits. With two classes the spread is undefined and the
    plain margin is returned (the attacks' steps do not depend on the loss scale).
    """
    m = margin(logits, y)
    if logits.shape[1] < 3:
        return m
    s = _sorted_desc(logits)
    return m / (s[:, 0] - s[:, 2] + _DLR_TINY)


def targeted_dlr(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR of Croce & Hein: (z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    num = _pick(logits, target) - _pick(logits, y)
    if logits.shape[1] < 3:
        return num
    s = _sorted_desc(logits)
    return num / (s[:, 0] - 0.5 * (s[:, 2] + _rank(s, 3)) + _DLR_TINY)


def _untargeted(fn: Callable[[Tensor, Tensor], Tensor]) -> Objective:
    def objective(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return fn(logits, y)
    return objective


def _need_target(target: Tensor | None) -> Tensor:
    if target is None:  # pragma: no cover - internal misuse, callers choose the objective by targeting
        raise InputError("target", None, "target classes for a targeted objective")
    return target


def _targeted_ce(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    return targeted_ce(logits, _need_target(target))


def _targeted_margin(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    return targeted_margin(logits, _need_target(target))


def _targeted_dlr_goal(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    # An explicit target must beat every other class, so the numerator is its margin over the best other.
    t = _need_target(target)
    m = targeted_margin(logits, t)
    if logits.shape[1] < 3:
        return m
    s = _sorted_desc(logits)
    return m / (s[:, 0] - 0.5 * (s[:, 2] + _rank(s, 3)) + _DLR_TINY)


def _apgd_t_dlr(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    return targeted_dlr(logits, y, _need_target(target))


def objective(loss: str, targeted: bool) -> Objective:
    """The objective to maximise for a loss name: untargeted (push from ``y``) or targeted (toward it)."""
    key = check_loss(loss)
    if not targeted:
        return _untargeted({"ce": ce, "dlr": dlr, "margin": margin}[key])
    return {"ce": _targeted_ce, "dlr": _targeted_dlr_goal, "margin": _targeted_margin}[key]


def guided_dlr() -> Objective:
    """APGD-T's objective: targeted DLR toward a guide class, while success stays 'misclassified'."""
    return _apgd_t_dlr


def top_other_classes(logits: Tensor, y: Tensor, k: int) -> Tensor:
    """The ``k`` highest-scoring classes other than ``y``, best first, shape (N, k)."""
    masked = logits.scatter(1, y.unsqueeze(1), float("-inf"))
    return masked.topk(min(k, logits.shape[1] - 1), dim=1).indices


__all__ = [
    "LOSSES",
    "Objective",
    "argmax_other",
    "bind",
    "ce",
    "check_loss",
    "dlr",
    "guided_dlr",
    "margin",
    "max_other",
    "objective",
    "targeted_ce",
    "targeted_dlr",
    "targeted_margin",
    "top_other_classes",
]


def bind(obj: Objective, y: Tensor, target: Tensor | None) -> Callable[[Tensor], Tensor]:
    """Fix the labels (and targets) of an objective, leaving a function of the logits only."""
    def fn(logits: Tensor) -> Tensor:
        return obj(logits, y, target)
    return fn

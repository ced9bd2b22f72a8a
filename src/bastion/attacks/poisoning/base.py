"""What every poisoning attack returns: the poisoned set, where the poison is, and how to trigger it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.errors import InputError


def as_tensor(x: Any, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """Inputs or labels as a CPU tensor of ``dtype``; NaN and infinities are refused here, at the boundary."""
    t = x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(dtype)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise InputError(name, "values with NaN or infinity", "finite numbers")
    return t


def check_rate(rate: float) -> float:
    if not 0.0 < float(rate) < 1.0:
        raise InputError("rate", rate, "a fraction of the training set strictly between 0 and 1")
    return float(rate)


def choose(pool: Tensor, k: int, seed: int, what: str) -> Tensor:
    """``k`` distinct indices from ``pool``, reproducible under ``seed``, sorted."""
    if k < 1:
        raise InputError("rate", f"a rate that poisons {k} records", f"at least one record of {what}")
    if k > pool.numel():
        raise InputError("rate", f"a rate that needs {k} records of {what}", f"at most {pool.numel()} (that many exist)")
    gen = torch.Generator().manual_seed(seed)
    pick = pool[torch.randperm(pool.numel(), generator=gen)[:k]]
    return pick.sort().values


@dataclass
class PoisonResult:
    """A poisoned training set.

    ``x``, ``y``: the whole set, poison included (inputs and labels that were not chosen are unchanged);
    ``indices``: the rows that were poisoned (the ground truth a detector must find); ``target``: the
    class the attacker wants (None for random label flips); ``source``: for targeted flips, the class
    whose examples should be misread. ``apply_trigger(x)`` stamps the trigger on test inputs.
    """

    x: Tensor
    y: Tensor
    indices: Tensor
    target: int | None
    attack: str
    source: int | None = None
    trigger: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)

    @property
    def mask(self) -> Tensor:
        """Boolean per record: True where the record was poisoned."""
        m = torch.zeros(self.x.shape[0], dtype=torch.bool)
        m[self.indices] = True
        return m

    @property
    def rate(self) -> float:
        return self.indices.numel() / max(1, self.x.shape[0])

    def apply_trigger(self, x: Any) -> Tensor:
        """Stamp the trigger on ``x`` (test inputs); the inputs passed in are not modified."""
        if self.trigger is None:
            raise InputError("apply_trigger", f"a {self.attack} result", "a backdoor attack result (it has no trigger)")
        return self.trigger(as_tensor(x, "x").clone())

    def attack_success_rate(self, model: Any, x: Any, y: Any, batch_size: int = 512) -> float:
        """Fraction of test inputs the attacker wins on: see :func:`attack_success_rate`."""
        return attack_success_rate(model, self, x, y, batch_size=batch_size)


def _predict(model: Any, x: Tensor, batch_size: int) -> Tensor:
    from bastion.core import wrap

    m = wrap(model)
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out.append(m.predict(x[i:i + batch_size].to(m.device)).cpu())
    return torch.cat(out)


def attack_success_rate(model: Any, result: PoisonResult, x: Any, y: Any, batch_size: int = 512) -> float:
    """Attack success rate (ASR) of ``result`` against ``model`` on clean test data ``x, y``.

    Backdoors: the fraction of test inputs *not* of the target class that the model assigns to the target
    once the trigger is stamped. Targeted label flips: the fraction of source-class inputs read as the
    target. Random label flips have no success rate (measure clean accuracy instead).
    """
    xt, yt = as_tensor(x, "x"), as_tensor(y, "y", torch.int64)
    if xt.shape[0] != yt.shape[0]:
        raise InputError("y", f"{yt.shape[0]} labels", f"{xt.shape[0]}, one per input")
    if result.target is None:
        raise InputError("result", "a random label-flip result", "a targeted attack (it has no target class)")
    keep: Tensor
    if result.trigger is not None:
        keep = torch.as_tensor(yt != result.target)
        inputs = result.apply_trigger(xt[keep])
    else:
        keep = torch.as_tensor(yt == result.source)
        inputs = xt[keep]
    if inputs.shape[0] == 0:
        raise InputError("y", "no test inputs the attack applies to", "some inputs outside the target class")
    pred = _predict(model, inputs, batch_size)
    return float((pred == result.target).float().mean())

"""Closing the loop: adversarial examples crafted offline on the stolen copy, replayed on the victim."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from bastion.attacks.inference._scores import labels as predicted_labels
from bastion.core.adapters import wrap
from bastion.errors import InputError


@dataclass
class TransferResult:
    """Success on the victim of attacks crafted on the copy, over inputs the victim got right."""

    epsilon: float
    norm: str
    evaluated: int
    success_on_copy: float
    success_on_victim: float
    victim_queries: int

    def to_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "norm": self.norm, "evaluated": self.evaluated,
                "success_on_copy": self.success_on_copy, "success_on_victim": self.success_on_victim,
                "victim_queries": self.victim_queries}


def transfer_from_copy(copy: nn.Module, victim: Any, x: Tensor, y: Tensor, epsilon: float, norm: str = "linf",
                       steps: int = 20) -> TransferResult:
    """PGD on ``copy`` (white-box, no victim queries), then about one victim query per adversarial example.

    Only inputs the victim classifies correctly count, so the rate is the attack's, not the victim's errors.
    """
    from bastion.attacks.evasion.pgd import PGD
    from bastion.attacks.evasion.transfer import TransferAttack

    target = wrap(victim)
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InputError("x/y", f"{x.shape[0]} inputs and {y.shape[0]} labels", "a non-empty set, one label each")
    correct = predicted_labels(target, x) == y.cpu()
    xs, ys = x[correct], y[correct]
    if xs.shape[0] == 0:
        raise InputError("x", "inputs the victim gets all wrong", "some inputs the victim classifies correctly")
    sur = wrap(copy, bounds=target.bounds)
    on_copy = PGD(norm=norm, steps=steps)(sur, xs, ys, epsilons=epsilon)
    before = target.queries
    res = TransferAttack(sur, PGD(norm=norm, steps=steps))(target, xs, ys, epsilons=epsilon)
    return TransferResult(epsilon=epsilon, norm=norm, evaluated=int(xs.shape[0]),
                          success_on_copy=float(on_copy.success_rate[0]),
                          success_on_victim=float(res.success_rate[0]), victim_queries=target.queries - before)


__all__ = ["TransferResult", "transfer_from_copy"]

"""Transfer attack: craft adversarial examples on a surrogate you own, replay them on the target.

The target is only asked for labels (the base's success check), so this works against anything
``bastion.wrap`` accepts, including endpoints that return labels only. The surrogate needs whatever the
inner attack needs (gradients for the default PGD).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bastion.attacks.evasion.base import Attack, FixedEpsilonAttack
from bastion.core.adapters import Capability, Model, wrap
from bastion.errors import InputError

#: PGD iterations of the default inner attack
DEFAULT_STEPS = 20


class TransferAttack(FixedEpsilonAttack):
    """Run ``attack`` (default ``PGD(norm, steps=20)``) on ``surrogate``; the target sees only the result.

    The norm is the inner attack's. The surrogate is wrapped with the target's bounds unless it is
    already a :class:`~bastion.core.adapters.Model`. Queries reported are the target's only.
    """

    name = "TransferAttack"
    needs = Capability.LABELS

    def __init__(self, surrogate: Any, attack: Attack | None = None, seed: int | None = 0,
                 batch_size: int | None = None, *, norm: str = "linf") -> None:
        if attack is None:
            from bastion.attacks.evasion.pgd import PGD

            attack = PGD(norm=norm, steps=DEFAULT_STEPS)
        if not isinstance(attack, FixedEpsilonAttack):
            raise InputError("attack", type(attack).__name__,
                             "a fixed-epsilon attack instance such as PGD(...), APGD(...) or FGSM(...)")
        self.supported_norms = (attack.norm.name,)
        super().__init__(attack.norm, seed=seed, batch_size=batch_size)
        self.surrogate = surrogate
        self.attack = attack

    def _surrogate_for(self, model: Model) -> Model:
        sur = wrap(self.surrogate, bounds=model.bounds) if not isinstance(self.surrogate, Model) else self.surrogate
        sur.require(self.attack.needs, f"{self.name} (surrogate for {self.attack.name})")
        return sur

    def run(self, model: Model, x: Tensor, y: Tensor, eps: float, target: Tensor | None) -> Tensor:
        sur = self._surrogate_for(model)
        dev = sur.device
        res = self.attack(sur, x.to(dev), y.to(dev), epsilons=eps,
                          target=None if target is None else target.to(dev))
        adv = res.clipped[0]
        with torch.no_grad():
            return adv.to(x.device, x.dtype)

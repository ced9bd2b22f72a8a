"""Fast gradient sign method (Goodfellow et al. 2015); with L2 or L1 it is the fast gradient method."""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.attacks.evasion._grad import value_and_grad
from bastion.attacks.evasion._losses import bind, check_loss, objective
from bastion.attacks.evasion.base import FixedEpsilonAttack
from bastion.core.adapters import Model
from bastion.core.threat import Norm


class FGSM(FixedEpsilonAttack):
    """One step of length ``eps`` along the norm's steepest-ascent direction of the loss.

    Untargeted by default (raise the loss of the label); pass ``target=`` to the call to step toward
    those classes instead.
    """

    name = "FGSM"

    def __init__(self, norm: str | Norm = "linf", seed: int | None = 0, batch_size: int | None = None,
                 *, loss: str = "ce") -> None:
        super().__init__(norm, seed=seed, batch_size=batch_size)
        self.loss = check_loss(loss)

    def run(self, model: Model, x: Tensor, y: Tensor, eps: float, target: Tensor | None) -> Tensor:
        net = model.adaptive()
        obj = objective(self.loss, target is not None)
        _, grad, _ = value_and_grad(net, x, bind(obj, y, target))
        e = torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)
        lo, hi = model.bounds
        return self.norm.project_in_box(x, x + self.norm.step_in_box(grad, x, lo, hi, e), e, lo, hi)

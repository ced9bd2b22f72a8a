"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016): walk to the closest linearised decision boundary."""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.attacks.evasion._grad import bcast, check_float, check_int, class_gradients, flat, logits_of
from bastion.attacks.evasion.base import MinimizationAttack, is_adversarial
from bastion.core.adapters import Model
from bastion.core.threat import Norm

#: added to each step's distance so a step never lands exactly on the boundary
_NUDGE = 1e-4
_TINY = 1e-12


class DeepFool(MinimizationAttack):
    """Repeatedly step to the nearest linearised boundary among the ``candidates`` top classes.

    Steps accumulate and the total is scaled by ``1 + overshoot``; an example stops as soon as it is
    adversarial, and the batch stops once every example has (checked every ``check_every`` steps, one host
    sync each). With ``target=`` only the boundary toward the target class is considered.
    """

    name = "DeepFool"
    supported_norms = ("l2", "linf")
    #: steps between two checks whether every example is done (each costs one host sync)
    check_every = 4

    def __init__(self, norm: str | Norm = "l2", steps: int = 50, overshoot: float = 0.02, candidates: int = 10,
                 seed: int | None = 0, batch_size: int | None = None) -> None:
        super().__init__(norm, seed=seed, batch_size=batch_size)
        self.steps = check_int("steps", steps, 1)
        self.overshoot = check_float("overshoot", overshoot, low_open=False)
        self.candidates = check_int("candidates", candidates, 2)

    def run_min(self, model: Model, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        net = model.adaptive()
        lo, hi = model.bounds
        logits = logits_of(net, x)
        n = x.shape[0]
        # Column 0 is the label; the others are the classes whose boundaries may be crossed.
        if target is not None:
            others = target.unsqueeze(1)
        else:
            k = min(self.candidates, logits.shape[1]) - 1
            others = logits.scatter(1, y.unsqueeze(1), float("-inf")).topk(k, dim=1).indices
        classes = torch.cat([y.unsqueeze(1), others], dim=1)
        total = torch.zeros_like(flat(x))
        xi = x.clone()
        done = is_adversarial(logits.argmax(dim=1), y, target)
        for k in range(self.steps):
            if k > 0 and k % self.check_every == 0 and bool(done.all()):
                break
            logits, jac = class_gradients(net, xi, classes)
            done = done | is_adversarial(logits.argmax(dim=1), y, target)
            picked = logits.gather(1, classes)
            f = picked[:, 1:] - picked[:, :1]  # (N, K-1), negative while the label still wins
            jac = jac.reshape(n, classes.shape[1], -1)
            w = jac[:, 1:] - jac[:, :1]
            wn = w.norm(dim=2) if self.norm.name == "l2" else w.abs().sum(dim=2)
            dist = (f.abs() + _NUDGE) / (wn + _TINY)
            pick = dist.argmin(dim=1)
            d_min = dist.gather(1, pick.unsqueeze(1))
            w_min = w.gather(1, pick.reshape(n, 1, 1).expand(n, 1, w.shape[2])).squeeze(1)
            if self.norm.name == "l2":
                step = d_min * w_min / (w_min.norm(dim=1, keepdim=True) + _TINY)
            else:
                step = d_min * w_min.sign()
            total = torch.where(done.unsqueeze(1), total, total + step)
            moved = (x + ((1 + self.overshoot) * total).reshape(x.shape)).clamp(lo, hi)
            xi = torch.where(bcast(done, x), xi, moved)
        done = done | is_adversarial(logits_of(net, xi).argmax(dim=1), y, target)
        return torch.where(bcast(done, x), xi, x)

"""Projected gradient descent (Madry et al. 2018) over any norm, with restarts and early exit."""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.attacks.evasion._grad import (
    bcast,
    check_float,
    check_int,
    check_precision,
    logits_of,
    value_and_grad,
)
from bastion.attacks.evasion._losses import Objective, bind, check_loss, objective
from bastion.attacks.evasion.base import FixedEpsilonAttack, is_adversarial
from bastion.core.adapters import Model
from bastion.core.threat import Norm


class PGD(FixedEpsilonAttack):
    """``steps`` ascent steps on the loss, each projected onto the epsilon ball and the input bounds.

    - step size ``rel_stepsize * eps`` (or ``abs_stepsize``), optionally from a random start;
    - ``loss``: ``"ce"``, ``"dlr"`` or ``"margin"`` (Carlini-Wagner logit margin);
    - ``restarts`` > 1 re-attacks, from new random starts, only the examples not broken yet, and keeps
      per example a success, else the highest loss;
    - targeted when the call passes ``target=``;
    - ``early_exit``: an example stops moving once it is adversarial, and broken examples leave the
      working batch every ``compact_every`` steps (one host sync each time, never one per step);
    - ``precision``: ``"bf16"``/``"fp16"`` runs the model's forward pass under autocast.
    """

    name = "PGD"
    #: steps between two drops of broken examples from the working batch (each costs one host sync)
    compact_every = 2

    def __init__(self, norm: str | Norm = "linf", steps: int = 10, rel_stepsize: float = 0.25,
                 abs_stepsize: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss: str = "ce", precision: str = "fp32", seed: int | None = 0,
                 batch_size: int | None = None, *, early_exit: bool = True) -> None:
        super().__init__(norm, seed=seed, batch_size=batch_size)
        self.steps = check_int("steps", steps, 1)
        self.rel_stepsize = check_float("rel_stepsize", rel_stepsize)
        self.abs_stepsize = None if abs_stepsize is None else check_float("abs_stepsize", abs_stepsize)
        self.random_start = bool(random_start)
        self.restarts = check_int("restarts", restarts, 1)
        self.loss = check_loss(loss)
        self.precision = check_precision(precision)
        self.early_exit = bool(early_exit)

    def run(self, model: Model, x: Tensor, y: Tensor, eps: float, target: Tensor | None) -> Tensor:
        net = model.adaptive()
        obj = objective(self.loss, target is not None)
        step = self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps
        n = x.shape[0]
        out = x.clone()
        best_val = torch.full((n,), float("-inf"), device=x.device)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for r in range(self.restarts):
            rows = torch.arange(n, device=x.device) if r == 0 else (~found).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            t = None if target is None else target[rows]
            adv, ok = self._ascend(net, model.bounds, x[rows], y[rows], t, eps, step, obj)
            if self.restarts == 1:
                return adv
            # Score the last iterate so that the restarts keep, per example, a success or the best loss.
            logits = logits_of(net, adv, self.precision)
            val = obj(logits, y[rows], t)
            ok = ok | is_adversarial(logits.argmax(dim=1), y[rows], t)
            better = ok | (val > best_val[rows])
            out[rows] = torch.where(bcast(better, adv), adv, out[rows])
            best_val[rows] = torch.where(better, val, best_val[rows])
            found[rows] = ok
        return out

    def _ascend(self, net: Model, bounds: tuple[float, float], x: Tensor, y: Tensor, t: Tensor | None,
                eps: float, step: float, obj: Objective) -> tuple[Tensor, Tensor]:
        """One PGD run from one start. Returns the iterates and which were seen adversarial."""
        lo, hi = bounds
        n = x.shape[0]
        e = torch.full((n,), eps, device=x.device, dtype=x.dtype)
        xa = x + self.norm.random_start(x, e) if self.random_start else x.clone()
        xa = xa.clamp(lo, hi)
        out = x.clone()
        seen = torch.zeros(n, dtype=torch.bool, device=x.device)
        # Working rows: ``idx`` maps them back to the batch; broken rows are written out and dropped.
        idx = torch.arange(n, device=x.device)
        xw, yw, tw, ew = x, y, t, e
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        for k in range(self.steps):
            if self.early_exit and k > 0 and k % self.compact_every == 0:
                keep = (~done).nonzero().squeeze(1)
                if keep.numel() < idx.numel():
                    gone = done.nonzero().squeeze(1)
                    out[idx[gone]] = xa[gone]
                    seen[idx[gone]] = True
                    idx, xa, xw, yw, ew, done = idx[keep], xa[keep], xw[keep], yw[keep], ew[keep], done[keep]
                    tw = None if tw is None else tw[keep]
                if keep.numel() == 0:
                    return out, seen
            _, grad, logits = value_and_grad(net, xa, bind(obj, yw, tw), self.precision)
            moved = xa + self.norm.step_in_box(grad, xa, lo, hi, step)
            moved = self.norm.project_in_box(xw, moved, ew, lo, hi)
            if self.early_exit:
                # An example already adversarial stays where it is (decided on device, no sync).
                done = done | is_adversarial(logits.argmax(dim=1), yw, tw)
                xa = torch.where(bcast(done, xa), xa, moved)
            else:
                xa = moved
        out[idx] = xa
        seen[idx] = done
        return out, seen

"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that adapts itself.

The step starts at 2 * eps and is halved, per example, at checkpoints where progress stalled: too few of
the steps since the last checkpoint raised the loss, or the best loss did not improve while the step was
not just halved. A halving restarts that example from its best point so far. With ``n_target_classes``
it is APGD-T: the targeted DLR loss toward each of the top-k other classes in turn, on the examples
still classified correctly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bastion.attacks.evasion._grad import (
    bcast,
    check_float,
    check_int,
    check_precision,
    logits_of,
    take,
    value_and_grad,
)
from bastion.attacks.evasion._losses import (
    Objective,
    bind,
    check_loss,
    guided_dlr,
    objective,
    top_other_classes,
)
from bastion.attacks.evasion.base import FixedEpsilonAttack, is_adversarial
from bastion.core.adapters import Model
from bastion.core.threat import Norm

#: the paper's checkpoint schedule: p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
_FIRST_CHECKPOINT = 0.22
_SHRINK = 0.03
_MIN_GAP = 0.06


def checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD decides whether to halve each example's step size."""
    p = [0.0, _FIRST_CHECKPOINT]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - _SHRINK, _MIN_GAP)
        if nxt > 1.0:
            break
        p.append(nxt)
    # Rounding first keeps 0.41 * 100 from becoming 42 through float error.
    return sorted({min(steps, max(1, math.ceil(round(q * steps, 6)))) for q in p[1:]})


class APGD(FixedEpsilonAttack):
    """Auto-PGD with CE or DLR loss (``loss``), ``steps`` iterations, ``restarts`` random restarts.

    - ``n_target_classes=k > 0``: APGD-T, the targeted DLR loss toward each of the k highest-scoring other
      classes in turn (success is still "misclassified"), attacking only examples not yet broken;
    - an explicit ``target=`` in the call makes it a targeted attack toward those classes (``loss``
      then means targeted CE, targeted DLR or targeted margin) and ``n_target_classes`` is ignored;
    - ``rho``: the fraction of loss-raising steps below which a checkpoint halves the step;
    - an example stops as soon as it is adversarial; broken examples leave the working batch every
      ``compact_every`` iterations (one host sync each time).
    """

    name = "APGD"
    #: weight of the new step against the previous one (the paper's alpha)
    momentum = 0.75
    #: iterations between two drops of broken examples from the working batch (each costs one host sync)
    compact_every = 4

    def __init__(self, norm: str | Norm = "linf", loss: str = "ce", steps: int = 100, restarts: int = 1,
                 n_target_classes: int = 0, rho: float = 0.75, precision: str = "fp32",
                 seed: int | None = 0, batch_size: int | None = None) -> None:
        super().__init__(norm, seed=seed, batch_size=batch_size)
        self.loss = check_loss(loss)
        self.steps = check_int("steps", steps, 1)
        self.restarts = check_int("restarts", restarts, 1)
        self.n_target_classes = check_int("n_target_classes", n_target_classes, 0)
        self.rho = check_float("rho", rho, high=1.0, high_open=True)
        self.precision = check_precision(precision)
        if self.n_target_classes > 0:
            self.name = "APGD-T"

    def run(self, model: Model, x: Tensor, y: Tensor, eps: float, target: Tensor | None) -> Tensor:
        net = model.adaptive()
        # Each run: an objective, the class it is guided toward, and what counts as success.
        runs: list[tuple[Objective, Tensor | None]]
        if target is not None:
            runs = [(objective(self.loss, True), target)]
        elif self.n_target_classes > 0:
            guides = top_other_classes(logits_of(net, x, self.precision), y, self.n_target_classes)
            runs = [(guided_dlr(), guides[:, j]) for j in range(guides.shape[1])]
        else:
            runs = [(objective(self.loss, False), None)]
        n = x.shape[0]
        out = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        best_val = torch.empty(n, device=x.device)
        for j, (obj, guide) in enumerate(runs):
            best_val.fill_(float("-inf"))  # losses toward different guide classes are not comparable
            for r in range(self.restarts):
                rows = torch.arange(n, device=x.device) if j == r == 0 else (~found).nonzero().squeeze(1)
                if rows.numel() == 0:
                    return out
                g_rows = None if guide is None else guide[rows]
                t_rows = None if target is None else target[rows]
                adv, ok, val = self._ascend(net, model.bounds, x[rows], y[rows], g_rows, t_rows, eps, obj)
                better = ok | (val > best_val[rows])
                out[rows] = torch.where(bcast(better, adv), adv, out[rows])
                best_val[rows] = torch.where(better, val, best_val[rows])
                found[rows] = ok
        return out

    def _ascend(self, net: Model, bounds: tuple[float, float], x: Tensor, y: Tensor, guide: Tensor | None,
                goal: Tensor | None, eps: float, obj: Objective) -> tuple[Tensor, Tensor, Tensor]:
        """One APGD run. Returns per example: its result, whether it is adversarial, its best loss."""
        lo, hi = bounds
        norm = self.norm
        n = x.shape[0]
        e = torch.full((n,), eps, device=x.device, dtype=x.dtype)

        def proj(z: Tensor, xw: Tensor, ew: Tensor) -> Tensor:
            return norm.project_in_box(xw, z, ew, lo, hi)

        def evaluate(s: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
            fn = bind(obj, s["y"], s.get("guide"))
            val, grad, logits = value_and_grad(net, s["xa"], fn, self.precision)
            return val, grad, is_adversarial(logits.argmax(dim=1), s["y"], s.get("goal"))

        xa = proj(x + norm.random_start(x, e), x, e)
        s: dict[str, Tensor] = {"idx": torch.arange(n, device=x.device), "x": x, "y": y, "e": e, "xa": xa}
        if guide is not None:
            s["guide"] = guide
        if goal is not None:
            s["goal"] = goal
        val, grad, adv = evaluate(s)
        s.update(xp=xa, g=grad, val=val, xmax=xa, gmax=grad, vmax=val, done=adv, eta=2 * e,
                 incr=torch.zeros(n, device=x.device), vckpt=val,
                 # the first checkpoint judges only the fraction of loss-raising steps
                 reduced=torch.ones_like(adv))
        out, out_ok, out_val = x.clone(), torch.zeros_like(adv), val.clone()
        ckpts = set(checkpoints(self.steps))
        last_ckpt = 0
        for k in range(1, self.steps + 1):
            if k % self.compact_every == 0:
                keep = (~s["done"]).nonzero().squeeze(1)
                if keep.numel() < s["idx"].numel():
                    gone = s["done"].nonzero().squeeze(1)
                    rows = s["idx"][gone]
                    out[rows], out_ok[rows], out_val[rows] = s["xa"][gone], True, s["vmax"][gone]
                    s = take(s, keep)
                if keep.numel() == 0:
                    return out, out_ok, out_val
            done = s["done"]
            a = 1.0 if k == 1 else self.momentum
            z = proj(s["xa"] + norm.step_in_box(s["g"], s["xa"], lo, hi, s["eta"]), s["x"], s["e"])
            xn = proj(s["xa"] + a * (z - s["xa"]) + (1 - a) * (s["xa"] - s["xp"]), s["x"], s["e"])
            s["xp"], s["xa"] = s["xa"], torch.where(bcast(done, xn), s["xa"], xn)
            val, grad, adv = evaluate(s)
            s["done"] = done = done | adv
            s["incr"] = s["incr"] + (val > s["val"]).float()
            s["val"], s["g"] = val, grad
            up = val > s["vmax"]
            s["xmax"] = torch.where(bcast(up, xn), s["xa"], s["xmax"])
            s["gmax"] = torch.where(bcast(up, xn), grad, s["gmax"])
            s["vmax"] = torch.where(up, val, s["vmax"])
            if k in ckpts:
                span = k - last_ckpt
                last_ckpt = k
                stalled = s["incr"] <= self.rho * span
                flat_best = ~s["reduced"] & (s["vmax"] <= s["vckpt"])
                cut = (stalled | flat_best) & ~done
                b = bcast(cut, xn)
                s["eta"] = torch.where(cut, s["eta"] / 2, s["eta"])
                # Restart the halved examples from their best point (the momentum term keeps the previous
                # iterate, as in the reference implementation).
                s["xa"] = torch.where(b, s["xmax"], s["xa"])
                s["g"] = torch.where(b, s["gmax"], s["g"])
                s["reduced"], s["vckpt"] = cut, s["vmax"]
                s["incr"] = torch.zeros_like(s["incr"])
        rows = s["idx"]
        done = s["done"]
        out[rows] = torch.where(bcast(done, s["xa"]), s["xa"], s["xmax"])
        out_ok[rows] = done
        out_val[rows] = s["vmax"]
        return out, out_ok, out_val

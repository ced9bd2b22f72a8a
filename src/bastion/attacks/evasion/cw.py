"""Carlini & Wagner's L2 attack (IEEE S&P 2017): the smallest L2 perturbation by optimisation.

The input box is removed by a change of variables, x = lo + (hi - lo) * (tanh(w) + 1) / 2, and Adam
minimises ||x - x0||^2 + c * max(margin, -confidence). A per-example binary search over ``c`` finds the
smallest weight that still gives an adversarial example.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.attacks.evasion._grad import bcast, check_float, check_int, flat, shrink_toward
from bastion.attacks.evasion._losses import margin, targeted_margin
from bastion.attacks.evasion.base import MinimizationAttack, is_adversarial
from bastion.core.adapters import Model

#: keeps atanh finite for inputs on the bounds
_EDGE = 1 - 1e-6
#: a weight this large means "no success seen yet" in the binary search
_NO_UPPER = 1e10
#: the optimisation stops early when the batch loss has improved by less than this fraction
_STALL = 1e-4


class _Adam:
    """Adam (Kingma & Ba 2015) on one tensor, elementwise, so every example is optimised independently.

    Written out because constructing ``torch.optim.Adam`` the first time imports seconds of modules.
    """

    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def __init__(self, like: Tensor, lr: float) -> None:
        self.lr = lr
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = 0

    def step(self, w: Tensor, grad: Tensor) -> Tensor:
        self.t += 1
        self.m.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        m_hat = self.m / (1 - self.beta1 ** self.t)
        v_hat = self.v / (1 - self.beta2 ** self.t)
        return w - self.lr * m_hat / (v_hat.sqrt() + self.eps)


class CarliniWagnerL2(MinimizationAttack):
    """Carlini-Wagner L2 with ``binary_search_steps`` rounds of ``steps`` Adam iterations (rate ``lr``).

    ``lr`` is Adam's rate for a box of width 1 (the original setting); for bounds (lo, hi) it is divided
    by hi - lo, so steps are the same fraction of the input range. ``confidence`` asks for a logit margin at least that large. Every ``steps // 10`` iterations the batch
    loss is compared with the previous check and a round ends early when it stalled (one host sync per
    check, as in the original attack's early abort).
    """

    name = "CarliniWagnerL2"
    supported_norms = ("l2",)

    def __init__(self, steps: int = 200, binary_search_steps: int = 6, confidence: float = 0.0,
                 lr: float = 0.01, initial_const: float = 1e-2, seed: int | None = 0,
                 batch_size: int | None = None, *, abort_early: bool = True) -> None:
        super().__init__("l2", seed=seed, batch_size=batch_size)
        self.steps = check_int("steps", steps, 1)
        self.binary_search_steps = check_int("binary_search_steps", binary_search_steps, 1)
        self.confidence = check_float("confidence", confidence, low_open=False)
        self.lr = check_float("lr", lr)
        self.initial_const = check_float("initial_const", initial_const)
        self.abort_early = bool(abort_early)

    def run_min(self, model: Model, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        net = model.adaptive()
        lo, hi = model.bounds
        span = hi - lo
        n = x.shape[0]
        w0 = torch.atanh(((x - lo) / span * 2 - 1).clamp(-_EDGE, _EDGE))
        const = torch.full((n,), self.initial_const, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), _NO_UPPER, device=x.device)
        best = x.clone()
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        check = max(self.steps // 10, 1)
        for _ in range(self.binary_search_steps):
            w = w0.clone()
            # The original attack worked in a box of width 1; scaling the rate by the box width keeps
            # each step the same fraction of the input range whatever the bounds.
            adam = _Adam(w, self.lr / span)
            hit = torch.zeros(n, dtype=torch.bool, device=x.device)
            last = torch.tensor(float("inf"), device=x.device)
            for it in range(self.steps):
                with torch.enable_grad():
                    w.requires_grad_(True)
                    xa = lo + span * (torch.tanh(w) + 1) / 2
                    logits = net.scores(xa).float()
                    gap = margin(logits, y) if target is None else targeted_margin(logits, target)
                    # gap > 0 means success; the hinge stops pushing once it exceeds the confidence.
                    l2sq = flat(xa - x).pow(2).sum(dim=1)
                    loss = l2sq + const * (self.confidence - gap).clamp_min(0)
                    (grad,) = torch.autograd.grad(loss.sum(), w)
                w = adam.step(w.detach(), grad)
                with torch.no_grad():
                    xd = xa.detach()
                    ok = is_adversarial(logits.argmax(dim=1), y, target) & (gap >= self.confidence)
                    l2 = l2sq.detach().sqrt()
                    better = ok & (l2 < best_l2)
                    best = torch.where(bcast(better, x), xd, best)
                    best_l2 = torch.where(better, l2, best_l2)
                    hit = hit | ok
                    if self.abort_early and (it + 1) % check == 0:
                        total = loss.detach().sum()
                        if bool(total > last * (1 - _STALL)):
                            break
                        last = total
            # Success: the weight may shrink. Failure: grow it tenfold until a success bounds it above.
            upper = torch.where(hit, torch.minimum(upper, const), upper)
            lower = torch.where(hit, lower, torch.maximum(lower, const))
            bounded = upper < _NO_UPPER / 10
            const = torch.where(bounded, (lower + upper) / 2, const * 10)
        # Adam's last steps overshoot the boundary a little; pull each result back along its own ray.
        found = torch.isfinite(best_l2)
        if self.confidence == 0:
            best = torch.where(bcast(found, x), shrink_toward(net, x, best, y, target), best)
        return best

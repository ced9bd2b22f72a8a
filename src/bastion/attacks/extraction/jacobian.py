"""Jacobian-based data augmentation (Papernot et al. 2017, "Practical black-box attacks").

Labels only. Start from a few seed inputs, label them with the victim, train a substitute, then grow the
set: every known input x spawns ``x + lam * sign(d s_{O(x)} / dx)``, a step along the substitute's
gradient of the class the victim gave x, which lands near the victim's decision boundaries where labels
are most informative. ``lam`` flips sign every ``tau`` rounds, as in the paper, to keep exploring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.extraction.base import BudgetPoint, Evaluation, ExtractionResult, freeze
from bastion.attacks.extraction.knockoff import _check_budgets
from bastion.attacks.extraction.surrogate import DEFAULT_EPOCHS, Factory, default_factory, fit_soft
from bastion.attacks.inference._scores import labels as victim_labels
from bastion.core.adapters import wrap
from bastion.errors import InputError


class JacobianAugmentation:
    """Papernot et al.'s substitute training; measured at each budget in ``budgets``."""

    name = "Jacobian augmentation (Papernot)"

    def __init__(self, lam: float = 0.1, tau: int = 3, factory: Factory | None = None, *,
                 epochs: int = DEFAULT_EPOCHS, seed: int = 0) -> None:
        if not lam > 0:
            raise InputError("lam", lam, "a positive step in input units, e.g. 0.1")
        self.lam = lam
        self.tau = tau
        self.factory = factory
        self.epochs = epochs
        self.seed = seed

    def run(self, model: Any, seeds: Tensor, budgets: int | Sequence[int] = (1000,), *,
            eval_x: Tensor | None = None, eval_y: Tensor | None = None) -> ExtractionResult:
        victim = wrap(model)
        plan = _check_budgets(budgets)
        if not isinstance(seeds, Tensor) or seeds.dim() < 2 or seeds.shape[0] < 1:
            raise InputError("seeds", type(seeds).__name__, "a tensor of one or more seed inputs (N, ...)")
        lo, hi = victim.bounds
        evaluation = Evaluation(victim, eval_x, eval_y)
        torch.manual_seed(self.seed)
        classes = victim.probe(seeds[:1]) or int(victim_labels(victim, seeds).max()) + 1
        factory, arch_note = (self.factory, "substitute architecture: the caller's") if self.factory is not None \
            else default_factory(victim, tuple(seeds.shape[1:]), classes)
        before = victim.queries
        x = seeds.detach().float().cpu()[:plan[-1]]
        y = victim_labels(victim, x)
        curve: list[BudgetPoint] = []
        copy = fit_soft(factory(), x, y, epochs=self.epochs, seed=self.seed)
        rnd = 0
        pending = list(plan)
        while True:
            # rounds are cut so the set size lands exactly on each budget: the current substitute is the
            # one measured there, no refit needed
            while pending and x.shape[0] >= pending[0]:
                b = pending.pop(0)
                fid, acc = evaluation.measure(copy)
                curve.append(BudgetPoint(queries=b, fidelity=fid, accuracy=acc))
            if not pending:
                break
            step = self.lam * (-1.0 if (rnd // max(1, self.tau)) % 2 else 1.0)
            xg = x.clone().requires_grad_(True)
            picked = copy(xg).gather(1, y[:, None].to(torch.long)).sum()
            (grad,) = torch.autograd.grad(picked, xg)
            new = (x + step * grad.sign()).clamp(lo, hi)[:pending[0] - x.shape[0]]
            x = torch.cat([x, new])
            y = torch.cat([y, victim_labels(victim, new)])
            # warm start: the substitute keeps what it learned and adapts to the new points
            copy = fit_soft(copy, x, y, epochs=max(1, self.epochs // 3), seed=self.seed + rnd, min_steps=100)
            rnd += 1
        last = curve[-1]
        return ExtractionResult(attack=self.name, copy=freeze(copy), queries=victim.queries - before,
                                fidelity=last.fidelity, accuracy=last.accuracy,
                                victim_accuracy=evaluation.victim_accuracy(), curve=curve,
                                notes=[arch_note, f"{seeds.shape[0]} seeds, {rnd} augmentation rounds, lam {self.lam}"])


__all__ = ["JacobianAugmentation"]

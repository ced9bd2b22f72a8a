"""Equation-solving extraction of log-linear models (Tramèr et al. 2016, "Stealing ML models via prediction APIs").

A logistic or softmax regression answers ``p = softmax(W x + b)``, so every answer gives, for each class
k, a *linear* equation ``log p_k - log p_0 = (w_k - w_0) . x + (b_k - b_0)``. With d input features,
d + 1 queries in general position determine every such difference exactly, and the differences are
all a classifier needs: the copy predicts what the victim predicts on every input (fidelity 1.0), binary
or multiclass. Coarsened outputs (rounding, label-only) break the equations: the copy is then measured,
not assumed, and the residual on verification queries says how far the victim is from log-linear.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.attacks.extraction.base import Evaluation, ExtractionResult, freeze
from bastion.attacks.inference._scores import looks_like_probabilities
from bastion.core.adapters import Capability, Model, wrap
from bastion.errors import InputError

#: probabilities below this carry no usable logarithm (underflow): such queries are moved and re-asked
_TINY = 1e-300


class LinearCopy(nn.Module):
    """``logits = x.flatten() @ weight.T + bias`` (class 0's row fixed at zero, as identified)."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.float())
        self.bias = nn.Parameter(bias.float())

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).float() @ self.weight.T + self.bias


def _log_probs(scores: Tensor) -> Tensor:
    s = scores.detach().double().cpu()
    if looks_like_probabilities(s):
        return s.clamp_min(_TINY).log()
    return s.log_softmax(dim=1)


class EquationSolving:
    """Steal a logistic / softmax regression with d + 1 queries (plus ``verify`` optional checks).

    Queries are drawn uniformly in the middle of the input box (``spread`` of its half-width), where a
    trained model's probabilities rarely saturate; a query whose probabilities underflow is moved
    halfway to the centre and asked again (counted).
    """

    name = "equation solving (Tramèr)"

    def __init__(self, verify: int = 0, spread: float = 0.5, seed: int = 0) -> None:
        if isinstance(verify, bool) or not isinstance(verify, int) or verify < 0:
            raise InputError("verify", verify, "an integer >= 0 (extra queries that check the solution)")
        if not 0.0 < spread <= 1.0:
            raise InputError("spread", spread, "a fraction of the input box in (0, 1]")
        self.verify = verify
        self.spread = spread
        self.seed = seed

    def _ask(self, victim: Model, x: Tensor, center: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            logp = _log_probs(victim.scores(x.to(victim.device)))
        for _ in range(20):
            bad = ~torch.isfinite(logp).all(dim=1) | (logp <= np.log(_TINY) + 1).any(dim=1)
            if not bool(bad.any()):
                break
            x[bad] = (x[bad] + center) / 2
            with torch.no_grad():
                logp[bad] = _log_probs(victim.scores(x[bad].to(victim.device)))
        return x, logp

    def run(self, model: Any, input_shape: tuple[int, ...], *, eval_x: Tensor | None = None,
            eval_y: Tensor | None = None) -> ExtractionResult:
        victim = wrap(model)
        victim.require(Capability.SCORES, self.name)
        d = int(np.prod(input_shape))
        lo, hi = victim.bounds
        evaluation = Evaluation(victim, eval_x, eval_y)
        gen = torch.Generator().manual_seed(self.seed)
        center = torch.full((d,), (lo + hi) / 2, dtype=torch.float64)
        n = d + 1 + self.verify
        x = center + (torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1) * self.spread * (hi - lo) / 2
        before = victim.queries
        x, logp = self._ask(victim, x.float().reshape(n, *input_shape), center.float())
        queries = victim.queries - before
        a = np.c_[x.reshape(n, d).double().numpy(), np.ones(n)]
        rhs = (logp - logp[:, :1]).numpy()[:, 1:]
        solve, check = slice(0, d + 1), slice(d + 1, n)
        theta, *_ = np.linalg.lstsq(a[solve], rhs[solve], rcond=None)
        notes = [f"{d + 1} queries solve {rhs.shape[1] * (d + 1)} linear equations in {rhs.shape[1] * (d + 1)} unknowns"]
        if self.verify:
            residual = float(np.abs(a[check] @ theta - rhs[check]).max())
            notes.append(f"max residual on {self.verify} verification queries: {residual:.3g} "
                         f"({'log-linear' if residual < 1e-3 else 'the victim is NOT log-linear: the copy is approximate'})")
        classes = logp.shape[1]
        weight = torch.zeros(classes, d, dtype=torch.float64)
        bias = torch.zeros(classes, dtype=torch.float64)
        weight[1:] = torch.from_numpy(theta[:d].T)
        bias[1:] = torch.from_numpy(theta[d])
        copy = freeze(LinearCopy(weight, bias))
        fid, acc = evaluation.measure(copy)
        return ExtractionResult(attack=self.name, copy=copy, queries=queries, fidelity=fid, accuracy=acc,
                                victim_accuracy=evaluation.victim_accuracy(), notes=notes)


__all__ = ["EquationSolving", "LinearCopy"]

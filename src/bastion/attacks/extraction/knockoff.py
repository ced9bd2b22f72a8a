"""Knockoff Nets (Orekondy et al. 2019): train a copy on the victim's answers to natural queries.

The attacker owns unlabelled data from a related distribution (the *pool*), sends it to the victim and
fits a copy to the returned probabilities. ``strategy="random"`` samples the pool uniformly;
``strategy="adaptive"`` learns which part of the pool is worth querying with a gradient bandit over pool
clusters, rewarded (as in the paper) by how confident the victim is and how much the current copy still
disagrees with it. When the budget exceeds the pool, further queries are mixtures of two pool records
(``lam * a + (1 - lam) * b``): new inputs near the data rather than repeats that teach nothing.

``ensemble=k`` trains k independently initialised copies on the same answers and averages their
probabilities (:class:`~bastion.attacks.extraction.surrogate.AveragedCopy`): the same queries, k times
the training, and a copy that agrees with the victim more often than any one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.attacks.extraction.base import BudgetPoint, Evaluation, ExtractionResult, freeze
from bastion.attacks.extraction.surrogate import (
    DEFAULT_EPOCHS,
    AveragedCopy,
    Factory,
    default_factory,
    fit_soft,
)
from bastion.attacks.inference._scores import probabilities
from bastion.core.adapters import Capability, Model, wrap
from bastion.errors import InputError

STRATEGIES = ("random", "adaptive")
#: queries per bandit step (adaptive)
ADAPTIVE_BATCH = 32
#: gradient-bandit step size
BANDIT_LR = 0.1


def _check_budgets(budgets: int | Sequence[int]) -> list[int]:
    values = [budgets] if isinstance(budgets, int) else list(budgets)
    if not values or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in values):
        raise InputError("budgets", budgets, "one or more positive query counts, e.g. (1000, 10000)")
    return sorted(set(values))


class _QueryStream:
    """Pool records without replacement, then mixtures of two: never the same query twice."""

    def __init__(self, pool: Tensor, gen: torch.Generator) -> None:
        self.pool = pool
        self.gen = gen
        self.order = torch.randperm(pool.shape[0], generator=gen).tolist()

    def take(self, n: int, among: np.ndarray | None = None) -> Tensor:
        if among is not None:
            allowed = set(among.tolist())
            idx = [i for i in self.order if i in allowed][:n]
            if len(idx) == n:
                remove = set(idx)
                self.order = [i for i in self.order if i not in remove]
                return self.pool[idx]
        idx = self.order[:n]
        self.order = self.order[n:]
        out = [self.pool[idx]] if idx else []
        missing = n - len(idx)
        if missing:
            pick = among if among is not None and among.size else np.arange(self.pool.shape[0])
            a = torch.from_numpy(pick[torch.randint(0, pick.size, (missing,), generator=self.gen).numpy()])
            b = torch.randint(0, self.pool.shape[0], (missing,), generator=self.gen)
            lam = torch.rand((missing,) + (1,) * (self.pool.dim() - 1), generator=self.gen)
            out.append(lam * self.pool[a] + (1 - lam) * self.pool[b])
        return torch.cat(out)


class KnockoffNets:
    """Extraction by training a copy on the victim's scores for pool queries, measured at each budget."""

    def __init__(self, strategy: str = "random", factory: Factory | None = None, *, epochs: int = DEFAULT_EPOCHS,
                 clusters: int = 10, seed: int = 0, ensemble: int = 1,
                 progress: Callable[[int, int], None] | None = None) -> None:
        if strategy not in STRATEGIES:
            raise InputError("strategy", repr(strategy), f"one of {STRATEGIES}")
        if isinstance(ensemble, bool) or not isinstance(ensemble, int) or ensemble < 1:
            raise InputError("ensemble", ensemble, "a number of copies >= 1")
        self.ensemble = ensemble
        self.strategy = strategy
        self.factory = factory
        self.epochs = epochs
        self.clusters = clusters
        self.seed = seed
        self.progress = progress

    @property
    def name(self) -> str:
        return f"Knockoff Nets ({self.strategy})"

    def _adaptive(self, victim: Model, pool: Tensor, budget: int, stream: _QueryStream, factory: Factory,
                  gen: torch.Generator) -> tuple[Tensor, Tensor]:
        from sklearn.cluster import KMeans

        k = max(2, min(self.clusters, pool.shape[0] // 4))
        groups = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit_predict(
            pool.reshape(pool.shape[0], -1).numpy())
        members = [np.flatnonzero(groups == c) for c in range(k)]
        prefs = np.zeros(k)
        baseline = 0.0
        copy = factory()
        opt = torch.optim.Adam(copy.parameters(), lr=1e-3)
        xs: list[Tensor] = []
        ps: list[Tensor] = []
        spent, step = 0, 0
        rng = np.random.default_rng(self.seed)
        while spent < budget:
            pi = np.exp(prefs - prefs.max())
            pi /= pi.sum()
            action = int(rng.choice(k, p=pi))
            n = min(ADAPTIVE_BATCH, budget - spent)
            x = stream.take(n, members[action])
            p = probabilities(victim, x)
            spent += n
            step += 1
            copy.train()
            logits = copy(x)
            ce = -(p * logits.log_softmax(dim=1)).sum(dim=1)
            top2 = p.topk(min(2, p.shape[1]), dim=1).values
            certainty = (top2[:, 0] - top2[:, -1]).mean()
            # reward = victim certainty + copy's remaining loss (Orekondy et al.'s "cert" and "L" terms)
            reward = float(certainty) + float(ce.mean().detach())
            baseline += (reward - baseline) / step
            onehot = np.eye(k)[action]
            prefs += BANDIT_LR * (reward - baseline) * (onehot - pi)
            opt.zero_grad()
            ce.mean().backward()
            opt.step()
            xs.append(x)
            ps.append(p)
        return torch.cat(xs), torch.cat(ps)

    def run(self, model: Any, pool: Tensor, budgets: int | Sequence[int] = (1000,), *,
            eval_x: Tensor | None = None, eval_y: Tensor | None = None) -> ExtractionResult:
        """Query up to ``max(budgets)`` times; train a fresh copy at every budget and measure it."""
        victim = wrap(model)
        victim.require(Capability.SCORES, self.name)
        if not isinstance(pool, Tensor) or pool.dim() < 2 or pool.shape[0] < 2:
            raise InputError("pool", type(pool).__name__ if not isinstance(pool, Tensor) else tuple(pool.shape),
                             "a tensor of at least 2 unlabelled attacker inputs (N, ...)")
        plan = _check_budgets(budgets)
        pool = pool.detach().float().cpu()
        evaluation = Evaluation(victim, eval_x, eval_y)
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        classes = victim.probe(pool[:1]) or 2
        factory, arch_note = (self.factory, "copy architecture: the caller's") if self.factory is not None \
            else default_factory(victim, tuple(pool.shape[1:]), classes)
        stream = _QueryStream(pool, gen)
        before = victim.queries
        if self.strategy == "adaptive":
            xq, pq = self._adaptive(victim, pool, plan[-1], stream, factory, gen)
        else:
            xq = stream.take(plan[-1])
            pq = probabilities(victim, xq)
        queries = victim.queries - before
        curve: list[BudgetPoint] = []
        copy: nn.Module | None = None
        for i, b in enumerate(plan):
            # distinct data orders per member; distinct inits come from the factory's global RNG draws
            members = [fit_soft(factory(), xq[:b], pq[:b], epochs=self.epochs, seed=self.seed + 7919 * k)
                       for k in range(self.ensemble)]
            copy = members[0] if len(members) == 1 else AveragedCopy(members)
            fid, acc = evaluation.measure(copy)
            per = [evaluation.measure(m)[0] for m in members] if len(members) > 1 else None
            curve.append(BudgetPoint(queries=b, fidelity=fid, accuracy=acc, member_fidelity=per))
            if self.progress is not None:
                self.progress(i + 1, len(plan))
        assert copy is not None
        if self.ensemble > 1:
            arch_note += f", {self.ensemble} copies averaged"
        notes = [arch_note, f"pool of {pool.shape[0]} attacker inputs"
                 + (f"; {max(0, plan[-1] - pool.shape[0])} mixed queries beyond it" if plan[-1] > pool.shape[0] else "")]
        last = curve[-1]
        return ExtractionResult(attack=self.name, copy=freeze(copy), queries=queries, fidelity=last.fidelity,
                                accuracy=last.accuracy, victim_accuracy=evaluation.victim_accuracy(), curve=curve,
                                notes=notes)


__all__ = ["STRATEGIES", "KnockoffNets"]

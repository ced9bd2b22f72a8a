"""HopSkipJumpAttack (Chen, Jordan & Wainwright, IEEE S&P 2020): decision-based, labels only.

Start from any misclassified point, walk it to the decision boundary by binary search, then repeat:
estimate the boundary's normal from the signs of many tiny random probes, step along it (geometric
step-size search), and binary-search back to the boundary. Every example moves in lock step, so each
phase is one batched call to the model; examples out of budget stop querying.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.evasion._blackbox_common import check_positive_int
from bastion.attacks.evasion.base import AttackResult, MinimizationAttack, is_adversarial
from bastion.core.adapters import Capability, Model

#: rows per call to the model while probing (bounds memory; the adapters batch further if they need to)
_PROBE_CHUNK = 8192
#: most numbers held at once in the probe tensor (examples x probes x features): about 128 MiB in fp32
_PROBE_ELEMENTS = 2**25
#: the first probe radius, as a fraction of the input range (the paper's choice before a distance exists)
_FIRST_PROBE = 0.1
#: the geometric step-size search halves at most this many times before giving up on a step
_MAX_HALVINGS = 30
#: binary searches stop at this many halvings even if the tolerance is finer than float precision
_MAX_BISECTIONS = 40


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


class HopSkipJump(MinimizationAttack):
    """HopSkipJump, L2 or L-inf, on predicted labels only.

    ``queries`` is the per-example budget (counting the first check of the clean input). ``init_evals``
    is both the number of random starts tried per example and the first gradient-estimate sample size;
    the sample grows as ``init_evals * sqrt(t)`` up to ``max_evals``. ``steps`` caps the iterations.
    Each example starts from the nearest input of its batch that the model already puts in a wanted
    class (the target, for targeted runs), so include examples of the target class in the batch; without
    one it tries uniform noise, which rarely lands in a given target on many-class models. Examples with
    no starting point are returned unchanged (not successful).
    """

    name = "HopSkipJump"
    needs = Capability.LABELS
    supported_norms = ("l2", "linf")

    def __init__(self, norm: str = "l2", queries: int = 5000, init_evals: int = 100, max_evals: int = 1000,
                 steps: int = 40, seed: int | None = 0, batch_size: int | None = None) -> None:
        super().__init__(norm, seed=seed, batch_size=batch_size)
        self.queries = check_positive_int("queries", queries, minimum=2)
        self.init_evals = check_positive_int("init_evals", init_evals)
        self.max_evals = check_positive_int("max_evals", max_evals)
        self.steps = check_positive_int("steps", steps)
        self._parts: list[Tensor] = []

    def __call__(self, model: Any, inputs: Any, labels: Any = None, *,
                 epsilons: float | Sequence[float] | None = None, target: Any = None) -> AttackResult:
        self._parts = []
        result = super().__call__(model, inputs, labels, epsilons=epsilons, target=target)
        # run_min sees every example once, in order, whatever the epsilons.
        if self._parts:
            result.extras["queries_per_example"] = torch.cat(self._parts)
        return result

    # --- the search ------------------------------------------------------------------------------
    def run_min(self, model: Model, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        with torch.no_grad():
            search = _Search(self, model, x, y, target)
            adv = search.solve()
        self._parts.append(search.counts.cpu())
        return adv


class _Search:
    """State of one batch: current boundary points, their distances and the queries each example spent."""

    def __init__(self, attack: HopSkipJump, model: Model, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        self.a, self.model, self.x, self.y, self.target = attack, model, x, y, target
        self.lo, self.hi = model.bounds
        self.n = x.shape[0]
        self.d = x[0].numel()
        self.linf = attack.norm.name == "linf"
        # The paper's scale: probes of radius sqrt(d)*theta*dist (L2) or d*theta*dist (L-inf).
        self.theta = self.d ** -2.0 if self.linf else self.d ** -1.5
        self.counts = torch.zeros(self.n, dtype=torch.long, device=x.device)

    # queries -------------------------------------------------------------------------------------
    def predict(self, cand: Tensor, owners: Tensor) -> Tensor:
        """Labels for candidates; ``owners`` says which example each candidate belongs to (for counting)."""
        out = [self.model.predict(cand[i:i + _PROBE_CHUNK]) for i in range(0, cand.shape[0], _PROBE_CHUNK)]
        self.counts.index_add_(0, owners, torch.ones_like(owners))
        return torch.cat(out)

    def is_adv(self, cand: Tensor, owners: Tensor) -> Tensor:
        pred = self.predict(cand, owners)
        return is_adversarial(pred, self.y[owners], None if self.target is None else self.target[owners])

    def left(self) -> Tensor:
        return self.a.queries - self.counts

    # geometry ------------------------------------------------------------------------------------
    def measure(self, delta: Tensor) -> Tensor:
        return self.a.norm.measure(delta)

    def blend(self, idx: Tensor, adv: Tensor, alpha: Tensor) -> Tensor:
        """Point a fraction ``alpha`` of the way from ``x`` to ``adv`` (L-inf: the box of that radius)."""
        x = self.x[idx]
        if self.linf:
            r = _bcast(alpha * self.measure(adv - x), x)
            return torch.maximum(torch.minimum(adv, x + r), x - r)
        a = _bcast(alpha, x)
        return (1 - a) * x + a * adv

    def to_boundary(self, idx: Tensor, adv: Tensor) -> Tensor:
        """Bisect between each ``x`` and its adversarial ``adv`` to the boundary (the adversarial side)."""
        low = torch.zeros(idx.numel(), device=adv.device, dtype=adv.dtype)
        high = torch.ones_like(low)
        for _ in range(_MAX_BISECTIONS):
            open_ = ((high - low) > self.theta) & (self.left()[idx] > 0)
            if not bool(open_.any()):
                break
            k = open_.nonzero().flatten()
            mid = (low[k] + high[k]) / 2
            ok = self.is_adv(self.blend(idx[k], adv[k], mid), idx[k])
            high[k] = torch.where(ok, mid, high[k])
            low[k] = torch.where(ok, low[k], mid)
        return self.blend(idx, adv, high)

    # phases --------------------------------------------------------------------------------------
    def initialise(self) -> tuple[Tensor, Tensor]:
        """A misclassified starting point per example, walked to the boundary.

        The nearest other input of the batch that the model already puts in an adversarial class costs
        no extra query; examples without one try uniform noise, ``init_evals`` times at most.
        """
        everyone = torch.arange(self.n, device=self.x.device)
        pred = self.predict(self.x, everyone)
        tgt = None if self.target is None else self.target
        clean_adv = is_adversarial(pred, self.y, tgt)  # already misclassified: distance zero
        start = self.x.clone()
        found = clean_adv.clone()
        # usable[i, j]: input j is classified the way example i needs.
        usable = pred[None, :] == tgt[:, None] if tgt is not None else pred[None, :] != self.y[:, None]
        usable &= ~torch.eye(self.n, dtype=torch.bool, device=self.x.device)
        flat = self.x.reshape(1, self.n, -1)
        gaps = torch.cdist(flat, flat, p=self.a.norm.p)[0].masked_fill(~usable, float("inf"))
        nearest = gaps.argmin(dim=1)
        has = usable.any(dim=1) & ~found
        start[has] = self.x[nearest[has]]
        found |= has
        for _ in range(self.a.init_evals):
            k = (~found & (self.left() > 0)).nonzero().flatten()
            if k.numel() == 0:
                break
            noise = torch.rand_like(self.x[k]) * (self.hi - self.lo) + self.lo
            ok = self.is_adv(noise, k)
            start[k[ok]] = noise[ok]
            found[k[ok]] = True
        walk = (found & ~clean_adv).nonzero().flatten()
        if walk.numel() > 0:
            start[walk] = self.to_boundary(walk, start[walk])
        return start, found & ~clean_adv

    def estimate_direction(self, idx: Tensor, point: Tensor, radius: Tensor, n_probes: int) -> Tensor:
        """Monte-Carlo estimate of the boundary normal at ``point`` (pointing into the adversarial side).

        Examples are taken in groups so the probe tensor stays under ``_PROBE_ELEMENTS`` numbers.
        """
        group = max(1, _PROBE_ELEMENTS // (n_probes * self.d))
        parts = [self._direction(idx[i:i + group], point[i:i + group], radius[i:i + group], n_probes)
                 for i in range(0, idx.numel(), group)]
        return torch.cat(parts)

    def _direction(self, idx: Tensor, point: Tensor, radius: Tensor, n_probes: int) -> Tensor:
        shape = point.shape[1:]
        if self.linf:
            u = torch.rand((idx.numel(), n_probes, *shape), device=point.device, dtype=point.dtype) * 2 - 1
        else:
            u = torch.randn((idx.numel(), n_probes, *shape), device=point.device, dtype=point.dtype)
        u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).reshape(idx.numel(), n_probes, *([1] * len(shape)))
        r = radius.reshape(-1, 1, *([1] * len(shape)))
        probes = (point.unsqueeze(1) + r * u).clamp(self.lo, self.hi)
        u = (probes - point.unsqueeze(1)) / r  # what was actually applied after clipping
        owners = idx.repeat_interleave(n_probes)
        phi = self.is_adv(probes.reshape(-1, *shape), owners).reshape(idx.numel(), n_probes).to(point.dtype) * 2 - 1
        mean = phi.mean(dim=1, keepdim=True)
        # Subtracting the mean (a baseline) lowers the estimate's variance, unless every probe agreed.
        centred = torch.where(mean.abs() == 1, phi, phi - mean)
        v = (centred.reshape(idx.numel(), n_probes, *([1] * len(shape))) * u).mean(dim=1)
        if self.linf:
            return v.sign()
        return v / _bcast(v.flatten(1).norm(dim=1).clamp_min(1e-12), v)

    def solve(self) -> Tensor:
        best, active = self.initialise()
        dist = self.measure(best - self.x)
        current = best.clone()
        for t in range(1, self.a.steps + 1):
            n_probes = min(int(self.a.init_evals * math.sqrt(t)), self.a.max_evals)
            # An example needs its probes plus room to step and bisect; otherwise it stops here.
            active &= self.left() > n_probes + 2
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            point = current[idx]
            cur_dist = self.measure(point - self.x[idx])
            if t == 1:
                radius = torch.full_like(cur_dist, _FIRST_PROBE * (self.hi - self.lo))
            else:
                scale = self.d * self.theta if self.linf else math.sqrt(self.d) * self.theta
                radius = (scale * cur_dist).clamp_min(1e-8)
            direction = self.estimate_direction(idx, point, radius, n_probes)

            # Geometric search: the longest step dist/sqrt(t), halved until it lands adversarial.
            step = cur_dist / math.sqrt(t)
            moved = point.clone()
            pending = torch.ones(idx.numel(), dtype=torch.bool, device=point.device)
            for _ in range(_MAX_HALVINGS):
                pending &= self.left()[idx] > 0
                k = pending.nonzero().flatten()
                if k.numel() == 0:
                    break
                cand = (point[k] + _bcast(step[k], point[k]) * direction[k]).clamp(self.lo, self.hi)
                ok = self.is_adv(cand, idx[k])
                moved[k[ok]] = cand[ok]
                pending[k[ok]] = False
                step[k[~ok]] /= 2
            stepped = moved.ne(point).flatten(1).any(dim=1)
            new = point.clone()
            if bool(stepped.any()):
                s = stepped.nonzero().flatten()
                new[s] = self.to_boundary(idx[s], moved[s])
            current[idx] = new
            new_dist = self.measure(new - self.x[idx])
            better = new_dist < dist[idx]
            best[idx[better]] = new[better]
            dist[idx[better]] = new_dist[better]
        return best

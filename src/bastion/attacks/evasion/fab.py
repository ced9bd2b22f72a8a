"""Fast adaptive boundary attack, FAB (Croce & Hein, ICML 2020): minimal perturbations for L-inf, L2, L1.

Each step linearises the model at the current point, picks the decision hyperplane to cross (the closest
one in the attack's norm, or a given target class for FAB-T), and projects onto it, within the input box,
both the current point and the original input. The next point is a convex combination of the two
projections that leans toward the original input (weight at most ``alpha_max``), pushed a little past the
hyperplane (``eta``). Whenever it is adversarial the attack records it and steps back toward the input
(``beta``), so the iterates walk along the decision boundary toward the smallest perturbation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.attacks.evasion._grad import (
    bcast,
    check_float,
    check_int,
    class_gradients,
    flat,
    logits_of,
    value_and_grad,
)
from bastion.attacks.evasion._losses import targeted_margin, top_other_classes
from bastion.attacks.evasion.base import FixedEpsilonAttack, MinimizationAttack, is_adversarial
from bastion.core.adapters import Model
from bastion.core.threat import Norm

_TINY = 1e-12


def _solve_capped(a: Tensor, t: Tensor, c: Tensor) -> Tensor:
    """Per row, the smallest lam >= 0 with sum_i a_i * min(lam, t_i) = c (a, t >= 0; c >= 0).

    The left side is piecewise linear and non-decreasing in lam with kinks at the t_i, so sorting the
    kinks locates the segment holding the solution exactly. When c is out of reach every term saturates
    and the largest kink is returned.
    """
    ts, order = t.sort(dim=1)
    aa = a.gather(1, order)
    done_part = (aa * ts).cumsum(dim=1)  # sum over saturated terms once lam passes kink k
    slope = aa.sum(dim=1, keepdim=True) - aa.cumsum(dim=1)  # weight of terms still growing
    at_kink = done_part + ts * slope
    k = (at_kink < c.unsqueeze(1)).sum(dim=1)
    prev = (k - 1).clamp_min(0).unsqueeze(1)
    first = k == 0
    base = torch.where(first, torch.zeros_like(c), done_part.gather(1, prev).squeeze(1))
    grow = torch.where(first, aa.sum(dim=1), slope.gather(1, prev).squeeze(1))
    lam = (c - base) / grow.clamp_min(_TINY)
    return torch.where(k >= t.shape[1], ts[:, -1], lam)


def project_to_hyperplane(norm: str, w: Tensor, c: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """The smallest ``delta`` in ``norm`` with <w, delta> = c and low <= delta <= high (rows of (N, d)).

    ``low <= 0 <= high`` (the box seen from a point inside it). Where the hyperplane lies beyond the box,
    the result is the box corner that gets closest to it.
    """
    sign_c = torch.where(c < 0, -torch.ones_like(c), torch.ones_like(c))
    wp = w * sign_c.unsqueeze(1)  # now <wp, delta> = |c| >= 0: every coordinate moves along sign(wp)
    cp = c.abs()
    aw = wp.abs()
    room = torch.where(wp > 0, high, -low).clamp_min(0) * (aw > 0)
    direction = wp.sign()
    if norm == "linf":
        tau = _solve_capped(aw, room, cp)
        return direction * torch.minimum(tau.unsqueeze(1), room)
    if norm == "l2":
        lam = _solve_capped(aw * aw, room / aw.clamp_min(_TINY), cp)
        return direction * torch.minimum(lam.unsqueeze(1) * aw, room)
    # L1: spend the budget on the coordinates with the largest |w| first, each up to its room.
    order = aw.argsort(dim=1, descending=True)
    aws, rs = aw.gather(1, order), room.gather(1, order)
    gained = (aws * rs).cumsum(dim=1)
    k = (gained < cp.unsqueeze(1)).sum(dim=1)
    d = w.shape[1]
    kk = k.clamp_max(d - 1).unsqueeze(1)
    before = torch.where(k == 0, torch.zeros_like(cp), gained.gather(1, (k - 1).clamp_min(0).unsqueeze(1)).squeeze(1))
    partial = ((cp - before) / aws.gather(1, kk).squeeze(1).clamp_min(_TINY)).clamp_min(0)
    partial = torch.minimum(partial, rs.gather(1, kk).squeeze(1))
    ranks = torch.arange(d, device=w.device).unsqueeze(0)
    mags = torch.where(ranks < k.unsqueeze(1), rs, torch.zeros_like(rs))
    mags = torch.where((ranks == kk) & (k < d).unsqueeze(1), partial.unsqueeze(1), mags)
    return direction * torch.zeros_like(mags).scatter(1, order, mags)


def dual_norm(norm: str, w: Tensor) -> Tensor:
    """Per-row dual norm: the linearised distance to a hyperplane is |f| / dual_norm(w)."""
    if norm == "linf":
        return w.abs().sum(dim=1)
    if norm == "l2":
        return w.norm(dim=1)
    return w.abs().amax(dim=1)


class FAB(MinimizationAttack):
    """Minimal adversarial perturbations in L-inf, L2 or L1, as strong as the published FAB.

    - untargeted: at each step the closest decision hyperplane among all classes (one forward and one
      backward pass over the batch replicated once per class);
    - ``n_target_classes=k > 0``: FAB-T, the hyperplane toward each of the k highest-scoring other classes in
      turn (one gradient per step; success is still "misclassified");
    - ``target=`` in the call: reach those classes;
    - ``restarts`` > 1 start again from random points at half the best distance found.

    :class:`FABAtEpsilon` is the same search for a fixed radius (AutoAttack's use of FAB-T).
    """

    name = "FAB"
    #: steps between two drops of finished examples in a fixed-radius search (each costs one host sync)
    compact_every = 4

    def __init__(self, norm: str | Norm = "linf", steps: int = 100, restarts: int = 1,
                 n_target_classes: int = 0, seed: int | None = 0, batch_size: int | None = None, *,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9) -> None:
        super().__init__(norm, seed=seed, batch_size=batch_size)
        self.steps = check_int("steps", steps, 1)
        self.restarts = check_int("restarts", restarts, 1)
        self.n_target_classes = check_int("n_target_classes", n_target_classes, 0)
        self.alpha_max = check_float("alpha_max", alpha_max, low=0.0, high=1.0, low_open=False, high_open=True)
        self.eta = check_float("eta", eta, low=1.0, low_open=False)
        self.beta = check_float("beta", beta, high=1.0)
        if self.n_target_classes > 0:
            self.name = "FAB-T"

    def run_min(self, model: Model, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return self.search(model, x, y, target, None)

    def search(self, model: Model, x: Tensor, y: Tensor, target: Tensor | None, stop_at: float | None) -> Tensor:
        """The smallest adversarial found per example (``x`` where none was found).

        With ``stop_at``, an example leaves the search as soon as it has an adversarial within that distance:
        a fixed-radius evaluation needs nothing smaller, and every other example's search is unchanged.
        """
        net = model.adaptive()
        logits = logits_of(net, x)
        found = is_adversarial(logits.argmax(dim=1), y, target)
        best = x.clone()
        best_norm = torch.where(found, torch.zeros_like(y, dtype=x.dtype), torch.full_like(y, float("inf"), dtype=x.dtype))
        guides: list[Tensor | None]
        if target is None and self.n_target_classes > 0:
            top = top_other_classes(logits, y, self.n_target_classes)
            guides = [top[:, j] for j in range(top.shape[1])]
        else:
            guides = [None]
        lo, hi = model.bounds
        # An example misclassified as it is has distance 0: nothing can beat it, so it is never searched.
        limit = 0.0 if stop_at is None else stop_at
        first_gap: Tensor | None = None
        for guide in guides:
            for r in range(self.restarts):
                rows = (best_norm > limit).nonzero().flatten()
                if rows.numel() == 0:
                    return best
                start = x[rows]
                if r > 0:
                    # Half the best distance found so far, else half the first linearised estimate. Drawn for
                    # the whole batch so a seed gives the same starts whichever examples are left.
                    fallback = first_gap if first_gap is not None else torch.zeros_like(best_norm)
                    radius = 0.5 * torch.where(torch.isfinite(best_norm), best_norm, fallback)
                    start = (x + self.norm.random_start(x, radius)).clamp(lo, hi)[rows]
                gap = self._descend(net, model.bounds, rows, x, y, target, guide, start, best, best_norm, stop_at)
                if first_gap is None:
                    first_gap = torch.zeros_like(best_norm)
                    first_gap[rows] = gap
        return best

    def _hyperplane(self, net: Model, xi: Tensor, y: Tensor, target: Tensor | None,
                    guide: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The linearised boundary to cross at ``xi`` (g(z) ~ val + <w, z - xi>, adversarial side g > 0)
        and the logits at ``xi``."""
        if target is not None:
            tgt = target

            def toward_target(z: Tensor) -> Tensor:
                return targeted_margin(z, tgt)
            val, grad, logits = value_and_grad(net, xi, toward_target)
            return val, flat(grad), logits
        if guide is not None:
            g_cls = guide

            def toward_guide(z: Tensor) -> Tensor:
                return z.gather(1, g_cls.unsqueeze(1)).squeeze(1) - z.gather(1, y.unsqueeze(1)).squeeze(1)
            val, grad, logits = value_and_grad(net, xi, toward_guide)
            return val, flat(grad), logits
        n = xi.shape[0]
        classes = torch.arange(net.infer_num_classes(xi), device=xi.device).expand(n, -1)
        logits, jac = class_gradients(net, xi, classes)
        jac = jac.reshape(n, classes.shape[1], -1)
        f = logits - logits.gather(1, y.unsqueeze(1))
        w = jac - jac.gather(1, y.reshape(n, 1, 1).expand(n, 1, jac.shape[2]))
        dist = f.abs() / (dual_norm(self.norm.name, w.reshape(-1, w.shape[2])).reshape(n, -1) + _TINY)
        dist = dist.scatter(1, y.unsqueeze(1), float("inf"))
        pick = dist.argmin(dim=1)
        val = f.gather(1, pick.unsqueeze(1)).squeeze(1)
        return val, w.gather(1, pick.reshape(n, 1, 1).expand(n, 1, w.shape[2])).squeeze(1), logits

    def _descend(self, net: Model, bounds: tuple[float, float], rows: Tensor, x_all: Tensor, y_all: Tensor,
                 target_all: Tensor | None, guide_all: Tensor | None, start: Tensor, best: Tensor,
                 best_norm: Tensor, stop_at: float | None) -> Tensor:
        """One FAB run from ``start`` on the examples ``rows``; updates ``best``/``best_norm`` in place.

        Returns the first linearised distance estimate per row (a scale for random restarts).
        """
        lo, hi = bounds
        name = self.norm.name

        def pick(t: Tensor | None, r: Tensor) -> Tensor | None:
            return None if t is None else t[r]

        x, y = x_all[rows], y_all[rows]
        target, guide = pick(target_all, rows), pick(guide_all, rows)
        x0 = flat(x)
        xi = start
        first_gap = torch.zeros(rows.numel(), device=x.device, dtype=x.dtype)
        live = torch.arange(rows.numel(), device=x.device)  # positions in ``rows`` still searched
        for k in range(self.steps):
            # The check at the new point cannot be merged with the next linearisation: the walk crosses the
            # boundary on almost every step and then linearises at the point it steps back to, not there.
            val, w, _ = self._hyperplane(net, xi, y, target, guide)
            xf = flat(xi)
            d_cur = project_to_hyperplane(name, w, -val, lo - xf, hi - xf)
            c_orig = -(val + (w * (x0 - xf)).sum(dim=1))
            d_orig = project_to_hyperplane(name, w, c_orig, lo - x0, hi - x0)
            n_cur, n_orig = self.norm.measure(d_cur), self.norm.measure(d_orig)
            if k == 0:
                first_gap = n_orig
            # Lean toward the original input in proportion to how far the current point still has to go.
            alpha = (n_cur / (n_cur + n_orig).clamp_min(_TINY)).clamp(max=self.alpha_max).unsqueeze(1)
            xn = ((1 - alpha) * (xf + self.eta * d_cur) + alpha * (x0 + self.eta * d_orig)).clamp(lo, hi)
            xn = xn.reshape(x.shape)
            adv = is_adversarial(logits_of(net, xn).argmax(dim=1), y, target)
            at = rows[live]
            dist = self.norm.measure(xn - x)
            better = adv & (dist < best_norm[at])
            best[at] = torch.where(bcast(better, x), xn, best[at])
            best_norm[at] = torch.where(better, dist, best_norm[at])
            # Step back toward the input from an adversarial point; keep walking from a benign one.
            xi = torch.where(bcast(adv, x), (1 - self.beta) * x + self.beta * xn, xn)
            if stop_at is not None and k % self.compact_every == self.compact_every - 1 and k < self.steps - 1:
                # Examples with an adversarial inside the radius are finished: drop them from every tensor.
                keep = (best_norm[at] > stop_at).nonzero().flatten()
                if keep.numel() == 0:
                    break
                if keep.numel() < live.numel():
                    live, x, y, x0, xi = live[keep], x[keep], y[keep], x0[keep], xi[keep]
                    target, guide = pick(target, keep), pick(guide, keep)
        return first_gap


class FABAtEpsilon(FixedEpsilonAttack):
    """FAB for a fixed radius, as AutoAttack runs FAB-T: an example is done once it has an adversarial
    within ``eps`` (and, with ``n_target_classes``, is not searched toward the remaining guide classes).

    Same parameters and search as :class:`FAB`; where no adversarial fits the ball the smallest one found
    is returned (its projection onto the ball sometimes still fools the model; success is always measured).
    """

    name = "FAB"

    def __init__(self, norm: str | Norm = "linf", steps: int = 100, restarts: int = 1,
                 n_target_classes: int = 0, seed: int | None = 0, batch_size: int | None = None, *,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9) -> None:
        super().__init__(norm, seed=seed, batch_size=batch_size)
        self._fab = FAB(norm, steps, restarts, n_target_classes, seed, batch_size, alpha_max=alpha_max, eta=eta,
                        beta=beta)
        self.steps, self.restarts, self.n_target_classes = steps, restarts, n_target_classes
        self.alpha_max, self.eta, self.beta = alpha_max, eta, beta
        self.name = self._fab.name

    def run(self, model: Model, x: Tensor, y: Tensor, eps: float, target: Tensor | None) -> Tensor:
        return self._fab.search(model, x, y, target, eps)

"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): random search on scores.

Each step changes the perturbation inside one random window (a square on images, a contiguous block of
features on tabular rows) and keeps the change only if the margin loss drops. The window shrinks on a
fixed schedule. Scores only: no gradients, so it runs on scikit-learn, ONNX Runtime, HTTP endpoints and
PyTorch models alike. Examples already misclassified, or broken along the way, stop querying.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.evasion._blackbox_common import (
    LOSSES,
    QueryLog,
    adversarial_from_scores,
    as_image,
    check_choice,
    check_positive_int,
    cross_entropy,
    margin,
    place,
    window_mask,
    window_side,
)
from bastion.attacks.evasion.base import AttackResult, FixedEpsilonAttack
from bastion.core.adapters import Capability, Model
from bastion.errors import InputError

#: the paper halves the window fraction p at these iterations of a 10,000-query run (rescaled to the budget)
_HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_REFERENCE_BUDGET = 10_000
#: the smallest L2 window: the two-halves pattern needs at least three positions to have a shape
_MIN_L2_WINDOW = 3
#: L2 initialisation tiles the input into about this many blocks per side
_L2_TILES_PER_SIDE = 5


def window_fraction(p_init: float, iteration: int, n_iterations: int) -> float:
    """Fraction of the input a window covers at ``iteration`` (the paper's piecewise-halving schedule)."""
    scaled = int(iteration / max(1, n_iterations) * _REFERENCE_BUDGET)
    halvings = sum(scaled > point for point in _HALVING_POINTS)
    return p_init / 2**halvings


def bump(size: tuple[int, int], device: torch.device, dtype: torch.dtype, transpose: bool = False) -> Tensor:
    """Unit-L2 window pattern: two halves of opposite sign, each a pile of centred rectangles.

    Ring ``k`` around a half's centre gets weight sum_{m >= k} 1/(m+1)^2, so mass concentrates in the
    middle; halves of opposite sign keep the window's mean change near zero (the paper's L2 update).
    """
    sh, sw = size
    split_rows = sh >= 2 and not (transpose and sw >= 2)
    if not split_rows and sw < 2:
        out = torch.ones(sh, sw, device=device, dtype=dtype)
        return out / out.norm()

    def half(a: int, b: int) -> Tensor:
        ii = (torch.arange(a, device=device) - a // 2).abs()
        jj = (torch.arange(b, device=device) - b // 2).abs()
        ring = torch.maximum(ii[:, None], jj[None, :])
        k = int(ring.max()) + 1
        w = 1.0 / torch.arange(1, k + 1, device=device, dtype=dtype) ** 2
        tail = w.flip(0).cumsum(0).flip(0)  # tail[r] = sum_{m >= r} w[m]
        return tail[ring]

    if split_rows:
        top = sh // 2
        out = torch.cat([half(top, sw), -half(sh - top, sw)], dim=0)
    else:
        left = sw // 2
        out = torch.cat([half(sh, left), -half(sh, sw - left)], dim=1)
    return out / out.norm()


def _random_sign(shape: Sequence[int], like: Tensor) -> Tensor:
    return torch.randint(0, 2, tuple(shape), device=like.device).to(like.dtype) * 2 - 1


class Square(FixedEpsilonAttack):
    """Square Attack, L-inf or L2, on scores only.

    ``queries`` is the per-example budget, counting the first query on the clean input. ``p_init`` is
    the starting fraction of the input a window covers. ``loss``: ``"margin"`` (default) or ``"ce"``.
    The result's ``extras["queries_per_example"]`` holds what the attack spent on each example.
    """

    name = "Square"
    needs = Capability.SCORES
    supported_norms = ("linf", "l2")

    def __init__(self, norm: str = "linf", queries: int = 5000, p_init: float = 0.8, loss: str = "margin",
                 seed: int | None = 0, batch_size: int | None = None) -> None:
        super().__init__(norm, seed=seed, batch_size=batch_size)
        self.queries = check_positive_int("queries", queries, minimum=2)
        if not (isinstance(p_init, (int, float)) and 0 < p_init <= 1):
            raise InputError("p_init", p_init, "a fraction in (0, 1]")
        self.p_init = float(p_init)
        self.loss = check_choice("loss", loss, LOSSES)
        self._log = QueryLog()

    def __call__(self, model: Any, inputs: Any, labels: Any = None, *,
                 epsilons: float | Sequence[float] | None = None, target: Any = None) -> AttackResult:
        self._log = QueryLog()
        result = super().__call__(model, inputs, labels, epsilons=epsilons, target=target)
        per_example = self._log.assign(result.success.shape[1], result.epsilons, result.success)
        if per_example is not None:
            result.extras["queries_per_example"] = per_example
        return result

    # --- the search ------------------------------------------------------------------------------
    def run(self, model: Model, x: Tensor, y: Tensor, eps: float, target: Tensor | None) -> Tensor:
        loss_fn = margin if self.loss == "margin" else cross_entropy
        lo, hi = model.bounds
        shape = x.shape
        x4 = as_image(x)
        n = x.shape[0]
        counts = torch.zeros(n, dtype=torch.long, device=x.device)

        def query(idx: Tensor, cand: Tensor) -> Tensor:
            counts[idx] += 1
            return model.scores(cand.reshape((-1, *shape[1:])))

        with torch.no_grad():
            everyone = torch.arange(n, device=x.device)
            scores = query(everyone, x4)
            best_loss = loss_fn(scores, y, target)
            done = adversarial_from_scores(scores, y, target)
            best = x4.clone()

            todo = (~done).nonzero().flatten()
            if todo.numel() > 0:
                # The paper accepts the initial perturbation unconditionally: it is the search's start.
                cand = self._init_linf(x4[todo], eps, lo, hi) if self.norm.name == "linf" \
                    else self._init_l2(x4[todo], eps, lo, hi)
                s = query(todo, cand)
                tt = None if target is None else target[todo]
                best[todo] = cand
                best_loss[todo] = loss_fn(s, y[todo], tt)
                done[todo] = adversarial_from_scores(s, y[todo], tt)

            n_iter = self.queries - 2
            for it in range(n_iter):
                todo = (~done).nonzero().flatten()
                if todo.numel() == 0:
                    break
                p = window_fraction(self.p_init, it, n_iter)
                step = self._step_linf if self.norm.name == "linf" else self._step_l2
                cand = step(x4[todo], best[todo], eps, p, lo, hi)
                s = query(todo, cand)
                tt = None if target is None else target[todo]
                cand_loss = loss_fn(s, y[todo], tt)
                adv = adversarial_from_scores(s, y[todo], tt)
                keep = (cand_loss < best_loss[todo]) | adv
                best[todo] = torch.where(keep.reshape(-1, 1, 1, 1), cand, best[todo])
                best_loss[todo] = torch.where(keep, cand_loss, best_loss[todo])
                done[todo] = adv
        self._log.add(counts)
        return best.reshape(shape)

    # --- L-inf: vertices of the box ------------------------------------------------------------------
    def _init_linf(self, x4: Tensor, eps: float, lo: float, hi: float) -> Tensor:
        # Vertical stripes on images (one sign per channel and column); one sign per feature on rows.
        n, c, _, w = x4.shape
        return (x4 + eps * _random_sign((n, c, 1, w), x4)).clamp(lo, hi)

    def _step_linf(self, x4: Tensor, best: Tensor, eps: float, p: float, lo: float, hi: float) -> Tensor:
        n, c = x4.shape[:2]
        mask, _, _ = window_mask(n, x4, window_side(p, x4))
        sign = _random_sign((n, c, 1, 1), x4)
        cand = torch.where(mask.bool(), (x4 + eps * sign).clamp(lo, hi), best)
        # A draw that reproduces the current window wastes a query; the opposite signs cannot.
        same = ((cand - best).abs() * mask).flatten(1).amax(dim=1) < 1e-7
        if bool(same.any()):
            flipped = torch.where(mask.bool(), (x4 - eps * sign).clamp(lo, hi), best)
            cand = torch.where(same.reshape(-1, 1, 1, 1), flipped, cand)
        return cand

    # --- L2: mass moved between windows, always on the sphere ------------------------------------------
    def _init_l2(self, x4: Tensor, eps: float, lo: float, hi: float) -> Tensor:
        n, c, h, w = x4.shape
        th = max(1, h // _L2_TILES_PER_SIDE) if h > 1 else 1
        tw = max(1, w // _L2_TILES_PER_SIDE)
        nh, nw = h // th, w // tw
        tile = bump((th, tw), x4.device, x4.dtype).repeat(nh, nw)
        signs = _random_sign((n, c, nh, nw), x4).repeat_interleave(th, 2).repeat_interleave(tw, 3)
        delta = torch.zeros_like(x4)
        r0, c0 = (h - nh * th) // 2, (w - nw * tw) // 2
        delta[:, :, r0:r0 + nh * th, c0:c0 + nw * tw] = tile * signs
        return (x4 + _to_radius(delta, eps)).clamp(lo, hi)

    def _step_l2(self, x4: Tensor, best: Tensor, eps: float, p: float, lo: float, hi: float) -> Tensor:
        n, c = x4.shape[:2]
        size = window_side(p, x4, minimum=_MIN_L2_WINDOW)
        delta = best - x4
        mask1, r1, c1 = window_mask(n, x4, size)
        mask2, _, _ = window_mask(n, x4, size)
        union = torch.maximum(mask1, mask2)

        def channel_norm(t: Tensor) -> Tensor:
            return t.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()

        image_norm = delta.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        transpose = bool(torch.rand(()) < 0.5)
        pattern = place(bump(size, x4.device, x4.dtype, transpose), x4, r1, c1)
        # New window 1 = fresh pattern + its old content (normalised); window 2 is emptied and its mass,
        # plus whatever the budget still allows, goes to window 1.
        new = pattern * _random_sign((n, c, 1, 1), x4) + delta * mask1 / (channel_norm(delta * mask1) + 1e-10)
        budget = ((eps**2 - image_norm**2).clamp_min(0) / c + channel_norm(delta * union) ** 2).sqrt()
        new = new / channel_norm(new).clamp_min(1e-12) * budget
        delta = delta * (1 - union) + new * mask1
        return (x4 + _to_radius(delta, eps)).clamp(lo, hi)


def _to_radius(delta: Tensor, eps: float) -> Tensor:
    """Scale each example's perturbation to L2 norm ``eps`` (the L2 search stays on the sphere)."""
    norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *([1] * (delta.dim() - 1)))
    return delta / norm * eps


__all__ = ["Square", "bump", "window_fraction"]

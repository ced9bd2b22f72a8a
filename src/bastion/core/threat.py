"""Threat models and the geometry of each norm.

A norm is exactly three operations (random start, steepest-ascent direction, projection) plus a
measure; every gradient attack is written once over them, so L-inf, L2 and L1 share one descent loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bastion.errors import InputError


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example vector (N,) so it broadcasts against a batch like (N, ...)."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


class Norm:
    """Geometry of an Lp ball. Subclasses define the three operations attacks need."""

    name: str = ""
    p: float = 0.0

    def measure(self, delta: Tensor) -> Tensor:
        """Per-example norm of a perturbation batch, shape (N,)."""
        raise NotImplementedError

    def random_start(self, like: Tensor, eps: Tensor) -> Tensor:
        """A random perturbation inside the ball of radius eps (per example, shape (N,))."""
        raise NotImplementedError

    def ascent(self, grad: Tensor) -> Tensor:
        """The unit-norm direction of steepest ascent for this norm's dual."""
        raise NotImplementedError

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        """Project a perturbation onto the ball of radius eps (per example)."""
        raise NotImplementedError

    def step_in_box(self, grad: Tensor, x_adv: Tensor, lo: float, hi: float, size: float | Tensor) -> Tensor:
        """An ascent step of norm ``size`` (a number or one per example) from ``x_adv`` inside [lo, hi].

        The plain steepest-ascent step by default; clipping to the bounds happens in the projection.
        """
        scale = size if isinstance(size, float | int) else _bcast(size, grad)
        return scale * self.ascent(grad)

    def project_in_box(self, x: Tensor, cand: Tensor, eps: Tensor, lo: float, hi: float) -> Tensor:
        """The point of {x + d : |d| <= eps} inside [lo, hi] for ``cand`` (projection, then clipping)."""
        return (x + self.project(cand - x, eps)).clamp(lo, hi)

    def __repr__(self) -> str:
        return self.name


class LinfNorm(Norm):
    name = "linf"
    p = math.inf

    def measure(self, delta: Tensor) -> Tensor:
        return _flat(delta).abs().amax(dim=1)

    def random_start(self, like: Tensor, eps: Tensor) -> Tensor:
        return (torch.rand_like(like) * 2 - 1) * _bcast(eps, like)

    def ascent(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        e = _bcast(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)


class L2Norm(Norm):
    name = "l2"
    p = 2.0

    def measure(self, delta: Tensor) -> Tensor:
        return _flat(delta).norm(p=2, dim=1)

    def random_start(self, like: Tensor, eps: Tensor) -> Tensor:
        # Uniform in the ball: direction from a Gaussian, radius ~ U^(1/d).
        d = _flat(like).shape[1]
        g = torch.randn_like(like)
        g = g / _bcast(_flat(g).norm(dim=1).clamp_min(1e-12), like)
        r = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) ** (1.0 / d)
        return g * _bcast(r * eps, like)

    def ascent(self, grad: Tensor) -> Tensor:
        n = _flat(grad).norm(dim=1).clamp_min(1e-12)
        return grad / _bcast(n, grad)

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        n = _flat(delta).norm(dim=1)
        factor = torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
        return delta * _bcast(factor, delta)


#: halvings of the L1-box projection's threshold interval: 2^-40 of the largest coordinate is below float32 noise
_L1_BISECTIONS = 40


class L1Norm(Norm):
    name = "l1"
    p = 1.0

    #: fraction of coordinates the sparse L1 ascent step moves (Tramer & Boneh's SLIDE uses the top 1-5 %)
    sparsity_quantile: float = 0.99

    def measure(self, delta: Tensor) -> Tensor:
        return _flat(delta).abs().sum(dim=1)

    def random_start(self, like: Tensor, eps: Tensor) -> Tensor:
        # Laplace direction normalised to the L1 sphere, radius ~ U^(1/d): uniform in the L1 ball.
        d = _flat(like).shape[1]
        lap = torch.distributions.Laplace(0.0, 1.0).sample(like.shape).to(like.device, like.dtype)
        lap = lap / _bcast(_flat(lap).abs().sum(dim=1).clamp_min(1e-12), like)
        r = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) ** (1.0 / d)
        return lap * _bcast(r * eps, like)

    def ascent(self, grad: Tensor) -> Tensor:
        # Steepest L1 ascent moves one coordinate; moving the top few percent converges far faster.
        g = _flat(grad)
        thresh = torch.quantile(g.abs().float(), self.sparsity_quantile, dim=1, keepdim=True).to(g.dtype)
        mask = g.abs() >= thresh
        s = g.sign() * mask
        s = s / s.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
        return s.reshape(grad.shape)

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        # Exact Euclidean projection onto the L1 ball (Duchi et al. 2008), batched by sorting.
        flat = _flat(delta)
        absd = flat.abs()
        inside = absd.sum(dim=1) <= eps
        mu, _ = torch.sort(absd, dim=1, descending=True)
        cssv = mu.cumsum(dim=1) - eps.unsqueeze(1)
        ind = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
        cond = (mu - cssv / ind) > 0
        rho = cond.shape[1] - 1 - torch.flip(cond, dims=[1]).to(torch.int64).argmax(dim=1, keepdim=True)
        theta = cssv.gather(1, rho) / (rho + 1).to(flat.dtype)
        proj = flat.sign() * (absd - theta).clamp_min(0)
        # A zero radius has no positive coordinate to keep: theta's fallback would leave a non-zero delta.
        proj = torch.where((eps <= 0).unsqueeze(1), torch.zeros_like(proj), proj)
        out = torch.where(inside.unsqueeze(1), flat, proj)
        return out.reshape(delta.shape)

    # The box matters for L1 ("Mind the box", Croce & Hein, ICML 2021): a sparse step spends its whole
    # budget on a few coordinates, and when those sit at a bound (a black digit background) clipping throws
    # the step away. The step here is the best one that fits the box: coordinates in order of |gradient|,
    # each given at most its room towards the bound and at most size/k (k: the sparse step's width), until
    # the step's L1 size is spent. The projection is onto the intersection of the ball and the box.
    def step_in_box(self, grad: Tensor, x_adv: Tensor, lo: float, hi: float, size: float | Tensor) -> Tensor:
        g, xa = _flat(grad), _flat(x_adv)
        room = torch.where(g > 0, hi - xa, xa - lo).clamp_min(0).masked_fill(g == 0, 0)
        k = max(1, math.ceil((1 - self.sparsity_quantile) * g.shape[1]))
        total = torch.as_tensor(size, dtype=g.dtype, device=g.device).reshape(-1, 1).expand(g.shape[0], 1)
        order = g.abs().argsort(dim=1, descending=True)
        cap = torch.minimum(room, total / k).gather(1, order)
        before = cap.cumsum(dim=1) - cap
        share = torch.minimum(cap, (total - before).clamp_min(0))
        step = torch.zeros_like(g).scatter(1, order, share)
        return (g.sign() * step).reshape(grad.shape)

    def project_in_box(self, x: Tensor, cand: Tensor, eps: Tensor, lo: float, hi: float) -> Tensor:
        # Exact Euclidean projection onto {|d|_1 <= eps} and lo <= x + d <= hi. The problem is separable:
        # d_i(theta) = clip(soft_threshold(z_i, theta), lo - x_i, hi - x_i), with theta >= 0 the smallest value
        # whose L1 norm fits; that norm falls monotonically in theta, so bisection finds it.
        z = _flat(cand - x)
        low, high = _flat(lo - x), _flat(hi - x)

        def at(theta: Tensor) -> Tensor:
            return torch.minimum(torch.maximum(z.sign() * (z.abs() - theta).clamp_min(0), low), high)

        budget = eps.to(z.dtype).reshape(-1, 1)
        a = torch.zeros_like(budget)  # theta too small (or exactly right when the clipped point fits)
        b = z.abs().amax(dim=1, keepdim=True)  # theta large enough: d = 0
        fits = at(a).abs().sum(dim=1, keepdim=True) <= budget
        for _ in range(_L1_BISECTIONS):
            mid = (a + b) / 2
            ok = at(mid).abs().sum(dim=1, keepdim=True) <= budget
            b = torch.where(ok, mid, b)
            a = torch.where(ok, a, mid)
        d = torch.where(fits, at(torch.zeros_like(b)), at(b))
        return x + d.reshape(x.shape)


Linf = LinfNorm()
L2 = L2Norm()
L1 = L1Norm()

_NORMS: dict[str, Norm] = {"linf": Linf, "inf": Linf, "l_inf": Linf, "l2": L2, "l1": L1}


def get_norm(norm: str | Norm) -> Norm:
    """Return the norm object for a name such as 'linf', 'l2' or 'l1'."""
    if isinstance(norm, Norm):
        return norm
    key = str(norm).lower().replace("-", "_").replace(" ", "")
    if key not in _NORMS:
        raise InputError("norm", repr(norm), "one of 'linf', 'l2', 'l1'")
    return _NORMS[key]


def check_epsilons(epsilons: float | Sequence[float] | None, argument: str = "epsilons") -> list[float]:
    """Validate epsilons: finite and non-negative. A scalar becomes a one-element list."""
    if epsilons is None:
        raise InputError(argument, None, "a non-negative number or a list of them")
    vals = [epsilons] if isinstance(epsilons, (int, float)) else list(epsilons)
    if not vals:
        raise InputError(argument, "an empty list", "at least one epsilon")
    out: list[float] = []
    for v in vals:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InputError(argument, repr(v), "a number") from None
        if not math.isfinite(f) or f < 0:
            raise InputError(argument, v, "a finite number >= 0")
        out.append(f)
    return out


@dataclass(frozen=True)
class ThreatModel:
    """What the adversary may do: an Lp ball of radius epsilon inside the input bounds.

    ``epsilons`` may hold several radii, giving a robustness curve from one call.
    """

    norm: Norm | str = "linf"
    epsilons: tuple[float, ...] = (8 / 255,)
    bounds: tuple[float, float] | None = None
    targeted: bool = False
    _norm_obj: Norm = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_norm_obj", get_norm(self.norm))
        object.__setattr__(self, "norm", self._norm_obj.name)
        eps = check_epsilons(self.epsilons)
        object.__setattr__(self, "epsilons", tuple(eps))
        if self.bounds is not None:
            lo, hi = self.bounds
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise InputError("bounds", self.bounds, "(low, high) with low < high, both finite")

    @property
    def geometry(self) -> Norm:
        return self._norm_obj

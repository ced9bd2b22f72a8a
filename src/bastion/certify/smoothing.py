"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): predict and certify with Gaussian noise.

The smoothed classifier g(x) returns the class the base model picks most often under x + N(0, sigma^2 I).
Monte-Carlo sampling runs on the model's device as one flat stream of (example, draw) pairs cut into
batches of ``batch_size``: every forward pass is full whatever ``n`` is, and class counts are
accumulated on the device, so nothing is copied to the host until all draws are done.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.attacks.evasion.base import PRECISIONS, autocast
from bastion.certify.stats import binomial_pvalue, certified_radius, check_alpha
from bastion.core.adapters import Capability, Model, wrap
from bastion.core.validation import check_inputs, check_labels
from bastion.errors import InputError

#: the class returned when the smoothed classifier abstains
ABSTAIN = -1

#: progress callbacks receive (examples done, examples in all)
Progress = Callable[[int, int], None]


def _positive_int(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(argument, value, "a positive whole number")
    return int(value)


@dataclass
class CertifyResult:
    """Per-example outcome of :meth:`Smoothed.certify` (tensors on the CPU).

    ``prediction`` is the smoothed class or :data:`ABSTAIN` (-1); ``radius`` the certified L2 radius
    (0 where abstained); ``p_lower`` the Clopper-Pearson lower bound on the top class's probability;
    ``counts`` how many of the ``n`` estimation draws hit the predicted class.
    """

    prediction: Tensor
    radius: Tensor
    p_lower: Tensor
    counts: Tensor
    sigma: float
    n0: int
    n: int
    alpha: float
    seconds: float

    @property
    def abstained(self) -> Tensor:
        return self.prediction == ABSTAIN

    def certified_accuracy(self, labels: Any, radii: float | Sequence[float] = 0.0) -> list[float]:
        """Fraction of examples predicted correctly with a certified radius of at least each r in ``radii``."""
        y = check_labels(labels, self.prediction.shape[0], argument="labels")
        rs = [float(radii)] if isinstance(radii, (int, float)) else [float(r) for r in radii]
        if not rs or any(not math.isfinite(r) or r < 0 for r in rs):
            raise InputError("radii", radii, "one or more finite radii >= 0")
        correct = self.prediction == y
        return [float((correct & (self.radius >= r)).double().mean()) for r in rs]

    def to_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha, "seconds": self.seconds,
                "prediction": self.prediction.tolist(), "radius": self.radius.tolist(),
                "p_lower": self.p_lower.tolist(), "abstained": int(self.abstained.sum())}


class Smoothed:
    """A base classifier smoothed by Gaussian noise of standard deviation ``sigma`` (in input units).

    ``batch_size`` is the number of noisy inputs per forward pass; ``precision`` ('fp32', 'bf16',
    'fp16') autocasts the forward pass; ``seed`` makes every call reproducible without touching the
    global random stream. ``num_classes`` is only needed for models that return labels, not scores.
    """

    def __init__(self, model: Any, sigma: float, *, batch_size: int = 1000, precision: str = "fp32",
                 num_classes: int | None = None, seed: int | None = 0) -> None:
        self.model: Model = wrap(model)
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise InputError("sigma", sigma, "a finite noise level > 0, in input units")
        self.sigma = float(sigma)
        self.batch_size = _positive_int(batch_size, "batch_size")
        if precision not in PRECISIONS:
            raise InputError("precision", precision, f"one of {PRECISIONS}")
        self.precision = precision
        if num_classes is not None:
            self.model.num_classes = _positive_int(num_classes, "num_classes")
        self.seed = seed

    def __repr__(self) -> str:
        return (f"Smoothed({self.model.kind}, sigma={self.sigma}, batch_size={self.batch_size}, "
                f"precision={self.precision!r})")

    # --- sampling ----------------------------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        gen = torch.Generator(device=self.model.device)
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed)
        return gen

    def _classes(self, batch: Tensor) -> Tensor:
        m = self.model
        with torch.no_grad(), autocast(m.device, self.precision):
            if Capability.SCORES in m.capabilities:
                return m.scores(batch).argmax(dim=1)
            return m.predict(batch).to(m.device).long()

    def _num_classes(self, x: Tensor) -> int:
        if self.model.num_classes is None and Capability.SCORES not in self.model.capabilities:
            raise InputError("num_classes", None, "the number of classes, for a model that returns labels only")
        return self.model.infer_num_classes(x)

    def sample_counts(self, x: Tensor, num: int, gen: torch.Generator | None = None,
                      progress: Progress | None = None) -> Tensor:
        """Class counts (N, C) over ``num`` noisy copies of each example, left on the model's device.

        ``x`` must already be a validated float batch on the model's device (see ``predict``/``certify``);
        ``gen`` continues a caller's noise stream (default: a fresh one from ``seed``).
        """
        gen = self._generator() if gen is None else gen
        n_ex = x.shape[0]
        n_cls = self._num_classes(x)
        total = n_ex * num
        bs = min(self.batch_size, total)
        dev = x.device
        counts = torch.zeros(n_ex * n_cls, dtype=torch.int64, device=dev)
        offsets = torch.arange(bs, device=dev)
        ones = torch.ones(bs, dtype=torch.int64, device=dev)
        noise = torch.empty((bs, *x.shape[1:]), dtype=x.dtype, device=dev)
        reported = 0
        for start in range(0, total, bs):
            size = min(bs, total - start)
            example = (offsets[:size] + start).div_(num, rounding_mode="floor")
            batch = x.index_select(0, example).add_(noise[:size].normal_(0.0, self.sigma, generator=gen))
            pred = self._classes(batch)
            # scatter_add_ rather than bincount: CUDA's bincount reads the max back to size its output,
            # a host sync per batch; scatter into a fixed (N * C) table needs none.
            counts.scatter_add_(0, example * n_cls + pred, ones[:size])
            done = (start + size) // num
            if progress is not None and done > reported:
                reported = done
                progress(done, n_ex)
        return counts.view(n_ex, n_cls)

    def _prepare(self, x: Any) -> Tensor:
        m = self.model
        return check_inputs(x, m.bounds, device=m.device).float()

    # --- the two procedures of Cohen et al. ----------------------------------------------------------
    def predict(self, x: Any, n: int = 1000, alpha: float = 0.001) -> Tensor:
        """Smoothed class of each example, or :data:`ABSTAIN` (-1) where the top two classes are not
        separated by a two-sided binomial test at level ``alpha`` (wrong with probability <= alpha)."""
        n = _positive_int(n, "n")
        a = check_alpha(alpha)
        xt = self._prepare(x)
        counts = self.sample_counts(xt, n, self._generator())
        if counts.shape[1] < 2:
            raise InputError("model", f"{counts.shape[1]} output class", "at least 2 classes")
        top = counts.topk(2, dim=1)
        n_a, n_b = top.values[:, 0].cpu().numpy(), top.values[:, 1].cpu().numpy()
        separated = torch.from_numpy(binomial_pvalue(n_a, n_a + n_b) <= a)
        return torch.where(separated, top.indices[:, 0].cpu(), torch.full_like(top.indices[:, 0].cpu(), ABSTAIN))

    def certify(self, x: Any, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                progress: Progress | None = None) -> CertifyResult:
        """Certify each example: pick the top class from ``n0`` draws, then bound its probability from
        ``n`` fresh draws; abstain unless the lower bound exceeds 1/2. ``progress(done, total)`` is
        called as the estimation draws of each example finish."""
        n0 = _positive_int(n0, "n0")
        n = _positive_int(n, "n")
        a = check_alpha(alpha)
        # Even n correct draws out of n only bound pA below by about alpha^(1/n): too few draws cap the radius.
        best, _ = certified_radius(np.array([n]), n, a, self.sigma)
        if float(best[0]) < self.sigma / 2:
            warnings.warn(f"certify: with n={n} draws and alpha={a:g} no radius above {float(best[0]):.3g} can be "
                          f"certified (sigma={self.sigma:g}); Cohen et al. use n=100,000", UserWarning, stacklevel=2)
        xt = self._prepare(x)
        t0 = time.perf_counter()
        gen = self._generator()
        # Selection and estimation use separate draws: reusing the selection draws would bias pA upwards.
        guess = self.sample_counts(xt, n0, gen).argmax(dim=1)
        counts = self.sample_counts(xt, n, gen, progress)
        n_a = counts.gather(1, guess.unsqueeze(1)).squeeze(1).cpu().numpy()
        radius, p_lower = certified_radius(n_a, n, a, self.sigma)
        seconds = time.perf_counter() - t0
        certified = torch.from_numpy(p_lower > 0.5)
        prediction = torch.where(certified, guess.cpu(), torch.full_like(guess.cpu(), ABSTAIN))
        return CertifyResult(prediction=prediction, radius=torch.from_numpy(radius), p_lower=torch.from_numpy(p_lower),
                             counts=torch.from_numpy(n_a.astype(np.int64)), sigma=self.sigma, n0=n0, n=n, alpha=a,
                             seconds=seconds)

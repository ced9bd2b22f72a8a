"""Binomial statistics behind randomized smoothing (Cohen, Rosenfeld & Kolter 2019).

Two questions are asked of Monte-Carlo counts, both at level ``alpha``:
- predict: is the top class really more likely than the runner-up? A two-sided binomial test of
  ``nA`` successes in ``nA + nB`` trials against p = 1/2; abstain unless the p-value is <= alpha.
- certify: how likely is the top class at least? The one-sided Clopper-Pearson lower bound ``pA_lower``
  on the probability of the top class; the certified L2 radius is ``sigma * Phi^-1(pA_lower)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import beta, binom, norm

from bastion.errors import InputError


def check_alpha(alpha: float) -> float:
    """Validate a significance level: a number strictly between 0 and 1."""
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise InputError("alpha", alpha, "a significance level strictly between 0 and 1, e.g. 0.001")
    return a


def _counts(successes: ArrayLike, trials: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    k = np.asarray(successes, dtype=np.float64)
    n = np.broadcast_to(np.asarray(trials, dtype=np.float64), k.shape)
    if np.any(k < 0) or np.any(k > n) or np.any(k != np.round(k)):
        raise InputError("successes", "counts outside [0, trials] or not whole", "whole counts in [0, trials]")
    return k, n


def clopper_pearson_lower(successes: ArrayLike, trials: ArrayLike, alpha: float) -> NDArray[np.float64]:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    The bound is the p at which seeing ``successes`` or more in ``trials`` has probability alpha, which
    is the alpha-quantile of Beta(k, n - k + 1); with no successes it is 0.
    """
    a = check_alpha(alpha)
    k, n = _counts(successes, trials)
    safe_k = np.maximum(k, 1.0)  # Beta needs a > 0; k = 0 is overwritten below
    out = np.where(k > 0, beta.ppf(a, safe_k, n - k + 1.0), 0.0)
    return np.asarray(out, dtype=np.float64)


def binomial_pvalue(successes: ArrayLike, trials: ArrayLike) -> NDArray[np.float64]:
    """Two-sided p-value of ``successes`` in ``trials`` under p = 1/2 (same as scipy's ``binomtest``).

    The null is symmetric, so the outcomes at least as unlikely as k are the two tails beyond
    min(k, n - k): p = 2 * P(X <= min(k, n - k)), capped at 1. No trials gives p = 1.
    """
    k, n = _counts(successes, trials)
    tail = binom.cdf(np.minimum(k, n - k), n, 0.5)
    out = np.where(n > 0, np.minimum(1.0, 2.0 * tail), 1.0)
    return np.asarray(out, dtype=np.float64)


def certified_radius(successes: ArrayLike, trials: ArrayLike, alpha: float,
                     sigma: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Certified L2 radius and ``pA_lower`` for the top class's count; radius 0 where pA_lower <= 1/2.

    Theorem 1 of Cohen et al. with the runner-up bounded by 1 - pA_lower: R = sigma * Phi^-1(pA_lower).
    """
    if not float(sigma) > 0:
        raise InputError("sigma", sigma, "a noise level > 0")
    p_lower = clopper_pearson_lower(successes, trials, alpha)
    radius = np.where(p_lower > 0.5, float(sigma) * norm.ppf(np.clip(p_lower, 0.5, 1.0)), 0.0)
    return np.asarray(radius, dtype=np.float64), p_lower

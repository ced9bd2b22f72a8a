"""Two-sample tests of a window against reference data: per-feature Kolmogorov-Smirnov and kernel MMD.

scipy provides the KS test; the MMD permutation test is a few lines of linear algebra, written here so the
product needs no detector library (alibi-detect, the usual choice, is under the Business Source Licence).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import stats

from bastion.monitor._checks import as_rows, check_alpha, require_fitted
from bastion.monitor.result import DriftResult

Correction = Literal["bonferroni", "fdr"]


def combine_p_values(p: np.ndarray, correction: Correction) -> float:
    """One p-value for "no feature changed" from per-feature p-values.

    Bonferroni: d * min p. "fdr": Simes' combination, min_k d * p_(k) / k, the smallest p at which
    Benjamini-Hochberg rejects anything; it is valid under independence and positive dependence and never
    larger than Bonferroni's.
    """
    d = len(p)
    if correction == "bonferroni":
        return float(min(1.0, d * float(p.min())))
    ranked = np.sort(p) * d / np.arange(1, d + 1)
    return float(min(1.0, float(ranked.min())))


class KSDrift:
    """Per-feature two-sample Kolmogorov-Smirnov tests, corrected for testing every feature.

    Under no change the window is flagged with probability at most ``alpha`` (for discrete features such
    as pixel intensities the KS test is conservative, so the real rate is lower).
    """

    def __init__(self, alpha: float = 0.01, correction: Correction = "fdr") -> None:
        self.alpha = alpha
        self.correction = correction

    def fit(self, reference: Any) -> KSDrift:
        check_alpha(self.alpha)
        if self.correction not in ("bonferroni", "fdr"):
            from bastion.errors import InputError

            raise InputError("correction", self.correction, "'bonferroni' or 'fdr'")
        self.reference_ = as_rows(reference, "reference")
        self.n_features_in_ = self.reference_.shape[1]
        return self

    def test(self, window: Any) -> DriftResult:
        require_fitted(self, "reference_")
        x = as_rows(window, "window", width=self.n_features_in_)
        res = stats.ks_2samp(self.reference_, x, axis=0)
        p = np.nan_to_num(np.asarray(res.pvalue, dtype=np.float64), nan=1.0)
        stat = np.nan_to_num(np.asarray(res.statistic, dtype=np.float64), nan=0.0)
        p_window = combine_p_values(p, self.correction)
        worst = int(np.argmin(p))
        return DriftResult("ks", p_window < self.alpha, p_window, float(stat.max()), self.alpha, len(x),
                           {"correction": self.correction, "features": int(self.n_features_in_),
                            "most_changed_feature": worst, "features_below_alpha": int((p < self.alpha).sum())})

    def predict(self, window: Any) -> bool:
        return self.test(window).drift


class MMDDrift:
    """Kernel two-sample test (Gretton et al. 2012) with a Gaussian kernel and a permutation p-value.

    The bandwidth is the median pairwise distance of the reference (the usual heuristic); the reference is
    subsampled to ``max_reference`` rows so one test stays a few milliseconds. The permutation test is exact
    for any statistic, so the biased (V-statistic) MMD is used: it is one quadratic form per permutation.
    """

    def __init__(self, alpha: float = 0.01, n_permutations: int = 200, max_reference: int = 500,
                 seed: int = 0) -> None:
        self.alpha = alpha
        self.n_permutations = n_permutations
        self.max_reference = max_reference
        self.seed = seed

    def fit(self, reference: Any) -> MMDDrift:
        check_alpha(self.alpha)
        if int(self.n_permutations) < 20:
            from bastion.errors import InputError

            raise InputError("n_permutations", self.n_permutations, "at least 20 (the p-value's resolution)")
        ref = as_rows(reference, "reference")
        rng = np.random.default_rng(self.seed)
        if len(ref) > self.max_reference:
            ref = ref[rng.choice(len(ref), self.max_reference, replace=False)]
        self.reference_ = ref
        self.n_features_in_ = ref.shape[1]
        d = _sq_dists(ref, ref)
        med = float(np.median(d[np.triu_indices(len(ref), k=1)]))
        self.bandwidth_ = float(np.sqrt(med)) if med > 0 else 1.0
        return self

    def test(self, window: Any) -> DriftResult:
        require_fitted(self, "reference_")
        x = as_rows(window, "window", width=self.n_features_in_)
        z = np.concatenate([self.reference_, x])
        k = np.exp(-_sq_dists(z, z) / (2 * self.bandwidth_ ** 2))
        m, n = len(self.reference_), len(x)
        rng = np.random.default_rng(self.seed)
        labels = np.zeros((len(z), self.n_permutations + 1), dtype=bool)
        labels[m:, 0] = True  # column 0: the observed split
        for j in range(1, self.n_permutations + 1):
            labels[rng.choice(len(z), n, replace=False), j] = True
        w = np.where(labels, -1.0 / n, 1.0 / m)
        mmd2 = np.einsum("ip,ip->p", w, k @ w)
        observed = float(mmd2[0])
        p = float((1 + np.sum(mmd2[1:] >= observed)) / (1 + self.n_permutations))
        return DriftResult("mmd", p < self.alpha, p, observed, self.alpha, n,
                           {"bandwidth": self.bandwidth_, "permutations": int(self.n_permutations)})

    def predict(self, window: Any) -> bool:
        return self.test(window).drift


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)

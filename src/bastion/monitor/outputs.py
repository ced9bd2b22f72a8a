"""Tests on what the model answers: prediction mix, confidence, and how often inputs sit on a boundary.

An evasion or probing campaign shows here before it shows in the inputs: adversarial examples and
decision-boundary probes (HopSkipJump, extraction by active learning) have small top-1 margins, and a
shifted population changes which classes the model predicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from bastion.errors import InputError
from bastion.monitor._checks import as_rows, check_alpha, require_fitted
from bastion.monitor.result import DriftResult


def as_probabilities(scores: Any, argument: str = "scores") -> np.ndarray:
    """Rows of class probabilities; logits (rows that are not distributions) go through a softmax."""
    s = as_rows(scores, argument, min_rows=1)
    if s.shape[1] < 2:
        raise InputError(argument, f"{s.shape[1]} score column", "one score per class (at least 2)")
    if (s >= 0).all() and np.allclose(s.sum(1), 1.0, atol=1e-3):
        return s
    e = np.exp(s - s.max(1, keepdims=True))
    return np.asarray(e / e.sum(1, keepdims=True))


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])


class PredictionShift:
    """Chi-square test of homogeneity between the reference's and the window's predicted-class counts."""

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = alpha

    def fit(self, reference_scores: Any) -> PredictionShift:
        check_alpha(self.alpha)
        probs = as_probabilities(reference_scores, "reference_scores")
        self.n_classes_ = probs.shape[1]
        self.reference_counts_ = np.bincount(probs.argmax(1), minlength=self.n_classes_)
        return self

    def test(self, window_scores: Any) -> DriftResult:
        require_fitted(self, "reference_counts_")
        probs = as_probabilities(window_scores, "window_scores")
        if probs.shape[1] != self.n_classes_:
            raise InputError("window_scores", f"{probs.shape[1]} classes", f"{self.n_classes_}, as in the reference")
        counts = np.bincount(probs.argmax(1), minlength=self.n_classes_)
        table = np.stack([self.reference_counts_, counts])
        table = table[:, table.sum(0) > 0]
        if table.shape[1] < 2:
            return DriftResult("predictions", False, 1.0, 0.0, self.alpha, len(probs), {"classes_seen": 1})
        chi2, p, dof, _ = stats.chi2_contingency(table)
        ref_share = self.reference_counts_ / self.reference_counts_.sum()
        share = counts / counts.sum()
        return DriftResult("predictions", bool(p < self.alpha), float(p), float(chi2), self.alpha, len(probs),
                           {"dof": int(dof), "most_overpredicted_class": int(np.argmax(share - ref_share))})


class ConfidenceDrop:
    """One-sided Mann-Whitney test that the window's top-1 probabilities are lower than the reference's."""

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = alpha

    def fit(self, reference_scores: Any) -> ConfidenceDrop:
        check_alpha(self.alpha)
        self.reference_confidence_ = as_probabilities(reference_scores, "reference_scores").max(1)
        return self

    def test(self, window_scores: Any) -> DriftResult:
        require_fitted(self, "reference_confidence_")
        conf = as_probabilities(window_scores, "window_scores").max(1)
        res = stats.mannwhitneyu(conf, self.reference_confidence_, alternative="less")
        return DriftResult("confidence", bool(res.pvalue < self.alpha), float(res.pvalue), float(res.statistic),
                           self.alpha, len(conf),
                           {"mean_reference": float(self.reference_confidence_.mean()),
                            "mean_window": float(conf.mean())})


class NearBoundaryRate:
    """Binomial test that more of the window sits near the decision boundary than the reference did.

    "Near" is a top-1 margin below the reference's ``quantile`` (so about that share of clean traffic is
    near by construction); the window's share is tested against the reference's measured share.
    """

    def __init__(self, alpha: float = 0.01, quantile: float = 0.05) -> None:
        self.alpha = alpha
        self.quantile = quantile

    def fit(self, reference_scores: Any) -> NearBoundaryRate:
        check_alpha(self.alpha)
        if not 0.0 < float(self.quantile) < 0.5:
            raise InputError("quantile", self.quantile, "a share strictly between 0 and 0.5")
        m = margins(as_probabilities(reference_scores, "reference_scores"))
        self.threshold_ = float(np.quantile(m, self.quantile))
        # The reference rate, with one pseudo-count each way so a tiny reference never claims a rate of zero.
        self.reference_rate_ = float(((m <= self.threshold_).sum() + 1) / (len(m) + 2))
        return self

    def test(self, window_scores: Any) -> DriftResult:
        require_fitted(self, "threshold_")
        m = margins(as_probabilities(window_scores, "window_scores"))
        k = int((m <= self.threshold_).sum())
        p = float(stats.binomtest(k, len(m), self.reference_rate_, alternative="greater").pvalue)
        return DriftResult("boundary", p < self.alpha, p, k / len(m), self.alpha, len(m),
                           {"margin_threshold": self.threshold_, "reference_rate": self.reference_rate_})

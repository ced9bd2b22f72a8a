"""A robust-statistics detector in the spirit of SPECTRE (Hayase et al. 2021).

Per class: project the penultimate activations on their top principal components, whiten them with a
robust covariance (Minimum Covariance Determinant, which ignores up to half the records, so a poison
cluster cannot pull the estimate towards itself), and score each record by its whitened norm, optionally
re-weighted by quantum-entropy scoring (``alpha`` > 0). Scores are divided by the class median, so one
threshold serves every class; it is the median over classes of each class's ``1 - 0.4 max_fpr``
quantile: poisoned classes are a minority, so the median is a clean class's tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bastion.detect._perclass import PerClassFeatureDetector
from bastion.errors import InputError


@dataclass
class _Whitener:
    components: np.ndarray  # (k, D)
    mean: np.ndarray  # (D,)
    location: np.ndarray  # (k,)
    whiten: np.ndarray  # (k, k): robust covariance^-1/2
    que: np.ndarray  # (k, k): QUE weighting (identity when alpha is 0)
    scale: float  # median score of the class


class Spectre(PerClassFeatureDetector):
    """Robust covariance whitening and (quantum-entropy) scoring, per class.

    ``n_components``: principal components kept per class (capped by the class size);
    ``alpha``: 0 scores by the robust Mahalanobis norm, > 0 by QUE, which weights the direction in which the
    whitened class spreads most (a poison cluster) more; ``max_fpr``: the share of clean records the default
    threshold is meant to flag at most; ``seed`` makes the MCD fit deterministic.
    """

    name = "spectre"

    def __init__(self, n_components: int = 10, alpha: float = 4.0, max_fpr: float = 0.05, seed: int = 0) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.max_fpr = max_fpr
        self.seed = seed

    def _fit_class(self, feats: np.ndarray) -> _Whitener:
        from sklearn.covariance import MinCovDet

        if self.n_components < 1:
            raise InputError("n_components", self.n_components, "at least 1")
        if not 0.0 < self.max_fpr < 1.0:
            raise InputError("max_fpr", self.max_fpr, "a fraction in (0, 1)")
        k = int(min(self.n_components, feats.shape[1], max(1, feats.shape[0] // 4)))
        mean = feats.mean(axis=0)
        _, _, vt = np.linalg.svd(feats - mean, full_matrices=False)
        comps = vt[:k]
        g = (feats - mean) @ comps.T
        mcd = MinCovDet(random_state=self.seed).fit(g)
        vals, vecs = np.linalg.eigh(mcd.covariance_)
        vals = np.maximum(vals, 1e-12 * max(1.0, float(vals.max())))
        whiten = vecs @ np.diag(vals ** -0.5) @ vecs.T
        w = (g - mcd.location_) @ whiten
        que = np.eye(k)
        if self.alpha > 0:
            # QUE: exp(alpha (Sigma_w - I) / ||Sigma_w - I||) over the whitened records, trace-normalised.
            a = w.T @ w / w.shape[0] - np.eye(k)
            ev, ew = np.linalg.eigh(a)
            norm = max(float(np.abs(ev).max()), 1e-12)
            que = ew @ np.diag(np.exp(self.alpha * ev / norm)) @ ew.T
            que = que * (k / np.trace(que))
        state = _Whitener(comps, mean, mcd.location_, whiten, que, 1.0)
        raw = self._score_class(state, feats)
        state.scale = max(float(np.median(raw)), 1e-12)
        return state

    def _score_class(self, state: _Whitener, feats: np.ndarray) -> np.ndarray:
        w = ((feats - state.mean) @ state.components.T - state.location) @ state.whiten
        return np.asarray(np.einsum("ij,jk,ik->i", w, state.que, w) / state.scale)

    def _fit_threshold(self, feats: np.ndarray, y: np.ndarray) -> None:
        scores = self._score_features(feats, y)
        level = 1.0 - 0.4 * self.max_fpr
        per_class = [np.quantile(scores[y == c], level) for c in self.per_class_]
        self.threshold_ = float(np.median(per_class))

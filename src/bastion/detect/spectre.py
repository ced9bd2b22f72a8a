"""A robust-statistics detector in the spirit of SPECTRE (Hayase et al. 2021).

Per class: project the penultimate activations on their top principal components, whiten them with a
robust covariance, and score each record by its whitened norm, optionally
re-weighted by quantum-entropy scoring (``alpha`` > 0). Scores are divided by the class median, so one
threshold serves every class; it is the median over classes of each class's ``1 - 0.4 max_fpr``
quantile: poisoned classes are a minority, so the median is a clean class's tail.

The robust covariance starts from the geometric median (breakdown point 1/2: a poison cluster holding a
third of the class cannot move it), keeps the ``support`` fraction of records nearest to it, and refines
with a few concentration steps. Minimum Covariance Determinant (scikit-learn's ``MinCovDet``) is the
textbook choice but fails here: a backdoor's records are nearly identical in feature space, so a subset
made mostly of poison has the *smallest* determinant, and MCD whitens with the poison's own covariance.
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
    threshold is meant to flag at most; ``support``: the fraction of each class the covariance is estimated
from (above 1/2, below 1 minus the largest poison share you expect in a class); ``seed`` is kept for
API symmetry (the estimate is deterministic).
    """

    name = "spectre"

    def __init__(self, n_components: int = 10, alpha: float = 0.0, max_fpr: float = 0.05, support: float = 0.6,
                 seed: int = 0) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.support = support
        self.max_fpr = max_fpr
        self.seed = seed

    def _fit_class(self, feats: np.ndarray) -> _Whitener:
        if self.n_components < 1:
            raise InputError("n_components", self.n_components, "at least 1")
        if not 0.5 <= self.support < 1.0:
            raise InputError("support", self.support, "a fraction of the class in [0.5, 1)")
        if not 0.0 < self.max_fpr < 1.0:
            raise InputError("max_fpr", self.max_fpr, "a fraction in (0, 1)")
        k = int(min(self.n_components, feats.shape[1], max(1, feats.shape[0] // 4)))
        mean = feats.mean(axis=0)
        _, _, vt = np.linalg.svd(feats - mean, full_matrices=False)
        comps = vt[:k]
        g = (feats - mean) @ comps.T
        location, cov = robust_location_scatter(g, self.support)
        vals, vecs = np.linalg.eigh(cov)
        vals = np.maximum(vals, 1e-12 * max(1.0, float(vals.max())))
        whiten = vecs @ np.diag(vals ** -0.5) @ vecs.T
        w = (g - location) @ whiten
        que = np.eye(k)
        if self.alpha > 0:
            # QUE: exp(alpha (Sigma_w - I) / ||Sigma_w - I||) over the whitened records, trace-normalised.
            a = w.T @ w / w.shape[0] - np.eye(k)
            ev, ew = np.linalg.eigh(a)
            norm = max(float(np.abs(ev).max()), 1e-12)
            que = ew @ np.diag(np.exp(self.alpha * ev / norm)) @ ew.T
            que = que * (k / np.trace(que))
        state = _Whitener(comps, mean, location, whiten, que, 1.0)
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


#: concentration steps after the start from the geometric median; two already settle in practice
C_STEPS = 2


def geometric_median(g: np.ndarray, iters: int = 200, tol: float = 1e-9) -> np.ndarray:
    """Weiszfeld's iteration for the point minimising the sum of Euclidean distances to the rows of ``g``."""
    loc = np.median(g, axis=0)
    for _ in range(iters):
        dist = np.maximum(np.linalg.norm(g - loc, axis=1), 1e-12)
        new = (g / dist[:, None]).sum(axis=0) / (1.0 / dist).sum()
        if np.linalg.norm(new - loc) < tol * (1.0 + np.linalg.norm(loc)):
            return np.asarray(new)
        loc = new
    return np.asarray(loc)


def robust_location_scatter(g: np.ndarray, support: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the ``support`` fraction of rows nearest the bulk of ``g`` (see the module doc)."""
    loc = geometric_median(g)
    spread = 1.4826 * np.median(np.abs(g - loc), axis=0) + 1e-12
    dist = (((g - loc) / spread) ** 2).sum(axis=1)
    h = max(g.shape[1] + 1, int(support * g.shape[0]))
    mu, cov = loc, np.eye(g.shape[1])
    for _ in range(C_STEPS + 1):
        keep = np.argsort(dist, kind="stable")[:h]
        mu = g[keep].mean(axis=0)
        cov = np.cov(g[keep].T).reshape(g.shape[1], g.shape[1])
        cov = cov + 1e-9 * max(1.0, float(np.trace(cov))) * np.eye(g.shape[1])
        inv = np.linalg.inv(cov)
        dist = np.einsum("ij,jk,ik->i", g - mu, inv, g - mu)
    return mu, cov

"""A robust-statistics detector in the spirit of SPECTRE (Hayase et al. 2021).

Per class: project the penultimate activations on their top principal components, whiten them with a
robust covariance, and score each record by its whitened norm, optionally
re-weighted by quantum-entropy scoring (``alpha`` > 0). Scores are divided by the class median, so one
threshold serves every class; it is the median over classes of each class's ``1 - 0.4 max_fpr``
quantile: poisoned classes are a minority, so the median is a clean class's tail.

With ``confirm=True`` a class's flagged records are removed only if they carry what a backdoor needs: an
input feature that outweighs the content. Each flagged record, and a sample of its class's unflagged
records, is overlaid (added, clipped to the data's range) on unflagged records of other classes; a trigger
survives the overlay, so the model keeps answering the record's label. When the flagged records keep their
label more often than the class's other records, significantly (one-sided Mann-Whitney U, Bonferroni over
the classes tested) and by a wide margin (the chance that a flagged record keeps its label more often than
one of the others, the test's AUC, at least ``confirm_auc``), the class is *confirmed*: its records above a
lower threshold (``confirmed_fpr``) are flagged, so poison just under the default cut goes too. In an
unconfirmed class nothing is flagged: an unusual but honest sub-population (a second way of writing a 1)
scores like a poison cluster, and removing it costs accuracy on exactly the test records that look like it
(bench/poison.py: about 1 point on the digits). This confirms triggers that survive an overlay (patches);
a backdoor whose trigger an overlay drowns goes unconfirmed and is kept: a blended pattern at alpha 0.2
(overlay AUC 0.52) and a clean-label backdoor were not confirmed in bench/poison.py.
Measured on the digits: BadNets classes reach AUC 0.89-1.0 (p below 1e-6); honest sub-populations of clean
models reach up to 0.74, sometimes with p near 1e-4, hence both conditions.

The robust covariance starts from the geometric median (breakdown point 1/2: a poison cluster holding a
third of the class cannot move it), keeps the ``support`` fraction of records nearest to it, and refines
with a few concentration steps. Minimum Covariance Determinant (scikit-learn's ``MinCovDet``) is the
textbook choice but fails here: a backdoor's records are nearly identical in feature space, so a subset
made mostly of poison has the *smallest* determinant, and MCD whitens with the poison's own covariance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

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
from (above 1/2, below 1 minus the largest poison share you expect in a class); ``confirm``: flag only
classes the overlay test confirms (see the module doc), at ``confirm_alpha`` (family-wise) and
``confirm_auc`` with
``overlays`` overlays per record, and in them every record above the threshold for ``confirmed_fpr``;
``seed`` draws the overlays (the covariance estimate is deterministic).

    After ``fit``: ``screen_threshold_`` is the default threshold (``max_fpr``); without ``confirm``
    ``threshold_`` equals it, with ``confirm`` ``threshold_`` holds one value per class (infinite for an
    unconfirmed class), ``overlay_pvalues_`` and ``overlay_auc_`` map each tested class to its p-value and AUC.
    """

    name = "spectre"

    def __init__(self, n_components: int = 10, alpha: float = 0.0, max_fpr: float = 0.05, support: float = 0.6,
                 seed: int = 0, confirm: bool = False, confirm_alpha: float = 0.01, confirm_auc: float = 0.8,
                 confirmed_fpr: float = 0.1, overlays: int = 20) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.support = support
        self.max_fpr = max_fpr
        self.seed = seed
        self.confirm = confirm
        self.confirm_alpha = confirm_alpha
        self.confirm_auc = confirm_auc
        self.confirmed_fpr = confirmed_fpr
        self.overlays = overlays

    def _fit(self, model: Any, x: Tensor, y: Tensor | None) -> None:
        super()._fit(model, x, y)
        self.screen_threshold_ = float(np.asarray(self.threshold_))
        if not self.confirm:
            return
        if (not 0.0 < self.confirm_alpha < 1.0 or not 0.5 <= self.confirm_auc < 1.0
                or not 0.0 < self.confirmed_fpr < 1.0 or self.overlays < 1):
            raise InputError("confirm_alpha/confirm_auc/confirmed_fpr/overlays",
                             (self.confirm_alpha, self.confirm_auc, self.confirmed_fpr, self.overlays),
                             "alpha and confirmed_fpr in (0, 1), an AUC in [0.5, 1), at least one overlay")
        assert y is not None
        yy = y.numpy()
        scores = self._score(x, y)
        tests = overlay_test(self.model_, x, yy, scores > self.screen_threshold_, self.overlays, self.seed)
        self.overlay_pvalues_ = {c: p for c, (p, _) in tests.items()}
        self.overlay_auc_ = {c: a for c, (_, a) in tests.items()}
        tested = max(1, len(tests))
        low = _median_quantile(scores, yy, list(self.per_class_), 1.0 - 0.4 * self.confirmed_fpr)
        t = np.full(int(yy.max()) + 1, np.inf)
        for c, (p, auc) in tests.items():
            if p < self.confirm_alpha / tested and auc >= self.confirm_auc:
                t[c] = min(low, self.screen_threshold_)
        self.threshold_ = t

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
        self.threshold_ = _median_quantile(scores, y, list(self.per_class_), 1.0 - 0.4 * self.max_fpr)


def _median_quantile(scores: np.ndarray, y: np.ndarray, classes: list[int], level: float) -> float:
    """Median over classes of each class's ``level`` quantile: poisoned classes are a minority, so this is a
    clean class's tail."""
    return float(np.median([np.quantile(scores[y == c], level) for c in classes]))


#: unflagged records of a class the overlay test compares its flagged records with (a seeded sample)
OVERLAY_SAMPLE = 200


def overlay_test(model: nn.Module, x: Tensor, y: np.ndarray, flagged: np.ndarray, overlays: int,
                 seed: int) -> dict[int, tuple[float, float]]:
    """Per class with flagged records: one-sided Mann-Whitney p-value and AUC (U / (n1 n2)) that its flagged
    records keep their label, when overlaid on other classes' unflagged records, more often than its
    unflagged records do."""
    from scipy.stats import mannwhitneyu

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    lo, hi = float(x.min()), float(x.max())
    out: dict[int, tuple[float, float]] = {}
    for c in np.unique(y[flagged]):
        pool = np.flatnonzero((y != c) & ~flagged)
        others = np.flatnonzero((y == c) & ~flagged)
        if pool.size == 0 or others.size == 0:
            continue
        if others.size > OVERLAY_SAMPLE:
            others = np.sort(rng.choice(others, OVERLAY_SAMPLE, replace=False))
        kept_f = _kept_label(model, x, np.flatnonzero((y == c) & flagged), int(c), pool, overlays, gen, lo, hi)
        kept_o = _kept_label(model, x, others, int(c), pool, overlays, gen, lo, hi)
        test = mannwhitneyu(kept_f, kept_o, alternative="greater")
        out[int(c)] = (float(test.pvalue), float(test.statistic) / (kept_f.size * kept_o.size))
    return out


def _kept_label(model: nn.Module, x: Tensor, rows: np.ndarray, label: int, pool: np.ndarray, overlays: int,
                gen: torch.Generator, lo: float, hi: float, batch: int = 2048) -> np.ndarray:
    """Share of ``overlays`` overlays of each record on random ``pool`` records the model labels ``label``."""
    pick = torch.from_numpy(pool)[torch.randint(0, pool.size, (rows.size, overlays), generator=gen)]
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    xr = x[torch.from_numpy(rows)]
    hits = torch.zeros(rows.size)
    per = max(1, batch // overlays)
    with torch.no_grad():
        for i in range(0, rows.size, per):
            mix = (xr[i:i + per, None] + x[pick[i:i + per]]).clamp(lo, hi)
            pred = model(mix.flatten(0, 1).to(dev)).argmax(dim=1).cpu().reshape(-1, overlays)
            hits[i:i + per] = (pred == label).float().mean(dim=1)
    return hits.numpy()


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

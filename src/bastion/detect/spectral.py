"""Spectral signatures (Tran et al. 2018): poison leaves a trace along the top singular vector of a class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bastion.detect._perclass import PerClassFeatureDetector
from bastion.errors import InputError


@dataclass
class _Direction:
    mean: np.ndarray
    vector: np.ndarray
    scale: float


class SpectralSignature(PerClassFeatureDetector):
    """Per class: score = squared projection of the centred activations on the top singular vector,
    divided by the class median. As in the paper, the ``1.5 eps`` highest-scoring records of each class
    are flagged (``eps``: the poison rate you expect), so ``threshold_`` holds one value per class.
    """

    name = "spectral"

    def __init__(self, eps: float = 0.05) -> None:
        self.eps = eps

    def _fit_class(self, feats: np.ndarray) -> _Direction:
        if not 0.0 < self.eps < 0.5:
            raise InputError("eps", self.eps, "the expected poison rate, in (0, 0.5)")
        mean = feats.mean(axis=0)
        _, _, vt = np.linalg.svd(feats - mean, full_matrices=False)
        state = _Direction(mean, vt[0], 1.0)
        state.scale = max(float(np.median(self._score_class(state, feats))), 1e-12)
        return state

    def _score_class(self, state: _Direction, feats: np.ndarray) -> np.ndarray:
        return np.asarray(((feats - state.mean) @ state.vector) ** 2 / state.scale)

    def _fit_threshold(self, feats: np.ndarray, y: np.ndarray) -> None:
        scores = self._score_features(feats, y)
        t = np.full(int(y.max()) + 1, np.inf)
        for c in self.per_class_:
            t[c] = np.quantile(scores[y == c], 1.0 - min(0.99, 1.5 * self.eps))
        self.threshold_ = t

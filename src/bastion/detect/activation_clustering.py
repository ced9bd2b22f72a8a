"""Activation clustering (Chen et al. 2018): poison forms its own small cluster inside the target class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bastion.detect._perclass import PerClassFeatureDetector
from bastion.errors import InputError


@dataclass
class _Clusters:
    mean: np.ndarray
    components: np.ndarray
    centers: np.ndarray  # (2, k)
    small: int  # index of the smaller cluster
    silhouette: float
    suspicious: bool


class ActivationClustering(PerClassFeatureDetector):
    """Per class: reduce the activations to ``n_components`` dimensions, split them with 2-means, and call
    the smaller cluster poison when it holds at most ``max_size`` of the class and the split's silhouette is
    at least ``min_silhouette``. A record's score is its class's silhouette if it falls in a suspicious
    class's small cluster, else 0; ``threshold_`` is just below ``min_silhouette``.
    """

    name = "activation-clustering"

    def __init__(self, n_components: int = 10, max_size: float = 0.35, min_silhouette: float = 0.15,
                 seed: int = 0) -> None:
        self.n_components = n_components
        self.max_size = max_size
        self.min_silhouette = min_silhouette
        self.seed = seed

    def _fit_class(self, feats: np.ndarray) -> _Clusters:
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        if not 0.0 < self.max_size <= 0.5:
            raise InputError("max_size", self.max_size, "a fraction of the class in (0, 0.5]")
        k = int(min(self.n_components, feats.shape[1], feats.shape[0] - 1))
        mean = feats.mean(axis=0)
        _, _, vt = np.linalg.svd(feats - mean, full_matrices=False)
        g = (feats - mean) @ vt[:k].T
        km = KMeans(2, n_init=10, random_state=self.seed).fit(g)
        sizes = np.bincount(km.labels_, minlength=2)
        small = int(np.argmin(sizes))
        sil = float(silhouette_score(g, km.labels_)) if min(sizes) > 0 else 0.0
        suspicious = sizes[small] / feats.shape[0] <= self.max_size and sil >= self.min_silhouette
        return _Clusters(mean, vt[:k], km.cluster_centers_, small, sil, bool(suspicious))

    def _score_class(self, state: _Clusters, feats: np.ndarray) -> np.ndarray:
        g = (feats - state.mean) @ state.components.T
        d = ((g[:, None, :] - state.centers[None]) ** 2).sum(axis=2)
        in_small = d.argmin(axis=1) == state.small
        return np.where(in_small & state.suspicious, state.silhouette, 0.0)

    def _fit_threshold(self, feats: np.ndarray, y: np.ndarray) -> None:
        self.threshold_ = float(np.nextafter(self.min_silhouette, -np.inf))

"""STRIP (Gao et al. 2019): a trigger keeps winning when the input is superimposed on other images.

At inference, each input is overlaid on ``n_overlays`` clean images; a clean input's prediction wanders
(high entropy), a triggered one stays on the target class (low entropy). Nothing is retrained: ``fit``
only keeps clean background images and sets the threshold at the ``1 - frr`` quantile of clean inputs'
scores (``frr``: the false-rejection rate you accept).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.detect.base import PoisonDetector
from bastion.errors import InputError


class STRIP(PoisonDetector):
    """Score = minus the mean prediction entropy over superimpositions (higher = more suspicious)."""

    name = "strip"

    def __init__(self, n_overlays: int = 20, frr: float = 0.01, seed: int = 0, batch_size: int = 1024) -> None:
        self.n_overlays = n_overlays
        self.frr = frr
        self.seed = seed
        self.batch_size = batch_size

    def _needs_labels(self) -> bool:
        return False

    def _fit(self, model: Any, x: Tensor, y: Tensor | None) -> None:
        from bastion.core import wrap

        if not 0.0 < self.frr < 1.0:
            raise InputError("frr", self.frr, "a false-rejection rate in (0, 1)")
        if self.n_overlays < 1:
            raise InputError("n_overlays", self.n_overlays, "at least 1")
        self.model_ = wrap(model)
        self.background_ = x.clone()
        clean = self._score(x, None)
        self.threshold_ = float(np.quantile(clean, 1.0 - self.frr))

    def _score(self, x: Tensor, y: Tensor | None) -> np.ndarray:
        m = self.model_
        if tuple(x.shape[1:]) != tuple(self.background_.shape[1:]):
            raise InputError("x", f"records of shape {tuple(x.shape[1:])}",
                             f"{tuple(self.background_.shape[1:])}, like the clean images given to fit")
        lo, hi = m.bounds
        gen = torch.Generator().manual_seed(self.seed)
        pick = torch.randint(0, self.background_.shape[0], (x.shape[0], self.n_overlays), generator=gen)
        ent = torch.zeros(x.shape[0], dtype=torch.float64)
        rows_per_batch = max(1, self.batch_size // self.n_overlays)
        with torch.no_grad():
            for i in range(0, x.shape[0], rows_per_batch):
                xb = x[i:i + rows_per_batch]
                bg = self.background_[pick[i:i + rows_per_batch]]  # (b, n, ...)
                mixed = (xb[:, None] + bg).clamp(lo, hi).flatten(0, 1)
                s = m.scores(mixed.to(m.device)).float()
                p = s.softmax(dim=1) if not _is_probability(s) else s
                h = -(p * p.clamp_min(1e-12).log()).sum(dim=1).reshape(xb.shape[0], self.n_overlays)
                ent[i:i + xb.shape[0]] = h.mean(dim=1).double().cpu()
        return np.asarray(-ent.numpy())


def _is_probability(s: Tensor) -> bool:
    return bool((s >= 0).all()) and bool(torch.allclose(s.sum(dim=1), torch.ones(s.shape[0], device=s.device), atol=1e-3))

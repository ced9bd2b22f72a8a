"""Shared plumbing of the detectors that look at penultimate activations one class at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from bastion.detect._features import penultimate, torch_module
from bastion.detect.base import PoisonDetector
from bastion.errors import InputError


class PerClassFeatureDetector(PoisonDetector):
    """Fits one small model of the activations per class (``per_class_``); scores each record in its class."""

    #: a class with fewer records than this is not modelled: its records score 0
    min_class_size = 10

    def _fit(self, model: Any, x: Tensor, y: Tensor | None) -> None:
        assert y is not None
        self.model_ = torch_module(model)
        feats = penultimate(self.model_, x)
        self.classes_ = np.unique(y.numpy())
        self.per_class_: dict[int, Any] = {}
        for c in self.classes_:
            fc = feats[y.numpy() == c]
            if fc.shape[0] >= self.min_class_size:
                self.per_class_[int(c)] = self._fit_class(fc)
        if not self.per_class_:
            raise InputError("y", "classes with fewer than "
                             f"{self.min_class_size} records each", "at least one class that large")
        self._fit_threshold(feats, y.numpy())

    def _fit_class(self, feats: np.ndarray) -> Any:
        raise NotImplementedError

    def _score_class(self, state: Any, feats: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fit_threshold(self, feats: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _score(self, x: Tensor, y: Tensor | None) -> np.ndarray:
        assert y is not None
        feats = penultimate(self.model_, x)
        return self._score_features(feats, y.numpy())

    def _score_features(self, feats: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros(feats.shape[0])
        for c, state in self.per_class_.items():
            rows = y == c
            if rows.any():
                out[rows] = self._score_class(state, feats[rows])
        return out

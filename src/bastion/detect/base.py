"""The contract every data-set poison detector follows, scikit-learn style.

``fit(model, x, y)`` learns per-class statistics of the training set and returns ``self``; afterwards
``scores_`` (one suspicion score per training record, higher = more suspicious), ``threshold_`` and
``labels_`` (True = flagged) describe the training set, and ``score_samples(x, y)``,
``decision_function(x, y)`` (score minus the threshold) and ``predict(x, y)`` (decision > 0) judge any records.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.errors import InputError


def check_records(x: Any, y: Any, *, need_y: bool = True) -> tuple[Tensor, Tensor | None]:
    """Inputs as float32 and labels as int64 CPU tensors, validated at the boundary."""
    xt = x.detach().cpu().float() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))
    if xt.dim() < 2 or xt.shape[0] == 0:
        raise InputError("x", f"shape {tuple(xt.shape)}", "a batch of records (N, ...) with N >= 1")
    if not bool(torch.isfinite(xt).all()):
        raise InputError("x", "values with NaN or infinity", "finite numbers")
    if y is None:
        if need_y:
            raise InputError("y", None, "one label per record")
        return xt, None
    yt = y.detach().cpu().long() if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y)).long()
    if yt.dim() != 1 or yt.shape[0] != xt.shape[0]:
        raise InputError("y", f"shape {tuple(yt.shape)}", f"({xt.shape[0]},), one label per record")
    if bool((yt < 0).any()):
        raise InputError("y", "negative labels", "class indices 0..C-1")
    return xt, yt


class PoisonDetector:
    """Base of the per-record detectors; subclasses implement ``_fit`` and ``_score``."""

    name = "detector"
    threshold_: float | np.ndarray
    scores_: np.ndarray
    labels_: np.ndarray

    def fit(self, model: Any, x: Any, y: Any = None) -> PoisonDetector:
        xt, yt = check_records(x, y, need_y=self._needs_labels())
        self._fit(model, xt, yt)
        self.scores_ = self._score(xt, yt)
        self.labels_ = self._decide(self.scores_, yt)
        return self

    def _needs_labels(self) -> bool:
        return True

    def _fit(self, model: Any, x: Tensor, y: Tensor | None) -> None:
        raise NotImplementedError

    def _score(self, x: Tensor, y: Tensor | None) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "scores_"):
            raise InputError(self.name, "a detector that was not fitted", "fit(model, x, y) first")

    def _thresholds(self, y: Tensor | None, n: int) -> np.ndarray:
        t = np.asarray(self.threshold_, dtype=np.float64)
        if t.ndim == 0:
            return np.full(n, float(t))
        assert y is not None
        yy = y.numpy()
        # A class never seen in fit has no learned statistics: nothing in it is flagged.
        return np.where(yy < t.shape[0], t[np.minimum(yy, t.shape[0] - 1)], np.inf)

    def _decide(self, scores: np.ndarray, y: Tensor | None) -> np.ndarray:
        return np.asarray(scores - self._thresholds(y, scores.shape[0]) > 0)

    def score_samples(self, x: Any, y: Any = None) -> np.ndarray:
        """Suspicion score per record (higher = more suspicious)."""
        self._check_fitted()
        xt, yt = check_records(x, y, need_y=self._needs_labels())
        return self._score(xt, yt)

    def decision_function(self, x: Any, y: Any = None) -> np.ndarray:
        """Score minus the detector's threshold: positive means flagged."""
        xt, yt = check_records(x, y, need_y=self._needs_labels())
        s = self.score_samples(xt, yt)
        return np.asarray(s - self._thresholds(yt, s.shape[0]))

    def predict(self, x: Any, y: Any = None) -> np.ndarray:
        """True for records flagged as poison (decision_function > 0)."""
        return np.asarray(self.decision_function(x, y) > 0)

    def fit_predict(self, model: Any, x: Any, y: Any = None) -> np.ndarray:
        return self.fit(model, x, y).labels_

"""scikit-learn (and anything with ``predict_proba``/``predict``): black-box scores or labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.core.adapters.base import Capability, Model
from bastion.core.validation import check_bounds
from bastion.errors import InputError


class SklearnModel(Model):
    """Wrap an estimator. Inputs of any shape are flattened to (N, features) before the call."""

    def __init__(self, estimator: Any, bounds: Sequence[float] = (0.0, 1.0),
                 num_classes: int | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__()
        if not hasattr(estimator, "predict"):
            raise InputError("model", type(estimator).__name__, "an estimator with predict() or predict_proba()")
        try:
            from sklearn.exceptions import NotFittedError
            from sklearn.utils.validation import check_is_fitted

            check_is_fitted(estimator)
        except NotFittedError:
            raise InputError("model", f"an unfitted {type(estimator).__name__}", "a fitted estimator (call fit first)") \
                from None
        except (ImportError, TypeError):
            pass  # not a scikit-learn estimator: anything with predict() is accepted
        self.estimator = estimator
        self.bounds = check_bounds(bounds)
        self.device = torch.device(device)
        self.has_proba = hasattr(estimator, "predict_proba")
        self.capabilities = Capability.LABELS | (Capability.SCORES if self.has_proba else Capability(0))
        classes = getattr(estimator, "classes_", None)
        #: non-numeric class names (e.g. strings): predictions are mapped to their index in ``classes_``
        self._names: np.ndarray | None = None
        if classes is not None:
            cls = np.asarray(classes)
            if cls.dtype.kind in "iu" and not np.array_equal(cls, np.arange(len(cls))):
                raise InputError("model.classes_", cls.tolist(), "class labels 0..C-1 (re-encode the labels)")
            if cls.dtype.kind not in "iub":
                self._names = cls
        self.num_classes = num_classes if num_classes is not None else (len(classes) if classes is not None else None)

    def _np(self, x: Tensor) -> np.ndarray:
        return x.detach().reshape(x.shape[0], -1).cpu().numpy()

    def scores(self, x: Tensor) -> Tensor:
        self.require(Capability.SCORES, "scores()")
        self._count(x)
        p = np.asarray(self.estimator.predict_proba(self._np(x)), dtype=np.float32)
        return torch.from_numpy(p).to(x.device)

    def predict(self, x: Tensor) -> Tensor:
        self._count(x)
        labels = np.asarray(self.estimator.predict(self._np(x)))
        if self._names is not None:
            # classes_ is sorted (scikit-learn's contract), so a label's index is its rank; labels are
            # index-aligned with predict_proba's columns either way.
            labels = np.searchsorted(self._names, labels)
        return torch.from_numpy(labels.astype(np.int64)).to(x.device)

"""scikit-learn's bundled data sets as float tensors in [0, 1] with a fixed, stratified split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: every bundled split uses this seed and test fraction, so results are comparable across runs
SPLIT_SEED = 0
TEST_FRACTION = 0.25


@dataclass
class Dataset:
    """A train/test split. Inputs lie in ``bounds``; labels are class indices 0..C-1."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    bounds: tuple[float, float] = (0.0, 1.0)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"classes={self.num_classes})")


def _split(name: str, x: np.ndarray, y: np.ndarray, scale_per_feature: bool) -> Dataset:
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    if scale_per_feature:
        # Min-max from the training split only, so no test information leaks into the scaling.
        lo, hi = x_tr.min(axis=0), x_tr.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        x_tr = np.clip((x_tr - lo) / span, 0.0, 1.0)
        x_te = np.clip((x_te - lo) / span, 0.0, 1.0)
    return Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_tr, dtype=np.float32)),
        y_train=torch.from_numpy(y_tr.astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_te, dtype=np.float32)),
        y_test=torch.from_numpy(y_te.astype(np.int64)),
        num_classes=int(y.max()) + 1,
    )


def digits(flatten: bool = False) -> Dataset:
    """1,797 handwritten 8x8 digits, pixels scaled to [0, 1], shape (N, 1, 8, 8) (or (N, 64) if flattened)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data.astype(np.float32) / 16.0
    if not flatten:
        x = x.reshape(-1, 1, 8, 8)
    return _split("digits", x, d.target, scale_per_feature=False)


def breast_cancer() -> Dataset:
    """569 tumours, 30 features min-max scaled to [0, 1] on the training split; 0 malignant, 1 benign."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return _split("breast_cancer", d.data, d.target, scale_per_feature=True)


def wine() -> Dataset:
    """178 wines, 13 features min-max scaled to [0, 1] on the training split; 3 cultivars."""
    from sklearn.datasets import load_wine

    d = load_wine()
    return _split("wine", d.data, d.target, scale_per_feature=True)

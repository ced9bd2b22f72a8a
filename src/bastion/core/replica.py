"""Exact PyTorch replicas of differentiable scikit-learn estimators, so gradient attacks can open them.

A scikit-learn model offers scores at best, and score-based attacks give only an upper bound on robust
accuracy. Linear classifiers, linear SVMs and multi-layer perceptrons (after scalers and PCA in a
Pipeline) are small closed-form functions of their fitted arrays: rebuilt in float64 they reproduce the
estimator's decision function, so white-box attacks run on the replica while success is still counted on
the real estimator (:class:`ReplicaModel`). :func:`to_torch` raises :class:`NotReplicable` for anything
else (trees, kernels, custom code); callers fall back to black-box attacks and say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.core.adapters.base import Capability, Model
from bastion.core.adapters.torch_model import TorchModel


class NotReplicable(Exception):
    """The estimator (or a step of its pipeline) has no exact torch replica; the message says which."""


def _t(a: Any) -> Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


class _Affine(nn.Module):
    """``(x - shift) * scale`` then an optional matrix: scalers, PCA and linear heads are all this."""

    shift: Tensor | None
    scale: Tensor | None
    weight: Tensor | None
    bias: Tensor | None

    def __init__(self, shift: Tensor | None, scale: Tensor | None, weight: Tensor | None = None,
                 bias: Tensor | None = None, clip: tuple[float, float] | None = None) -> None:
        super().__init__()
        for name, v in (("shift", shift), ("scale", scale), ("weight", weight), ("bias", bias)):
            self.register_buffer(name, v)
        self.clip = clip

    def forward(self, x: Tensor) -> Tensor:
        if self.shift is not None:
            x = x - self.shift
        if self.scale is not None:
            x = x * self.scale
        if self.weight is not None:
            x = x @ self.weight.T
        if self.bias is not None:
            x = x + self.bias
        if self.clip is not None:
            x = x.clamp(*self.clip)
        return x


class _Flat64(nn.Module):
    """Flatten to (N, features) in float64, the precision scikit-learn computes in."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).double()


class _Binary(nn.Module):
    """A one-column decision value ``z`` as two logits ``[0, z]``: argmax is class 1 exactly when z > 0."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.cat([torch.zeros_like(z), z], dim=1)


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "identity": nn.Identity}


def _scaler(step: Any) -> nn.Module:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if isinstance(step, StandardScaler):
        mean = _t(step.mean_) if step.with_mean and step.mean_ is not None else None
        scale = 1.0 / _t(step.scale_) if step.with_std and step.scale_ is not None else None
        return _Affine(mean, scale)
    if isinstance(step, MinMaxScaler):
        clip = tuple(float(v) for v in step.feature_range) if step.clip else None
        return _Affine(None, _t(step.scale_), None, _t(step.min_), clip)  # type: ignore[arg-type]
    if isinstance(step, PCA):
        weight = _t(step.components_)
        if step.whiten:
            weight = weight / torch.sqrt(_t(step.explained_variance_))[:, None]
        return _Affine(_t(step.mean_), None, weight)
    raise NotReplicable(f"pipeline step {type(step).__name__} has no exact torch replica "
                        "(supported: StandardScaler, MinMaxScaler, PCA)")


def _classifier(est: Any) -> nn.Module:
    from sklearn.linear_model._base import LinearClassifierMixin
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import LinearSVC

    if isinstance(est, MLPClassifier):
        if getattr(est, "out_activation_", "softmax") not in ("softmax", "logistic") or \
                np.asarray(est._label_binarizer.y_type_) == "multilabel-indicator":
            raise NotReplicable("multi-label MLPClassifier has no single-label replica")
        layers: list[nn.Module] = []
        n = len(est.coefs_)
        for i, (w, b) in enumerate(zip(est.coefs_, est.intercepts_, strict=True)):
            layers.append(_Affine(None, None, _t(w).T.contiguous(), _t(b)))
            if i < n - 1:
                layers.append(_ACTIVATIONS[est.activation]())
        if est.out_activation_ == "logistic":
            layers.append(_Binary())
        return nn.Sequential(*layers)
    if isinstance(est, (LinearClassifierMixin, LinearSVC)) and hasattr(est, "coef_"):
        coef = np.asarray(est.coef_)
        if coef.ndim != 2:
            raise NotReplicable(f"{type(est).__name__} has coef_ of shape {coef.shape}")
        head = _Affine(None, None, _t(coef), _t(np.ravel(est.intercept_)) if hasattr(est, "intercept_") else None)
        return nn.Sequential(head, _Binary()) if coef.shape[0] == 1 else head
    raise NotReplicable(f"{type(est).__name__} has no exact torch replica (supported: linear classifiers, "
                        "LinearSVC, MLPClassifier, in a Pipeline after StandardScaler/MinMaxScaler/PCA)")


def to_torch(estimator: Any) -> nn.Module:
    """A float64 ``nn.Module`` mapping flattened inputs to logits whose argmax is ``estimator.predict``.

    Example::

        from bastion.core.replica import to_torch
        net = to_torch(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y))
    """
    from sklearn.pipeline import Pipeline

    steps: list[Any] = [s for _, s in estimator.steps if s not in (None, "passthrough")] \
        if isinstance(estimator, Pipeline) else [estimator]
    mods: list[nn.Module] = [_Flat64()]
    mods += [_scaler(s) for s in steps[:-1]]
    mods.append(_classifier(steps[-1]))
    return nn.Sequential(*mods).double().eval()


class ReplicaModel(Model):
    """A real (black-box) model opened by an exact replica: gradients and scores from the replica,
    predictions from the real model, so every success is counted on what is deployed."""

    capabilities = Capability.LABELS | Capability.SCORES | Capability.GRADIENTS

    def __init__(self, real: Model, replica: nn.Module) -> None:
        super().__init__()
        self.real = real
        self.replica = TorchModel(replica, real.bounds, device=real.device)
        self.bounds, self.device, self.num_classes = real.bounds, real.device, real.num_classes

    @property
    def kind(self) -> str:
        return f"{self.real.kind} (opened by an exact torch replica)"

    def scores(self, x: Tensor) -> Tensor:
        self._count(x)
        return self.replica.scores(x)

    def predict(self, x: Tensor) -> Tensor:
        self._count(x)
        return self.real.predict(x)

    def describe(self) -> dict[str, Any]:
        return {**self.real.describe(), "kind": self.kind, "capabilities": self.capabilities.describe(),
                "replica": True}


def open_model(model: Model, x: Tensor, batch_size: int | None = None) -> tuple[Model | None, str]:
    """Open ``model`` with an exact replica when it wraps a replicable estimator and agrees on ``x``.

    Returns the opened model (or None) and a note for the report saying what happened and why.
    """
    est = getattr(model, "estimator", None)
    if est is None:
        return None, ""
    try:
        net = to_torch(est)
    except NotReplicable as exc:
        return None, f"no exact replica: {exc}"
    except (ImportError, AttributeError) as exc:
        return None, f"no exact replica: {type(est).__name__} ({exc})"
    opened = ReplicaModel(model, net)
    bs = batch_size or max(1, int(x.shape[0]))
    with torch.no_grad():
        mism = sum(int((opened.replica.predict(x[i:i + bs]).to(x.device) != model.predict(x[i:i + bs]).to(x.device))
                       .sum()) for i in range(0, int(x.shape[0]), bs))
    if mism:
        return None, f"no exact replica: a torch copy of {type(est).__name__} disagreed on {mism} of {x.shape[0]} inputs"
    return opened, (f"white-box attacks ran on an exact torch replica of {type(est).__name__} (same predictions on "
                    f"all {x.shape[0]} inputs); every success was checked on the real model")

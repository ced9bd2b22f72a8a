"""Detectors in the request path, fitted on clean reference data with thresholds at a stated FPR.

Each detector maps a batch to one score per example (higher is more suspicious). ``fit`` learns its
statistics on one half of the reference data and sets ``threshold_`` to the ``1 - fpr`` quantile of the
scores of the other half, so the false-positive rate on clean inputs is ``fpr`` up to sampling error (it
is not measured on the data the statistics were fitted to, which would understate it). PRADA judges a
key's whole query stream and keeps its own statistic (Shapiro-Wilk W below ``threshold``).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.errors import InputError

ACTIONS = ("log", "flag", "reject")
KINDS = ("mahalanobis", "knn", "squeeze", "margin", "gradnorm", "prada")


def _module(model: Any) -> nn.Module | None:
    mod = getattr(model, "module", None)
    return mod if isinstance(mod, nn.Module) else None


def _prepare(model: Any, x: Tensor) -> Tensor:
    """What the wrapper feeds its module (:meth:`TorchModel.scores`): the module's dtype and the wrapper's
    normalisation. Features computed on raw inputs would describe another input distribution."""
    dtype = getattr(model, "_dtype", None)
    if x.is_floating_point() and dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    mean, std = getattr(model, "_mean", None), getattr(model, "_std", None)
    if mean is not None and std is not None:
        x = (x - model._broadcast(mean, x)) / model._broadcast(std, x)
    return x


class _Tap(nn.Module):
    """A scripted module returning (penultimate features, logits) of a ``features`` + ``head`` model in one
    call: calling the submodules one by one from Python costs a boundary crossing each."""

    def __init__(self, body: nn.Module, pre: nn.Module, last: nn.Module) -> None:
        super().__init__()
        self.body, self.pre, self.last = body, pre, last

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.pre(self.body(x))
        return h.flatten(1), self.last(h)


_TAPS: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()
#: the features of the last batch this thread scored (several detectors, one pass of the model)
_LAST = threading.local()


def _tap(mod: nn.Module) -> Any:
    """The module's (features, logits) tap, or None when its penultimate layer is found by a hook instead."""
    if mod in _TAPS:
        return _TAPS[mod]
    tap = None
    if isinstance(mod, torch.jit.ScriptModule) and hasattr(mod, "features") and hasattr(mod, "head"):
        children = list(mod.head.children())
        if children:
            tap = torch.jit.script(_Tap(mod.features, nn.Sequential(*children[:-1]), children[-1]).eval())
    _TAPS[mod] = tap
    return tap


def forward(model: Any, x: Tensor) -> Tensor:
    """``model.scores(x)``, keeping the penultimate features of ``x`` for :func:`features` to reuse, so
    feature-space detectors do not run the model a second time. Call under ``torch.no_grad()``."""
    mod = _module(model)
    if mod is None:
        return model.scores(x)
    tap = _tap(mod)
    if tap is not None:
        count = getattr(model, "_count", None)
        if count is not None:
            count(x)
        feats, logits = tap(_prepare(model, x))
    else:
        last = [m for m in mod.modules() if isinstance(m, nn.Linear)]
        if not last or isinstance(mod, torch.jit.ScriptModule):
            return model.scores(x)
        seen: list[Tensor] = []
        handle = last[-1].register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
        try:
            logits = model.scores(x)
        finally:
            handle.remove()
        feats = seen[-1].flatten(1)
    remember(model, x, feats.detach().cpu().numpy().astype(np.float64))
    return logits


def last_features(model: Any, x: Tensor) -> np.ndarray | None:
    """The penultimate features :func:`forward` kept for exactly ``x`` (unchanged since), else None."""
    entry = getattr(_LAST, "entry", None)
    if entry is not None and entry[0]() is x and entry[1] == x._version and entry[2]() is model:
        return entry[3]
    return None


def remember(model: Any, x: Tensor, feats: np.ndarray | None) -> None:
    """Keep ``feats`` as ``x``'s penultimate features for :func:`features` (a request's share of a
    micro-batched forward pass, see :mod:`.batching`)."""
    if feats is not None:
        _LAST.entry = (weakref.ref(x), x._version, weakref.ref(model), feats)


def features(model: Any, x: Tensor) -> np.ndarray:
    """Inputs of the model's last linear layer (its penultimate features), or the flattened inputs."""
    cached = last_features(model, x)
    if cached is None and _module(model) is not None:
        with torch.no_grad():
            forward(model, x)
        cached = last_features(model, x)
    return cached if cached is not None else x.flatten(1).double().numpy()


def _probs(model: Any, x: Tensor) -> Tensor:
    with torch.no_grad():
        return to_probs(model.scores(x).float())


def to_probs(s: Tensor) -> Tensor:
    """Probabilities from a model's scores: kept if they already are (black-box models), else softmax."""
    # in NumPy: on a (1, C) batch each torch operator costs more than the arithmetic
    a = s.detach().cpu().numpy()
    if a.size and a.min() >= 0 and float(np.abs(a.sum(1) - 1.0).max()) <= 1e-4:  # allclose costs 10x more
        return s
    e = np.exp(a - a.max(1, keepdims=True))
    return torch.from_numpy(e / e.sum(1, keepdims=True))


@dataclass
class Detector:
    """Base: ``score(model, x, probs)`` per example; subclasses implement ``_fit`` and ``_score``."""

    kind: str
    action: str = "flag"
    fpr: float = 0.01
    threshold_: float | None = field(default=None, init=False)

    def fit(self, model: Any, x_ref: Tensor, seed: int = 0) -> Detector:
        if len(x_ref) < 20:
            raise InputError("reference", f"{len(x_ref)} examples", "at least 20 clean reference examples")
        idx = torch.randperm(len(x_ref), generator=torch.Generator().manual_seed(seed))
        half = len(x_ref) // 2
        fit_x, cal_x = x_ref[idx[:half]], x_ref[idx[half:]]
        self._fit(model, fit_x)
        cal = self.score(model, cal_x, _probs(model, cal_x))
        # The (1 - fpr) quantile, rounded up to an order statistic, so at most fpr of clean scores exceed it.
        k = int(np.ceil((1.0 - self.fpr) * (len(cal) + 1))) - 1
        self.threshold_ = float(np.sort(cal)[min(max(k, 0), len(cal) - 1)])
        return self

    def _fit(self, model: Any, x: Tensor) -> None:
        pass

    def score(self, model: Any, x: Tensor, probs: Tensor, key_id: str | None = None) -> np.ndarray:
        raise NotImplementedError

    def fires(self, scores: np.ndarray, top: float | None = None) -> bool:
        """Whether any score passes the threshold; ``top``, the scores' maximum where the caller has it,
        decides alone (one comparison instead of two array operations) unless it is NaN."""
        if self.threshold_ is None:
            return False
        if top is not None and top == top:
            return top > self.threshold_
        return bool((scores > self.threshold_).any())

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "action": self.action, "fpr": self.fpr, "threshold": self.threshold_}


@dataclass
class Mahalanobis(Detector):
    """Out-of-distribution: min over classes of the Mahalanobis distance of the penultimate features to the
    class mean, one shared (Ledoit-Wolf shrunk) covariance (Lee et al., 2018); classes are the model's
    own predictions on the reference data, so no labels are needed."""

    kind: str = "mahalanobis"

    def _fit(self, model: Any, x: Tensor) -> None:
        from sklearn.covariance import LedoitWolf

        f = features(model, x)
        y = _probs(model, x).argmax(1).numpy()
        self.means_ = np.stack([f[y == c].mean(0) for c in np.unique(y)])
        centred = f - self.means_[np.searchsorted(np.unique(y), y)]
        self.precision_ = LedoitWolf().fit(centred).precision_
        # precision = L L^T, so (f - m)^T P (f - m) = |L^T f - L^T m|^2: one (d, d) product per request
        # instead of one per class
        self.whiten_ = np.linalg.cholesky(self.precision_)
        self.white_means_ = self.means_ @ self.whiten_
        self.white_sq_ = (self.white_means_**2).sum(1)

    def score(self, model: Any, x: Tensor, probs: Tensor, key_id: str | None = None) -> np.ndarray:
        z = features(model, x) @ self.whiten_
        m = (z**2).sum(1)[:, None] - 2.0 * z @ self.white_means_.T + self.white_sq_[None]
        return np.sqrt(np.maximum(m.min(1), 0.0))


@dataclass
class KNN(Detector):
    """Out-of-distribution: distance to the k-th nearest reference example in feature space (Sun et al., 2022)."""

    kind: str = "knn"
    k: int = 5

    def _fit(self, model: Any, x: Tensor) -> None:
        from sklearn.neighbors import NearestNeighbors

        f = features(model, x)
        self.norm_ = np.linalg.norm(f, axis=1).mean() or 1.0
        self.index_ = NearestNeighbors(n_neighbors=self.k).fit(f / self.norm_)

    def score(self, model: Any, x: Tensor, probs: Tensor, key_id: str | None = None) -> np.ndarray:
        dist, _ = self.index_.kneighbors(features(model, x) / self.norm_)
        return np.asarray(dist[:, -1])


@dataclass
class Squeeze(Detector):
    """Feature squeezing (Xu et al., 2018): L1 distance between the prediction on the input and on squeezed
    copies (bit-depth reduction; a 2x2 median filter on images of at least ``median_min_side`` pixels a
    side); adversarial inputs move, clean inputs barely do.

    The median filter is left out on small images: on 8x8 digits it changes the prediction of clean
    inputs so much that the 1 % threshold sat at 1.995 of a possible 2.0 and the detector never fired
    (PGD detection 0 %; bit depth alone: 20 %). Xu et al. used it on 28x28 and 32x32 images."""

    kind: str = "squeeze"
    bits: int = 3
    bounds: tuple[float, float] = (0.0, 1.0)
    median_min_side: int = 16

    def score(self, model: Any, x: Tensor, probs: Tensor, key_id: str | None = None) -> np.ndarray:
        lo, hi = self.bounds
        levels = 2**self.bits - 1
        unit = (x - lo) / (hi - lo)
        squeezed = [torch.round(unit * levels) / levels * (hi - lo) + lo]
        if x.dim() == 4 and min(x.shape[-1], x.shape[-2]) >= max(3, self.median_min_side):
            pad = nn.functional.pad(x, (0, 1, 0, 1), mode="reflect")
            patches = pad.unfold(2, 2, 1).unfold(3, 2, 1)
            squeezed.append(patches.reshape(*patches.shape[:4], 4).median(-1).values)
        out = torch.stack([(_probs(model, s) - probs).abs().sum(1) for s in squeezed]).max(0).values
        return out.numpy()


@dataclass
class Margin(Detector):
    """Near the decision boundary: 1 - (top probability - second probability). Boundary-walking attacks
    (HopSkipJump, minimal-perturbation evasion) answer with tiny margins."""

    kind: str = "margin"

    def score(self, model: Any, x: Tensor, probs: Tensor, key_id: str | None = None) -> np.ndarray:
        p = probs.detach().cpu().numpy()
        if p.shape[1] < 2:
            return (1.0 - p[:, 0]).astype(np.float32)
        top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]  # NumPy: a torch topk per request costs more
        return (1.0 - (top2[:, 1] - top2[:, 0])).astype(np.float32)


@dataclass
class GradNorm(Detector):
    """Input-gradient norm of the loss at the predicted class: large where the model is steep, as it is
    around adversarial examples. Needs a model with gradients (PyTorch)."""

    kind: str = "gradnorm"

    def score(self, model: Any, x: Tensor, probs: Tensor, key_id: str | None = None) -> np.ndarray:
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model.scores(xg)
            loss = nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum")
            (g,) = torch.autograd.grad(loss, xg)
        return g.flatten(1).norm(dim=1).numpy()


@dataclass
class Prada(Detector):
    """Per-key extraction detection (PRADA, :class:`bastion.detect.prada.PRADA`): score is 1 - W of the key's
    stream; fires when W falls below ``threshold`` after ``min_queries`` queries."""

    kind: str = "prada"
    threshold: float = 0.9
    min_queries: int = 100

    def fit(self, model: Any, x_ref: Tensor, seed: int = 0) -> Detector:
        from bastion.detect.prada import PRADA

        self.prada_ = PRADA(threshold=self.threshold, min_queries=self.min_queries)
        self.threshold_ = 1.0 - self.threshold
        return self

    def score(self, model: Any, x: Tensor, probs: Tensor, key_id: str | None = None) -> np.ndarray:
        client = key_id or "anonymous"
        self.prada_.update(client, x)
        return np.full(len(x), 1.0 - self.prada_.score(client))


_CLASSES: dict[str, type[Detector]] = {"mahalanobis": Mahalanobis, "knn": KNN, "squeeze": Squeeze,
                                       "margin": Margin, "gradnorm": GradNorm, "prada": Prada}


def build(spec: dict[str, Any], bounds: tuple[float, float]) -> Detector:
    """A detector from one ``detectors:`` entry of guard.yaml, e.g. ``{kind: squeeze, fpr: 0.01, action: reject}``."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in _CLASSES:
        raise InputError("detectors.kind", repr(kind), f"one of {', '.join(KINDS)}")
    action = spec.get("action", "flag")
    if action not in ACTIONS:
        raise InputError(f"detectors.{kind}.action", repr(action), f"one of {', '.join(ACTIONS)}")
    fpr = spec.get("fpr", 0.01)
    if not isinstance(fpr, (int, float)) or not 0.0 < fpr < 0.5:
        raise InputError(f"detectors.{kind}.fpr", repr(fpr), "a false-positive rate in (0, 0.5), e.g. 0.01")
    if kind == "squeeze":
        spec.setdefault("bounds", tuple(bounds))
    try:
        return _CLASSES[kind](**spec)
    except TypeError as exc:
        raise InputError(f"detectors.{kind}", spec, f"the options of a {kind} detector ({exc})") from None

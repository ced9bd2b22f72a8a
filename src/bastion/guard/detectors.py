"""Detectors in the request path, fitted on clean reference data with thresholds at a stated FPR.

Each detector maps a batch to one score per example (higher is more suspicious). ``fit`` learns its
statistics on one half of the reference data and sets ``threshold_`` to the ``1 - fpr`` quantile of the
scores of the other half, so the false-positive rate on clean inputs is ``fpr`` up to sampling error (it
is not measured on the data the statistics were fitted to, which would understate it). PRADA judges a
key's whole query stream and keeps its own statistic (Shapiro-Wilk W below ``threshold``).
"""

from __future__ import annotations

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


def features(model: Any, x: Tensor) -> np.ndarray:
    """Inputs of the model's last linear layer (its penultimate features), or the flattened inputs."""
    mod = _module(model)
    if mod is not None:
        with torch.no_grad():
            if isinstance(mod, torch.jit.ScriptModule) and hasattr(mod, "features") and hasattr(mod, "head"):
                h = mod.features(x)
                for layer in list(mod.head.children())[:-1]:
                    h = layer(h)
                return h.flatten(1).double().numpy()
            last = [m for m in mod.modules() if isinstance(m, nn.Linear)]
            if last and not isinstance(mod, torch.jit.ScriptModule):
                seen: list[Tensor] = []
                handle = last[-1].register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
                try:
                    model.scores(x)
                finally:
                    handle.remove()
                return seen[-1].flatten(1).double().numpy()
    return x.flatten(1).double().numpy()


def _probs(model: Any, x: Tensor) -> Tensor:
    with torch.no_grad():
        return to_probs(model.scores(x).float())


def to_probs(s: Tensor) -> Tensor:
    """Probabilities from a model's scores: kept if they already are (black-box models), else softmax."""
    if s.min() >= 0 and torch.allclose(s.sum(1), torch.ones(s.shape[0]), atol=1e-4):
        return s
    return s.softmax(1)


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

    def fires(self, scores: np.ndarray) -> bool:
        return self.threshold_ is not None and bool((scores > self.threshold_).any())

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

    def score(self, model: Any, x: Tensor, probs: Tensor, key_id: str | None = None) -> np.ndarray:
        f = features(model, x)
        d = f[:, None, :] - self.means_[None]
        m = np.einsum("ncd,de,nce->nc", d, self.precision_, d)
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
    copies (bit-depth reduction, 2x2 median filter); adversarial inputs move, clean inputs barely do."""

    kind: str = "squeeze"
    bits: int = 3
    bounds: tuple[float, float] = (0.0, 1.0)

    def score(self, model: Any, x: Tensor, probs: Tensor, key_id: str | None = None) -> np.ndarray:
        lo, hi = self.bounds
        levels = 2**self.bits - 1
        unit = (x - lo) / (hi - lo)
        squeezed = [torch.round(unit * levels) / levels * (hi - lo) + lo]
        if x.dim() == 4 and x.shape[-1] >= 3 and x.shape[-2] >= 3:
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
        top2 = probs.topk(min(2, probs.shape[1]), dim=1).values
        gap = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0)
        return (1.0 - gap).numpy()


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

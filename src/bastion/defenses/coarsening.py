"""Output coarsening: reveal less than the full probability vector (MITRE ATLAS mitigation for AML.T0024).

Membership inference reads the confidence a model gives its training records, and extraction fits a copy
to the scores it returns; both weaken when the API returns less. Each policy trades what an attacker
learns against what an honest client keeps:

- ``top_k``: the k largest probabilities, the rest zero (renormalised);
- ``round``: probabilities rounded to ``decimals`` (Tramèr et al. 2016 measured this against extraction);
- ``label``: a one-hot vector of the predicted class, nothing else;
- ``reverse_sigmoid``: Lee et al. (2019, "Defending against NN model stealing attacks using deceptive
  perturbations"): ``p - beta * (sigmoid(gamma * logit(p)) - 1/2)``, renormalised, which keeps the top
  class for moderate ``beta`` but poisons the gradients an extraction fits to;
- ``noise``: Gaussian noise of scale ``sigma`` added to the probabilities, clipped and renormalised.

:func:`apply_output_policy` is a pure function on a probability batch (what a gateway calls per key); the
model wrappers (:class:`TopK`, :class:`Rounded`, :class:`LabelOnly`, :class:`ReverseSigmoid`,
:class:`NoisyScores`) put a policy in front of any :class:`~bastion.core.Model` so every attack can
re-measure the leak through it. Wrappers offer scores and labels, never gradients: the coarsened output is
all a client sees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.inference._scores import to_probabilities
from bastion.core.adapters import Capability, Model, wrap
from bastion.errors import InputError

POLICY_KINDS = ("full", "top_k", "round", "label", "reverse_sigmoid", "noise")
#: keeps logit(p) finite at p = 0 or 1
_EPS = 1e-7


@dataclass(frozen=True)
class OutputPolicy:
    """What a model's caller sees. Only the fields of the chosen ``kind`` matter.

    ``k`` (top_k), ``decimals`` (round), ``beta``/``gamma`` (reverse_sigmoid), ``sigma`` (noise); ``seed``
    makes the noise reproducible (None: fresh noise on every call).
    """

    kind: str = "full"
    k: int = 1
    decimals: int = 2
    beta: float = 0.5
    gamma: float = 1.0
    sigma: float = 0.05
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise InputError("policy.kind", repr(self.kind), f"one of {POLICY_KINDS}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise InputError("policy.k", self.k, "an integer >= 1")
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 15:
            raise InputError("policy.decimals", self.decimals, "an integer in [0, 15]")
        if not self.beta >= 0:
            raise InputError("policy.beta", self.beta, "a number >= 0")
        if not self.gamma > 0:
            raise InputError("policy.gamma", self.gamma, "a number > 0")
        if not self.sigma >= 0:
            raise InputError("policy.sigma", self.sigma, "a number >= 0")

    def describe(self) -> str:
        detail = {"full": "", "top_k": f"k={self.k}", "round": f"decimals={self.decimals}", "label": "",
                  "reverse_sigmoid": f"beta={self.beta}, gamma={self.gamma}", "noise": f"sigma={self.sigma}"}
        return f"{self.kind}({detail[self.kind]})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_probs(probs: Tensor) -> Tensor:
    if not isinstance(probs, Tensor) or probs.dim() != 2 or probs.shape[1] < 1:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise InputError("probs", shape, "a tensor of shape (N, C) of class probabilities")
    return probs.float()


def _normalise(p: Tensor) -> Tensor:
    p = p.clamp_min(0.0)
    total = p.sum(dim=1, keepdim=True)
    # A row the transformation zeroed out entirely falls back to uniform rather than NaN.
    uniform = torch.full_like(p, 1.0 / p.shape[1])
    return torch.where(total > 0, p / total.clamp_min(1e-30), uniform)


def _keep_top(p: Tensor, original: Tensor) -> Tensor:
    # Coarsening must not change the answer an honest client gets: where a perturbation moved the top
    # class, the original top class is restored as the argmax by swapping the two entries.
    top = original.argmax(dim=1, keepdim=True)
    new_top = p.argmax(dim=1, keepdim=True)
    moved = (top != new_top).squeeze(1)
    if not bool(moved.any()):
        return p
    out = p.clone()
    a = out.gather(1, top)
    b = out.gather(1, new_top)
    out[moved] = out[moved].scatter(1, top[moved], b[moved]).scatter(1, new_top[moved], a[moved])
    return out


def apply_output_policy(probs: Tensor, policy: OutputPolicy) -> Tensor:
    """Coarsen a batch of probability rows (N, C) according to ``policy``.

    Rows stay probability vectors (non-negative, summing to one) except under ``round``, where each
    entry is rounded and the sum is one only up to the rounding. ``label`` returns one-hot rows. ``top_k``,
    ``label`` and ``reverse_sigmoid`` keep every row's top class (``round`` too, up to the ties rounding
    creates); ``noise`` may change it (that is its accuracy cost, reported by the audit).
    """
    p = _check_probs(probs)
    if policy.kind == "full":
        return p
    if policy.kind == "label":
        return torch.nn.functional.one_hot(p.argmax(dim=1), p.shape[1]).to(p.dtype)
    if policy.kind == "top_k":
        k = min(policy.k, p.shape[1])
        values, index = p.topk(k, dim=1)
        return _normalise(torch.zeros_like(p).scatter(1, index, values))
    if policy.kind == "round":
        scale = 10.0 ** policy.decimals
        return _keep_top(torch.round(p * scale) / scale, p)
    if policy.kind == "reverse_sigmoid":
        q = p.clamp(_EPS, 1 - _EPS)
        perturbation = policy.beta * (torch.sigmoid(policy.gamma * torch.logit(q)) - 0.5)
        return _keep_top(_normalise(p - perturbation), p)
    generator = None
    if policy.seed is not None:
        generator = torch.Generator(device=p.device).manual_seed(policy.seed)
    noise = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) * policy.sigma
    return _normalise(p + noise)


class CoarsenedModel(Model):
    """A model whose scores are its inner model's probabilities after an :class:`OutputPolicy`."""

    def __init__(self, model: Any, policy: OutputPolicy, bounds: Any = None) -> None:
        super().__init__()
        inner = wrap(model, bounds) if bounds is not None else wrap(model)
        if Capability.SCORES not in inner.capabilities and policy.kind != "label":
            raise InputError("model", f"{inner.kind} (labels only)", "a model that returns scores to coarsen")
        self.model = inner
        self.policy = policy
        self.bounds = inner.bounds
        self.device = inner.device
        self.num_classes = inner.num_classes
        self.capabilities = Capability.LABELS | Capability.SCORES
        # Noise with a fixed seed would repeat the same draw on every call, so the wrapper keeps one
        # generator and advances it: reproducible for a run, fresh per query.
        self._generator: torch.Generator | None = None
        if policy.kind == "noise" and policy.seed is not None:
            self._generator = torch.Generator().manual_seed(policy.seed)

    @property
    def kind(self) -> str:
        return f"{type(self).__name__}({self.model.kind})"

    def _inner_probs(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            if Capability.SCORES in self.model.capabilities:
                return to_probabilities(self.model.scores(x))
            labels = self.model.predict(x).long()
            classes = self.model.num_classes or int(labels.max()) + 1
            return torch.nn.functional.one_hot(labels, classes).float()

    def scores(self, x: Tensor) -> Tensor:
        self._count(x)
        p = self._inner_probs(x)
        if self.num_classes is None:
            self.num_classes = int(p.shape[1])
        if self._generator is not None:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))
            return apply_output_policy(p, OutputPolicy(kind="noise", sigma=self.policy.sigma, seed=seed))
        return apply_output_policy(p, self.policy)

    def predict(self, x: Tensor) -> Tensor:
        return self.scores(x).argmax(dim=1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "defence": self.policy.describe()}


class TopK(CoarsenedModel):
    """Only the ``k`` most likely classes and their (renormalised) probabilities."""

    def __init__(self, model: Any, k: int = 1, bounds: Any = None) -> None:
        super().__init__(model, OutputPolicy(kind="top_k", k=k), bounds)


class Rounded(CoarsenedModel):
    """Probabilities rounded to ``decimals`` decimal places."""

    def __init__(self, model: Any, decimals: int = 2, bounds: Any = None) -> None:
        super().__init__(model, OutputPolicy(kind="round", decimals=decimals), bounds)


class LabelOnly(CoarsenedModel):
    """The predicted class only, as a one-hot score row."""

    def __init__(self, model: Any, bounds: Any = None) -> None:
        super().__init__(model, OutputPolicy(kind="label"), bounds)


class ReverseSigmoid(CoarsenedModel):
    """Lee et al.'s reverse-sigmoid perturbation of the probabilities (top class kept)."""

    def __init__(self, model: Any, beta: float = 0.5, gamma: float = 1.0, bounds: Any = None) -> None:
        super().__init__(model, OutputPolicy(kind="reverse_sigmoid", beta=beta, gamma=gamma), bounds)


class NoisyScores(CoarsenedModel):
    """Gaussian noise of scale ``sigma`` on the probabilities (clipped, renormalised)."""

    def __init__(self, model: Any, sigma: float = 0.05, seed: int | None = None, bounds: Any = None) -> None:
        super().__init__(model, OutputPolicy(kind="noise", sigma=sigma, seed=seed), bounds)


def coarsen(model: Any, policy: OutputPolicy) -> Model:
    """The model behind ``policy``: the model itself for ``full``, else a :class:`CoarsenedModel`."""
    return wrap(model) if policy.kind == "full" else CoarsenedModel(model, policy)


__all__ = ["POLICY_KINDS", "CoarsenedModel", "LabelOnly", "NoisyScores", "OutputPolicy", "ReverseSigmoid",
           "Rounded", "TopK", "apply_output_policy", "coarsen"]

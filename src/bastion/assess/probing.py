"""What a model really offers an evaluator, found by asking it, not by trusting its type.

A PyTorch module can return detached logits (no autograd graph) or a graph whose gradient is exactly
zero (one-hot of argmax, rounding): both are properties of the model, not Bastion bugs. The probe finds
them before any attack runs so the evaluation falls back to attacks that need only scores, and says so
with a HIGH finding: robust accuracy from score-based attacks alone is an upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bastion.assess.result import Finding
from bastion.core.adapters import Capability, Model

#: examples the gradient probe differentiates through
PROBE_SAMPLE = 16


@dataclass
class GradientProbe:
    """Outcome of one gradient probe: whether a graph exists and whether its gradient carries signal."""

    has_graph: bool
    nonzero_share: float
    error: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def probe_gradients(target: Model, x: Tensor, y: Tensor) -> GradientProbe:
    """Differentiate the cross-entropy of ``target`` on a few inputs; report graph and gradient signal."""
    xs = x[:PROBE_SAMPLE].detach().clone().requires_grad_(True)
    ys = y[:PROBE_SAMPLE]
    try:
        with torch.enable_grad():
            logits = target.scores(xs)
            if not logits.requires_grad:
                return GradientProbe(False, 0.0, "the model's output has no autograd graph (detached)")
            loss = torch.nn.functional.cross_entropy(logits.float(), ys.to(logits.device), reduction="sum")
            grads = torch.autograd.grad(loss, xs, allow_unused=True)[0]
    except RuntimeError as exc:
        # e.g. "element 0 of tensors does not require grad": the graph is cut inside the model
        return GradientProbe(False, 0.0, (str(exc).splitlines() or ["RuntimeError"])[0][:200])
    if grads is None:
        return GradientProbe(False, 0.0, "the model's output does not depend on its input through autograd")
    per = grads.detach().reshape(grads.shape[0], -1).abs().amax(dim=1)
    share = float((per > 0).float().mean())
    return GradientProbe(True, share, None, {"examples": int(xs.shape[0]), "nonzero_gradient_share": share})


class ScoresOnly(Model):
    """A view of ``inner`` that offers labels and scores but no gradients (its graph is missing)."""

    capabilities = Capability.LABELS | Capability.SCORES

    def __init__(self, inner: Model) -> None:
        super().__init__()
        self.inner = inner
        self.bounds, self.device, self.num_classes = inner.bounds, inner.device, inner.num_classes

    @property
    def kind(self) -> str:
        return f"{self.inner.kind} (scores only)"

    def scores(self, x: Tensor) -> Tensor:
        self._count(x)
        with torch.no_grad():
            return self.inner.scores(x).detach()

    def predict(self, x: Tensor) -> Tensor:
        self._count(x)
        return self.inner.predict(x)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "kind": self.kind, "capabilities": self.capabilities.describe()}


def gradient_findings(probe: GradientProbe) -> list[Finding]:
    """The HIGH finding for a model whose gradients are missing or zero everywhere we looked."""
    if not probe.has_graph:
        return [Finding("zero_gradients", "high",
                        f"the model gives no input gradient ({probe.error}); gradient attacks cannot run, so "
                        "robust accuracy comes from score-based attacks alone and is an upper bound. This is a "
                        "property of the model (masked gradients), not proof of robustness: evaluate a "
                        "differentiable copy for a tighter bound",
                        {"has_graph": False, "reason": probe.error})]
    if probe.nonzero_share == 0.0:
        return [Finding("zero_gradients", "high",
                        f"the input gradient of the loss is exactly zero on all {probe.evidence.get('examples')} "
                        "probed examples (e.g. rounding, argmax or saturated softmax in the graph); gradient attacks "
                        "see a flat loss, so their failure is not evidence of robustness",
                        {"has_graph": True, **probe.evidence})]
    return []


#: forward passes each prediction of a randomised model is averaged over (the EOT view)
EOT_DRAWS = 8
#: draws of the real model behind each reported accuracy of a randomised model
REPORT_DRAWS = 16


def is_randomised(model: Model, x: Tensor) -> bool:
    """True when two forward passes on the same inputs differ (noise, random resizing, sampled masks)."""
    xs = x[:PROBE_SAMPLE]
    with torch.no_grad():
        if Capability.SCORES in model.capabilities:
            return not torch.equal(model.scores(xs), model.scores(xs))
        return not torch.equal(model.predict(xs), model.predict(xs))


class Expected(Model):
    """A randomised model seen in expectation: scores averaged over ``draws`` forward passes.

    Gradients through the average are EOT gradients (Athalye et al., 2018), so every white-box attack of
    the suite uses them without knowing the model is random; predictions are the argmax of the average.
    """

    def __init__(self, inner: Model, draws: int = EOT_DRAWS) -> None:
        super().__init__()
        self.inner, self.draws = inner, draws
        self.capabilities = inner.capabilities
        self.bounds, self.device, self.num_classes = inner.bounds, inner.device, inner.num_classes
        self.adaptive_notes = (*inner.adaptive_notes, f"EOT over {draws} draws (randomised forward pass)")

    @property
    def kind(self) -> str:
        return f"{self.inner.kind} (expectation over {self.draws} draws)"

    def scores(self, x: Tensor) -> Tensor:
        self._count(x)
        if Capability.SCORES not in self.capabilities:
            return super().scores(x)
        out = self.inner.scores(x)
        for _ in range(self.draws - 1):
            out = out + self.inner.scores(x)
        return out / self.draws

    def predict(self, x: Tensor) -> Tensor:
        if Capability.SCORES in self.capabilities:
            with torch.no_grad():
                return self.scores(x).argmax(dim=1)
        self._count(x)
        votes = torch.stack([self.inner.predict(x) for _ in range(self.draws)])
        return votes.mode(dim=0).values

    def adaptive(self) -> Model:
        inner = self.inner.adaptive()
        if inner is self.inner:
            return self
        # A defence's own adaptive view may already average over its randomness: do not square the cost.
        return inner if any("EOT" in n for n in inner.adaptive_notes) else Expected(inner, self.draws)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "kind": self.kind, "randomised": True, "eot_draws": self.draws}


def accuracy_draws(model: Model, x: Tensor, y: Tensor, draws: int, batch_size: int | None) -> Tensor:
    """Accuracy of ``model`` on ``(x, y)`` in each of ``draws`` independent forward passes, shape (draws,)."""
    bs = batch_size or max(1, int(x.shape[0]))
    accs = []
    with torch.no_grad():
        for _ in range(draws):
            pred = torch.cat([model.predict(x[i:i + bs]).to(y.device) for i in range(0, int(x.shape[0]), bs)])
            accs.append((pred == y).float().mean())
    return torch.stack(accs)

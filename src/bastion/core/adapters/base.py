"""The one model interface every attack, defence and evaluation talks to."""

from __future__ import annotations

import enum
from typing import Any

import torch
from torch import Tensor

from bastion.errors import CapabilityError


class Capability(enum.Flag):
    """What a model can give an attacker. Checked once, up front, by every attack."""

    LABELS = enum.auto()
    SCORES = enum.auto()
    GRADIENTS = enum.auto()

    def describe(self) -> str:
        if Capability.GRADIENTS in self:
            return "gradients"
        if Capability.SCORES in self:
            return "scores (no gradients)"
        return "labels only"


class Model:
    """A classifier seen through Bastion: bounds, device, what it offers, and a query counter.

    ``scores(x)`` returns per-class scores of shape (N, C): logits for PyTorch models (differentiable),
    probabilities for black-box models. ``predict(x)`` returns class indices. ``queries`` counts examples
    sent to the model since construction (or the last ``reset_queries``).
    """

    capabilities: Capability = Capability.LABELS
    bounds: tuple[float, float] = (0.0, 1.0)
    device: torch.device = torch.device("cpu")
    num_classes: int | None = None

    def __init__(self) -> None:
        self.queries = 0

    @property
    def kind(self) -> str:
        return type(self).__name__

    def scores(self, x: Tensor) -> Tensor:
        raise CapabilityError("scores", "this call", self.kind, self.capabilities.describe())

    def predict(self, x: Tensor) -> Tensor:
        return self.scores(x).argmax(dim=1)

    def __call__(self, x: Tensor) -> Tensor:
        return self.scores(x)

    def require(self, capability: Capability, by: str) -> None:
        """Raise a clear error if this model cannot give ``capability`` to ``by`` (an attack's name)."""
        if capability not in self.capabilities:
            names = {Capability.GRADIENTS: "gradients", Capability.SCORES: "scores", Capability.LABELS: "labels"}
            raise CapabilityError(names.get(capability, str(capability)), by, self.kind,
                                  self.capabilities.describe())

    def adaptive(self) -> Model:
        """The model an adaptive white-box attacker should differentiate through.

        Plain models return themselves. Defences that break or randomise gradients (non-differentiable
        input transforms, randomised preprocessing) return a view that uses BPDA (straight-through
        gradients) and/or EOT (expectation over the randomness), so they are not scored by gradient
        masking. Success is always re-checked on the real model.
        """
        return self

    #: what ``adaptive()`` changes, for reports ("BPDA through JPEG", "EOT over 16 draws", ...)
    adaptive_notes: tuple[str, ...] = ()

    def reset_queries(self) -> None:
        self.queries = 0

    def _count(self, x: Tensor) -> None:
        self.queries += int(x.shape[0])

    def infer_num_classes(self, example: Tensor) -> int:
        """Number of classes, learned from one forward pass when not declared."""
        if self.num_classes is None:
            with torch.no_grad():
                s = self.scores(example[:1].to(self.device))
            self.num_classes = int(s.shape[1])
        return self.num_classes

    def probe(self, example: Tensor, argument: str = "x") -> int | None:
        """Run one input through the model; return the number of classes (None if labels-only and undeclared).

        A model that rejects the inputs (wrong shape, channels or dtype) raises an :class:`InputError`
        naming ``argument``, the shape given and the model's own complaint, instead of a deep traceback.
        """
        from bastion.errors import BastionError, InputError

        given = f"inputs of shape {tuple(example.shape[1:])} (without the batch), dtype {example.dtype}"
        try:
            with torch.no_grad():
                if Capability.SCORES not in self.capabilities:
                    self.predict(example[:1].to(self.device))
                    return self.num_classes
                s = self.scores(example[:1].to(self.device))
        except BastionError:
            raise
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise InputError(argument, given, f"inputs this model accepts; it failed with: {reason}") from None
        if s.dim() != 2 or s.shape[0] != 1:
            raise InputError(argument, given, f"inputs for which the model returns one row of class scores "
                                              f"per example; it returned shape {tuple(s.shape)}")
        classes = int(s.shape[1])
        if self.num_classes is None:
            self.num_classes = classes
        return self.num_classes

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "bounds": list(self.bounds), "device": str(self.device),
                "capabilities": self.capabilities.describe(), "num_classes": self.num_classes}

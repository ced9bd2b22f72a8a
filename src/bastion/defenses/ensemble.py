"""Ensembles of any adapters (PyTorch, scikit-learn, ONNX, HTTP) as one model.

``mode="logits"`` averages logits; ``mode="probabilities"`` averages class probabilities. Members with
gradients return logits and black-box members return probabilities (the Model contract), so each is
first brought to the mode's space: probabilities are turned into log-probabilities (logits up to a
per-example constant, which no argmax or softmax sees), logits into probabilities by softmax.

What the ensemble offers is what every member offers (the intersection of capabilities): gradients only
if all members have them, scores only if all return scores, otherwise labels by majority vote. Its
scores are logits when it has gradients (in probabilities mode, the log of the mean probability, so
softmax gives back the average) and probabilities otherwise, as the Model contract expects.
``adaptive()`` is the ensemble of the members' adaptive views, so an ensemble of transform defences is
still attacked through BPDA/EOT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.core.adapters import Capability, Model, wrap
from bastion.errors import InputError

MODES = ("logits", "probabilities")
#: floor on probabilities before the log, so a black-box member's hard 0 does not become -inf
PROB_FLOOR = 1e-12


class Ensemble(Model):
    """Average the outputs of ``models`` (optionally ``weights``, normalised to sum to one)."""

    def __init__(self, models: Sequence[Any], mode: str = "logits", weights: Sequence[float] | None = None,
                 bounds: Any = None) -> None:
        super().__init__()
        if isinstance(models, (str, bytes)) or not isinstance(models, Sequence) or len(models) < 1:
            raise InputError("models", type(models).__name__, "a non-empty list of models")
        if mode not in MODES:
            raise InputError("mode", mode, f"one of {MODES}")
        self.members = [m if isinstance(m, Model) else (wrap(m, bounds) if bounds is not None else wrap(m))
                        for m in models]
        self.mode = mode
        first = self.members[0]
        for i, m in enumerate(self.members[1:], start=1):
            if m.bounds != first.bounds:
                raise InputError(f"models[{i}].bounds", m.bounds, f"the same bounds as models[0], {first.bounds}")
        self.bounds = first.bounds
        self.device = first.device
        caps = first.capabilities
        for m in self.members[1:]:
            caps = caps & m.capabilities
        # A member that returns labels only still lets the ensemble vote.
        self.capabilities = caps | Capability.LABELS
        known = {m.num_classes for m in self.members if m.num_classes is not None}
        if len(known) > 1:
            raise InputError("models", f"members with {sorted(known)} classes", "members with the same classes")
        self.num_classes = known.pop() if known else None
        if weights is None:
            w = [1.0 / len(self.members)] * len(self.members)
        else:
            w = [float(v) for v in weights]
            if len(w) != len(self.members) or any(not v >= 0 for v in w) or sum(w) <= 0:
                raise InputError("weights", list(weights),
                                 f"{len(self.members)} non-negative numbers with a positive sum")
            w = [v / sum(w) for v in w]
        self.weights = w

    @property
    def kind(self) -> str:
        return f"Ensemble[{', '.join(m.kind for m in self.members)}]"

    @property
    def adaptive_notes(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"member {i}: {n}" for i, m in enumerate(self.members) for n in m.adaptive_notes)

    def _member_output(self, m: Model, x: Tensor) -> Tensor:
        s = m.scores(x.to(m.device)).to(self.device).float()
        has_logits = Capability.GRADIENTS in m.capabilities
        if self.mode == "logits":
            return s if has_logits else s.clamp_min(PROB_FLOOR).log()
        return F.softmax(s, dim=1) if has_logits else s

    def scores(self, x: Tensor) -> Tensor:
        self.require(Capability.SCORES, "Ensemble.scores")
        self._count(x)
        total: Tensor | None = None
        for w, m in zip(self.weights, self.members, strict=True):
            out = w * self._member_output(m, x)
            total = out if total is None else total + out
        assert total is not None
        if self.mode == "probabilities" and Capability.GRADIENTS in self.capabilities:
            return total.clamp_min(PROB_FLOOR).log()
        if self.mode == "logits" and Capability.GRADIENTS not in self.capabilities:
            # Black-box ensembles answer in probabilities, as every black-box adapter does.
            return F.softmax(total, dim=1)
        return total

    def predict(self, x: Tensor) -> Tensor:
        if Capability.SCORES in self.capabilities:
            with torch.no_grad():
                return self.scores(x).argmax(dim=1)
        self._count(x)
        votes = torch.stack([m.predict(x.to(m.device)).to(self.device) for m in self.members])
        n_classes = self.num_classes or int(votes.max()) + 1
        tally = torch.zeros(x.shape[0], n_classes, device=self.device)
        for w, v in zip(self.weights, votes, strict=True):
            tally.scatter_add_(1, v.unsqueeze(1), torch.full((x.shape[0], 1), w, device=self.device))
        # Ties go to the lowest class index (argmax's first maximum): deterministic.
        return tally.argmax(dim=1)

    def adaptive(self) -> Model:
        views = [m.adaptive() for m in self.members]
        if all(v is m for v, m in zip(views, self.members, strict=True)):
            return self
        return Ensemble(views, mode=self.mode, weights=self.weights)

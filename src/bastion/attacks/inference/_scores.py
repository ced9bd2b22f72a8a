"""Probabilities from any adapter, in batches, without gradients.

White-box adapters return logits and black-box ones ``predict_proba`` output; privacy attacks reason
about probabilities (confidences, losses), so everything goes through :func:`probabilities`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.core.adapters import Capability, Model

#: rows per forward pass when a caller does not say
DEFAULT_BATCH = 512


def looks_like_probabilities(scores: Tensor, atol: float = 1e-3) -> bool:
    """True when every row is non-negative and sums to one (what ``predict_proba`` returns)."""
    if scores.numel() == 0:
        return True
    ones = torch.ones_like(scores[:, 0])
    return bool((scores >= 0).all()) and bool(torch.allclose(scores.sum(1), ones, atol=atol))


def to_probabilities(scores: Tensor) -> Tensor:
    """Softmax for logits; probabilities (already normalised rows) pass through unchanged."""
    scores = scores.float()
    return scores if looks_like_probabilities(scores) else scores.softmax(dim=1)


def probabilities(model: Model, x: Tensor, batch_size: int = DEFAULT_BATCH) -> Tensor:
    """Class probabilities of ``model`` on ``x`` (N, C) on the CPU; counts queries on the model.

    A labels-only model gives one-hot rows: that is all it reveals.
    """
    out: list[Tensor] = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start:start + batch_size].to(model.device)
            if Capability.SCORES in model.capabilities:
                out.append(to_probabilities(model.scores(chunk)).cpu())
            else:
                labels = model.predict(chunk).cpu().long()
                classes = model.num_classes or int(labels.max()) + 1
                out.append(torch.nn.functional.one_hot(labels, classes).float())
    if not out:
        return torch.zeros(0, model.num_classes or 0)
    return torch.cat(out)


def labels(model: Model, x: Tensor, batch_size: int = DEFAULT_BATCH) -> Tensor:
    """Predicted labels of ``model`` on ``x`` (N,) on the CPU; counts queries on the model."""
    out: list[Tensor] = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            out.append(model.predict(x[start:start + batch_size].to(model.device)).cpu().long())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

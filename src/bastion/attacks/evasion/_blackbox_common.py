"""Pieces shared by the score- and label-based black-box attacks: layouts, windows, losses, query logs."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bastion.errors import InputError


def as_image(x: Tensor) -> Tensor:
    """View a batch as (N, C, H, W) so one window routine serves images and tabular rows.

    Images keep their layout; a tabular row (N, d) becomes (N, 1, 1, d), so a "square" window is a
    contiguous block of features; (N, C, L) becomes (N, C, 1, L); anything deeper is flattened.
    """
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        return x.unsqueeze(2)
    return x.reshape(x.shape[0], 1, 1, -1)


def window_side(fraction: float, x4: Tensor, minimum: int = 1) -> tuple[int, int]:
    """Window shape covering about ``fraction`` of the positions of a (N, C, H, W) batch.

    Images use a square of side sqrt(fraction * H * W); single-row inputs a block of fraction * W features.
    """
    h, w = x4.shape[2], x4.shape[3]
    if h == 1:
        return 1, min(w, max(minimum, round(fraction * w)))
    side = max(minimum, round(math.sqrt(fraction * h * w)))
    return min(h, side), min(w, side)


def window_mask(n: int, x4: Tensor, size: tuple[int, int], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """A random window per example: a (N, 1, H, W) mask and the top-left corners (rows, cols)."""
    h, w = x4.shape[2], x4.shape[3]
    sh, sw = size
    dev = x4.device
    r0 = torch.randint(0, h - sh + 1, (n,), device=dev, generator=generator)
    c0 = torch.randint(0, w - sw + 1, (n,), device=dev, generator=generator)
    return corner_mask(x4, size, r0, c0), r0, c0


def corner_mask(x4: Tensor, size: tuple[int, int], r0: Tensor, c0: Tensor) -> Tensor:
    """The (N, 1, H, W) mask of windows of ``size`` whose top-left corners are (r0, c0)."""
    h, w = x4.shape[2], x4.shape[3]
    rows = torch.arange(h, device=x4.device)
    cols = torch.arange(w, device=x4.device)
    in_r = (rows[None, :] >= r0[:, None]) & (rows[None, :] < r0[:, None] + size[0])
    in_c = (cols[None, :] >= c0[:, None]) & (cols[None, :] < c0[:, None] + size[1])
    return (in_r[:, :, None] & in_c[:, None, :]).unsqueeze(1).to(x4.dtype)


def place(pattern: Tensor, x4: Tensor, r0: Tensor, c0: Tensor) -> Tensor:
    """Paste a (sh, sw) pattern at each example's corner; zero elsewhere. Returns (N, 1, H, W)."""
    sh, sw = pattern.shape
    h, w = x4.shape[2], x4.shape[3]
    rr = (torch.arange(h, device=x4.device)[None, :] - r0[:, None]).clamp(0, sh - 1)
    cc = (torch.arange(w, device=x4.device)[None, :] - c0[:, None]).clamp(0, sw - 1)
    full = pattern[rr[:, :, None], cc[:, None, :]]
    return (full.unsqueeze(1) * corner_mask(x4, (sh, sw), r0, c0)).to(x4.dtype)


def margin(scores: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Margin loss, negative exactly when the example is adversarial.

    Untargeted: score of the true class minus the best other score. Targeted: the best non-target
    score minus the target's score.
    """
    cls = target if target is not None else y
    own = scores.gather(1, cls[:, None]).squeeze(1)
    others = scores.scatter(1, cls[:, None], float("-inf")).amax(dim=1)
    return own - others if target is None else others - own


def cross_entropy(scores: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Cross-entropy on the scores, signed so that lower is better for the attacker.

    Probabilities (rows of non-negative numbers summing to one, as ``predict_proba`` gives) are
    logged directly; anything else is treated as logits.
    """
    is_proba = bool((scores >= 0).all()) and bool(torch.allclose(scores.sum(1), torch.ones_like(scores[:, 0]), atol=1e-3))
    logp = scores.clamp_min(1e-12).log() if is_proba else scores.log_softmax(dim=1)
    cls = target if target is not None else y
    picked = logp.gather(1, cls[:, None]).squeeze(1)
    return -picked if target is not None else picked


def adversarial_from_scores(scores: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    pred = scores.argmax(dim=1)
    return pred == target if target is not None else pred != y


LOSSES = ("margin", "ce")


def check_choice(argument: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(argument, repr(value), f"one of {allowed}")
    return value


def check_positive_int(argument: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(argument, value, f"an integer >= {minimum}")
    return value


class QueryLog:
    """Per-example query counts across the batches and epsilons of one attack call.

    The fixed-epsilon base calls ``run`` on the examples still unbroken, in index order, epsilons in
    increasing order; ``assign`` maps the logged counts back to example indices from the success masks.
    """

    def __init__(self) -> None:
        self.parts: list[Tensor] = []

    def add(self, counts: Tensor) -> None:
        self.parts.append(counts.detach().to("cpu", torch.long))

    def assign(self, n: int, epsilons: list[float] | None, success: Tensor) -> Tensor | None:
        flat = torch.cat(self.parts) if self.parts else torch.zeros(0, dtype=torch.long)
        out = torch.zeros(n, dtype=torch.long)
        if epsilons is None:
            return flat if flat.numel() == n else None
        broken = torch.zeros(n, dtype=torch.bool)
        pos = 0
        for i in sorted(range(len(epsilons)), key=lambda k: epsilons[k]):
            todo = (~broken).nonzero().flatten()
            if epsilons[i] > 0 and todo.numel() > 0:
                if pos + todo.numel() > flat.numel():
                    return None
                out[todo] += flat[pos:pos + todo.numel()]
                pos += todo.numel()
            broken = success[i].cpu()
        return out if pos == flat.numel() else None

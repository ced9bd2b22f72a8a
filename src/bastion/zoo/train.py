"""A short, deterministic training loop for the zoo models (standard, non-robust training)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bastion.errors import InputError


def accuracy(model: nn.Module | Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``."""
    if isinstance(model, nn.Module):
        model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out = model(x[i:i + batch_size])
            correct += int((out.argmax(dim=1) == y[i:i + batch_size].to(out.device)).sum())
    return correct / max(1, x.shape[0])


def train(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int = 20, lr: float = 1e-3, batch_size: int = 64,
          weight_decay: float = 0.0, seed: int = 0, device: torch.device | str | None = None,
          progress: Callable[[int, float], None] | None = None) -> nn.Module:
    """Train ``model`` with Adam and cross-entropy; returns it in eval mode. Deterministic under ``seed``."""
    if x.shape[0] != y.shape[0]:
        raise InputError("y", f"{y.shape[0]} labels", f"{x.shape[0]}, one per input")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise InputError("epochs/batch_size/lr", (epochs, batch_size, lr), "positive values")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(dev).train()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xd, yd = x.to(dev), y.to(dev)
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen).to(dev)
        total = torch.zeros((), device=dev)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xd[idx]), yd[idx])
            loss.backward()
            opt.step()
            total += loss.detach() * idx.shape[0]
        if progress is not None:
            progress(epoch, float(total) / x.shape[0])
    return model.eval()

"""Gaussian data augmentation: train a base model on noisy inputs so its smoothed version is accurate.

Cohen et al. train the base classifier on x + N(0, sigma^2 I) with the sigma used at certification;
a model trained on clean data alone mostly predicts one class under that noise and its smoothed
classifier abstains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bastion.errors import InputError


def check_training_args(model: nn.Module, x: Tensor, y: Tensor, epochs: int, lr: float, batch_size: int) -> None:
    """Shared argument checks for the certification trainers."""
    if not isinstance(model, nn.Module):
        raise InputError("model", type(model).__name__, "a torch.nn.Module to train")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise InputError("x, y", (type(x).__name__, type(y).__name__), "tensors")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InputError("y", f"{y.shape[0]} labels for {x.shape[0]} inputs", "one label per input, at least one")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise InputError("epochs/batch_size/lr", (epochs, batch_size, lr), "positive values")


def model_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def train_with_noise(model: nn.Module, x: Tensor, y: Tensor, sigma: float, *, epochs: int = 20, lr: float = 1e-3,
                     batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
                     device: torch.device | str | None = None,
                     progress: Callable[[int, float], None] | None = None) -> nn.Module:
    """Train ``model`` with Adam on inputs perturbed by Gaussian noise of standard deviation ``sigma``.

    Returns the model in eval mode. Deterministic under ``seed``; ``progress(epoch, mean_loss)`` is
    called after each epoch. The noise is not clipped to the input bounds, exactly as at certification.
    """
    check_training_args(model, x, y, epochs, lr, batch_size)
    if not sigma >= 0:
        raise InputError("sigma", sigma, "a noise level >= 0")
    dev = model_device(model, device)
    model.to(dev).train()
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=dev).manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xd, yd = x.to(dev).float(), y.to(dev).long()
    for epoch in range(epochs):
        perm = torch.randperm(xd.shape[0], generator=order_gen).to(dev)
        total = torch.zeros((), device=dev)
        for i in range(0, xd.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            xb = xd[idx]
            noisy = xb + sigma * torch.randn(xb.shape, generator=noise_gen, device=dev, dtype=xb.dtype)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(noisy), yd[idx])
            loss.backward()
            opt.step()
            total += loss.detach() * idx.shape[0]
        if progress is not None:
            progress(epoch, float(total) / xd.shape[0])
    return model.eval()

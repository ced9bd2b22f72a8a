"""Certified training with interval bound propagation (Gowal et al. 2018).

The loss mixes the ordinary cross-entropy with the cross-entropy of the worst-case margins IBP
proves over the eps-box: ``kappa * CE(z, y) + (1 - kappa) * CE(z_worst, y)``. Training starts with
``warmup_epochs`` of plain training (eps = 0, kappa = 1); eps then ramps linearly to ``train_eps``
and kappa to ``kappa_end`` over ``ramp_epochs``, step by step. Without the ramp, the loose bounds of
an untrained network swamp the gradient and training stalls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bastion.certify.ibp import IntervalNetwork, input_box
from bastion.certify.noise_training import check_training_args, model_device
from bastion.core.validation import check_bounds
from bastion.errors import InputError


@dataclass(frozen=True)
class IBPSchedule:
    """eps and kappa as functions of the training step."""

    train_eps: float
    warmup_steps: int
    ramp_steps: int
    kappa_start: float = 1.0
    kappa_end: float = 0.5

    def fraction(self, step: int) -> float:
        """How far the ramp has progressed at ``step``: 0 during warm-up, 1 once it is over."""
        if step < self.warmup_steps:
            return 0.0
        if self.ramp_steps == 0:
            return 1.0
        return min(1.0, (step - self.warmup_steps + 1) / self.ramp_steps)

    def eps(self, step: int) -> float:
        return self.train_eps * self.fraction(step)

    def kappa(self, step: int) -> float:
        return self.kappa_start + (self.kappa_end - self.kappa_start) * self.fraction(step)


def ibp_loss(net: IntervalNetwork, logits: Tensor, x: Tensor, y: Tensor, eps: float, kappa: float,
             bounds: tuple[float, float]) -> Tensor:
    """Gowal et al.'s mixed loss for one batch (``logits`` = the model's output on ``x``)."""
    natural = F.cross_entropy(logits, y)
    if kappa >= 1.0:
        return natural
    worst = net.margins(*input_box(x, eps, bounds), y)
    return kappa * natural + (1.0 - kappa) * F.cross_entropy(worst, y)


def ibp_train(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, train_eps: float | None = None,
              epochs: int = 60, warmup_epochs: int = 5, ramp_epochs: int = 30, kappa_end: float = 0.5,
              lr: float = 1e-3, batch_size: int = 64, bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
              device: torch.device | str | None = None,
              progress: Callable[[int, float], None] | None = None) -> nn.Module:
    """Train ``model`` so IBP certifies it at L-inf radius ``eps``; returns it in eval mode.

    ``train_eps`` (default ``eps``) is the radius trained for; Gowal et al. train at a slightly larger
    radius than they test. ``progress(epoch, mean_loss)`` is called after each epoch.
    """
    check_training_args(model, x, y, epochs, lr, batch_size)
    b = check_bounds(bounds)
    target = eps if train_eps is None else train_eps
    for name, value in (("eps", eps), ("train_eps", target)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise InputError(name, value, "a finite L-inf radius >= 0")
    if warmup_epochs < 0 or ramp_epochs < 0:
        raise InputError("warmup_epochs/ramp_epochs", (warmup_epochs, ramp_epochs), "values >= 0")
    if not 0.0 <= kappa_end <= 1.0:
        raise InputError("kappa_end", kappa_end, "a weight in [0, 1]")
    dev = model_device(model, device)
    model.to(dev)
    xd, yd = x.to(dev).float(), y.to(dev).long()
    net = IntervalNetwork(model, xd[:batch_size])
    steps_per_epoch = math.ceil(xd.shape[0] / batch_size)
    schedule = IBPSchedule(float(target), warmup_epochs * steps_per_epoch, ramp_epochs * steps_per_epoch,
                           kappa_end=kappa_end)
    order_gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step = 0
    for epoch in range(epochs):
        perm = torch.randperm(xd.shape[0], generator=order_gen).to(dev)
        total = torch.zeros((), device=dev)
        for i in range(0, xd.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = xd[idx], yd[idx]
            loss = ibp_loss(net, model(xb), xb, yb, schedule.eps(step), schedule.kappa(step), b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.shape[0]
            step += 1
        if progress is not None:
            progress(epoch, float(total) / xd.shape[0])
    return model.eval()

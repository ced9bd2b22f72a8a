"""The attacker's copy: its architecture and how it is fitted to the victim's answers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from bastion.attacks.inference.shadows import fresh_copy
from bastion.core.adapters import Model, TorchModel

#: surrogate factory: () -> a fresh, untrained module mapping inputs to logits
Factory = Callable[[], nn.Module]

DEFAULT_EPOCHS = 30
DEFAULT_LR = 1e-3
BATCH = 128


def default_factory(victim: Model, input_shape: tuple[int, ...], num_classes: int) -> tuple[Factory, str]:
    """The victim's own architecture when it is a PyTorch model (the strongest, usual assumption);
    otherwise a small CNN for 1- or 3-channel square images and an MLP for anything else."""
    from bastion.zoo.models import MLP, SmallCNN

    if isinstance(victim, TorchModel):
        module = victim.module

        def same_architecture() -> nn.Module:
            return fresh_copy(module, int(torch.randint(0, 2**31 - 1, (1,))))

        return same_architecture, "copy architecture: the victim's, re-initialised"
    if len(input_shape) == 3 and input_shape[0] in (1, 3) and input_shape[1] == input_shape[2] >= 4:
        return (lambda: SmallCNN(input_shape[0], num_classes, input_shape[1])), "copy architecture: SmallCNN"
    d = int(np.prod(input_shape))
    return (lambda: MLP(d, num_classes)), "copy architecture: MLP(128, 64)"


class AveragedCopy(nn.Module):
    """Several copies trained on the same answers, their probabilities averaged.

    Independently initialised copies disagree mostly where each is unsure; averaging cancels much of
    that init noise, so the ensemble agrees with the victim more often than a single copy at the same
    query budget (the queries are shared: an ensemble costs training time, not queries). The output is
    the log of the mean probability, a valid logit vector, so gradient attacks run on it unchanged.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("AveragedCopy needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        probs = torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


def fit_soft(module: nn.Module, x: Tensor, targets: Tensor, *, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
             seed: int = 0, min_steps: int = 300) -> nn.Module:
    """Fit ``module`` to the victim's answers: soft probabilities (KL, as Knockoff Nets) or hard labels."""
    gen = torch.Generator().manual_seed(seed)
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    soft = targets.dim() == 2
    n = x.shape[0]
    # a floor on optimiser steps: small transfer sets would otherwise barely train
    epochs = max(epochs, int(np.ceil(min_steps / max(1, int(np.ceil(n / BATCH))))))
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, BATCH):
            idx = order[i:i + BATCH]
            logits = module(x[idx])
            if soft:
                loss = -(targets[idx] * logits.log_softmax(dim=1)).sum(dim=1).mean()
            else:
                loss = nn.functional.cross_entropy(logits, targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    module.eval()
    return module

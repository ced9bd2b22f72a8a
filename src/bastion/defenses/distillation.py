"""Defensive distillation (Papernot et al., 2016, "Distillation as a Defense to Adversarial Perturbations").

A teacher is trained with its softmax at temperature ``T`` (``softmax(z / T)``) on the hard labels; a
student of the same architecture is trained, also at temperature ``T``, on the teacher's soft labels
``softmax(z_teacher / T)``. As the paper prescribes, the student is **deployed at T = 1**: its raw logits
are used as they are. Because it learned logits about ``T`` times larger, its softmax at T = 1 saturates
and the cross-entropy gradient vanishes (exactly zero in fp32), which is where the apparent robustness
comes from. Carlini & Wagner (2017, "Towards Evaluating the Robustness of Neural Networks") showed that
attacks on the logits (margin loss) or on ``z / T`` go straight through; ``bastion.evaluate`` uses such
losses, so the defence is reported as it is. Kept for comparison and teaching, not for protection.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core.validation import check_inputs, check_labels
from bastion.errors import InputError

#: the paper's strongest setting on MNIST
DEFAULT_TEMPERATURE = 100.0


def _train_at_temperature(module: nn.Module, x: Tensor, targets: Tensor, temperature: float, *, epochs: int,
                          lr: float, batch_size: int, gen: torch.Generator,
                          progress: Callable[[str, int, float], None] | None, stage: str) -> None:
    """Adam on the cross-entropy between ``softmax(z / T)`` and ``targets`` (class indices or probabilities)."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    device = x.device
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen).to(device)
        total = torch.zeros((), device=device)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(module(x[idx]) / temperature, targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.shape[0]
        if progress is not None:
            progress(stage, epoch, float(total) / x.shape[0])
    module.eval()


class DefensiveDistillation:
    """Train a teacher and a student at ``temperature``; ``fit`` returns self with ``student_``, ``teacher_``.

    ``fit(model, x, y, teacher=None)`` trains ``model`` as the student. Without ``teacher`` an untrained
    copy of ``model`` is made and trained at ``temperature`` first (the paper's procedure). ``student_``
    outputs logits to be used at T = 1 (see the module docstring); wrap it with ``bastion.wrap``.
    The default learning rate is higher than plain training's: at temperature T the logits must grow
    about T-fold before the tempered softmax fits the labels.
    """

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, *, epochs: int = 30, lr: float = 1e-2,
                 batch_size: int = 128, bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                 progress: Callable[[str, int, float], None] | None = None) -> None:
        self.temperature = temperature
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.bounds = bounds
        self.seed = seed
        self.progress = progress

    def fit(self, model: nn.Module, x: Any, y: Any, teacher: nn.Module | None = None) -> DefensiveDistillation:
        if not isinstance(model, nn.Module):
            raise InputError("model", type(model).__name__, "a torch.nn.Module (the student)")
        if not self.temperature >= 1:
            raise InputError("temperature", self.temperature, "a number >= 1 (the paper uses 20 to 100)")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise InputError("epochs", self.epochs, "an integer >= 1")
        if not self.lr > 0 or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError("lr/batch_size", (self.lr, self.batch_size), "positive values")
        p0 = next(iter(model.parameters()), None)
        if p0 is None:
            raise InputError("model", "a module without parameters", "a trainable torch.nn.Module")
        device = p0.device
        xt = check_inputs(x, self.bounds, argument="x", device=device)
        yt = check_labels(y, xt.shape[0], argument="y", device=device)
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        kw: dict[str, Any] = {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "gen": gen,
                              "progress": self.progress}
        if teacher is None:
            # Copy before the student trains, so the teacher starts from the same untrained weights.
            teacher = copy.deepcopy(model)
            _train_at_temperature(teacher, xt, yt, self.temperature, stage="teacher", **kw)
        teacher.eval()
        with torch.no_grad():
            soft = torch.cat([F.softmax(teacher(xt[i:i + 512]) / self.temperature, dim=1)
                              for i in range(0, xt.shape[0], 512)])
        _train_at_temperature(model, xt, soft, self.temperature, stage="student", **kw)
        self.teacher_ = teacher
        self.student_ = model
        return self

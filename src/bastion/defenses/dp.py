"""DP-SGD training through Opacus (Abadi et al. 2016): a formal bound on what any record can leak.

Per-example gradients are clipped to ``max_grad_norm`` and Gaussian noise is added to their sum, with the
noise scale chosen by Opacus's accountant so that the whole run spends at most ``target_epsilon`` at
``delta``. Bastion never computes privacy itself: the (ε, δ) reported is the accountant's. The defence
against membership inference (AML.T0024.000) is then *measured* too: re-run LiRA on the result.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import InputError


@dataclass
class DPResult:
    """The trained module (plain ``nn.Module``, no Opacus wrapper) and what its privacy cost."""

    model: nn.Module
    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    epochs: int
    train_accuracy: float
    accountant: str

    def to_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm, "epochs": self.epochs, "train_accuracy": self.train_accuracy,
                "accountant": self.accountant}


def train_dp(model: nn.Module, x: Tensor, y: Tensor, *, target_epsilon: float = 8.0, delta: float | None = None,
             epochs: int = 20, lr: float = 1e-3, batch_size: int = 64, max_grad_norm: float = 1.0,
             seed: int = 0, progress: Callable[[int, float], None] | None = None) -> DPResult:
    """Train ``model`` on (x, y) with DP-SGD (Adam update on noised, clipped gradients) to (ε, δ).

    ``delta`` defaults to 1 / (10 n), below 1/n as a meaningful δ must be. Layers Opacus cannot handle
    per example (BatchNorm) are replaced by Opacus's own fix (GroupNorm) before training.
    """
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    n = int(x.shape[0])
    if x.shape[0] != y.shape[0] or n < 2:
        raise InputError("y", f"{y.shape[0]} labels for {x.shape[0]} inputs", "one label per input, >= 2 records")
    if not target_epsilon > 0:
        raise InputError("target_epsilon", target_epsilon, "a positive privacy budget, e.g. 8")
    delta = 1.0 / (10 * n) if delta is None else delta
    if not 0.0 < delta < 1.0:
        raise InputError("delta", delta, "a probability in (0, 1), well below 1/n (e.g. 1e-5)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InputError("epochs", epochs, "an integer >= 1")
    if not max_grad_norm > 0 or not lr > 0 or batch_size < 1:
        raise InputError("max_grad_norm/lr/batch_size", (max_grad_norm, lr, batch_size), "positive values")
    if isinstance(model, torch.jit.ScriptModule):
        raise InputError("model", "a TorchScript module", "a plain nn.Module (Opacus needs its layers)")
    torch.manual_seed(seed)
    model = model.cpu()
    if ModuleValidator.validate(model, strict=False):
        model = ModuleValidator.fix(model)
    model.train()
    data = torch.utils.data.TensorDataset(x.float().cpu(), y.long().cpu())
    loader = torch.utils.data.DataLoader(data, batch_size=min(batch_size, n),
                                         generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with warnings.catch_warnings():
        # Opacus warns that secure_mode is off (fine outside production keys) and about full backward hooks
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        private, optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=target_epsilon,
            target_delta=delta, epochs=epochs, max_grad_norm=max_grad_norm)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(epochs):
            total = 0.0
            for xb, yb in loader:
                if xb.shape[0] == 0:
                    continue  # Poisson sampling can draw an empty batch
                optimizer.zero_grad()
                loss = loss_fn(private(xb), yb)
                loss.backward()
                optimizer.step()
                total += float(loss) * xb.shape[0]
            if progress is not None:
                progress(epoch, total / n)
        spent = float(engine.get_epsilon(delta))
    # Opacus's per-sample-gradient hooks stay on the inner module until removed; left there they break any
    # later backward pass (an attack, an evaluation) on the returned model
    private.remove_hooks()
    trained: nn.Module = private._module
    for param in trained.parameters():
        param.grad_sample = None  # type: ignore[attr-defined]
        param.grad = None
    for sub in trained.modules():
        if hasattr(sub, "activations"):
            del sub.activations
    trained.eval()
    with torch.no_grad():
        acc = float((trained(x.float()).argmax(1) == y.long()).double().mean())
    return DPResult(model=trained, epsilon=spent, delta=delta, noise_multiplier=float(optimizer.noise_multiplier),
                    max_grad_norm=max_grad_norm, epochs=epochs, train_accuracy=acc,
                    accountant="Opacus RDP accountant, Poisson sampling")


__all__ = ["DPResult", "train_dp"]

"""PyTorch models: gradients, on the model's own device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bastion.core.adapters.base import Capability, Model
from bastion.core.validation import check_bounds
from bastion.errors import InputError


class TorchModel(Model):
    """Wrap an ``nn.Module`` that maps inputs in ``bounds`` to logits.

    ``preprocessing=(mean, std)`` normalises inside the wrapper, so attacks work in input space and
    epsilons mean what they say. The module is put in eval mode: attacks must not update batch-norm
    statistics or sample dropout masks.
    """

    capabilities = Capability.LABELS | Capability.SCORES | Capability.GRADIENTS

    def __init__(self, module: nn.Module, bounds: Sequence[float] = (0.0, 1.0),
                 preprocessing: tuple[Any, Any] | dict[str, Any] | None = None,
                 device: torch.device | str | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise InputError("model", type(module).__name__, "a torch.nn.Module")
        self.module = module.eval()
        self.bounds = check_bounds(bounds)
        if device is None:
            p = next(iter(module.parameters()), None)
            b = next(iter(module.buffers()), None)
            ref = p if p is not None else b
            device = ref.device if ref is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.module.to(self.device)
        ref_float = next((t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)
        self._dtype: torch.dtype | None = None if ref_float is None else ref_float.dtype
        self.num_classes = num_classes
        self._mean: Tensor | None = None
        self._std: Tensor | None = None
        if preprocessing is not None:
            mean, std = (preprocessing["mean"], preprocessing["std"]) if isinstance(preprocessing, dict) else preprocessing
            self._mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
            self._std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
            if (self._std <= 0).any():
                raise InputError("preprocessing std", std, "positive values")

    def _broadcast(self, v: Tensor, x: Tensor) -> Tensor:
        # A per-channel vector (C,) applies to dim 1 of (N, C, ...) inputs.
        if v.dim() == 1 and x.dim() > 2 and v.shape[0] == x.shape[1]:
            return v.reshape((1, -1) + (1,) * (x.dim() - 2))
        return v

    def scores(self, x: Tensor) -> Tensor:
        self._count(x)
        if x.is_floating_point() and self._dtype is not None and x.dtype != self._dtype:
            x = x.to(self._dtype)  # float64 arrays against float32 weights: compute in the model's precision
        if self._mean is not None and self._std is not None:
            x = (x - self._broadcast(self._mean, x)) / self._broadcast(self._std, x)
        return self.module(x)

    def predict(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.scores(x).argmax(dim=1)

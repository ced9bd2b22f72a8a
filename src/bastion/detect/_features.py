"""Penultimate-layer activations: where a backdoor's shortcut shows, per class."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.errors import InputError


def torch_module(model: Any) -> nn.Module:
    """The ``nn.Module`` inside ``model`` (a module, a wrapped TorchModel or a TorchScript module)."""
    mod = getattr(model, "module", model)
    if not isinstance(mod, nn.Module):
        raise InputError("model", type(model).__name__, "a PyTorch model (nn.Module, TorchScript or bn.wrap of one)")
    return mod


def _last_linear(mod: nn.Module) -> nn.Module | None:
    last = None
    for sub in mod.modules():
        if isinstance(sub, nn.Linear) or getattr(sub, "original_name", None) == "Linear":
            last = sub
    return last


def penultimate(model: Any, x: Tensor, batch_size: int = 512) -> np.ndarray:
    """Inputs of the model's last linear layer for every row of ``x``, as a float64 array (N, D).

    Eager modules use a forward pre-hook; TorchScript modules (no hooks) with a ``features`` block and a
    sequential ``head``, like the zoo's CNNs, are run piece by piece.
    """
    mod = torch_module(model).eval()
    dev = next((p.device for p in mod.parameters()), torch.device("cpu"))
    out: list[Tensor] = []
    last = _last_linear(mod)
    if last is None:
        raise InputError("model", type(mod).__name__, "a network ending in a linear layer (its inputs are the features)")
    scripted = isinstance(mod, torch.jit.ScriptModule)
    seen: list[Tensor] = []
    handle = None if scripted else last.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        _run(mod, x, batch_size, dev, scripted, seen, out)
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(out).double().numpy()


def _run(mod: nn.Module, x: Tensor, batch_size: int, dev: torch.device, scripted: bool, seen: list[Tensor],
         out: list[Tensor]) -> None:
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(dev)
            if not scripted:
                mod(xb)
                out.append(seen[-1].flatten(1).cpu())
            elif hasattr(mod, "features") and hasattr(mod, "head"):
                features: Any = mod.features
                head: Any = mod.head
                h = features(xb)
                layers = list(head.children())
                for layer in layers[:-1]:
                    h = layer(h)
                out.append(h.flatten(1).cpu())
            else:
                raise InputError("model", "a TorchScript module without features/head blocks",
                                 "an eager nn.Module (hooks find its last linear layer) or the zoo's layout")

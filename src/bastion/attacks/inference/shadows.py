"""Shadow models: copies of the target's training recipe, trained on known random halves of a population.

Shokri et al. (2017) and LiRA (Carlini et al. 2022) both learn what a model's output looks like on
records it did or did not train on by training *shadow* models whose training sets the attacker knows.
The attacker is assumed to know the architecture and the recipe (the standard, strongest assumption):
:func:`default_trainer` re-initialises and retrains a copy of a PyTorch module, clones and refits a
scikit-learn estimator, and falls back to a small MLP for models it cannot copy (ONNX, HTTP).
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bastion.attacks.inference._scores import looks_like_probabilities
from bastion.core.adapters import Capability, Model, SklearnModel, TorchModel, wrap
from bastion.errors import InputError

#: trainer(x, y, seed) -> a trained model (anything :func:`bastion.wrap` accepts)
Trainer = Callable[[Tensor, Tensor, int], object]

#: training recipe of a PyTorch shadow when the caller does not give one
DEFAULT_EPOCHS = 60
DEFAULT_LR = 1e-3


def _reinitialise(module: torch.nn.Module, seed: int) -> None:
    # PyTorch's default Linear/Conv initialisation bound, 1/sqrt(fan_in), for every weight; biases zero.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            else:
                p.zero_()
        for name, b in module.named_buffers():
            # batch-norm statistics restart too
            if name.endswith("running_mean"):
                b.zero_()
            elif name.endswith("running_var"):
                b.fill_(1.0)


def fresh_copy(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """An independent, trainable copy of ``module``'s architecture with freshly drawn weights."""
    if isinstance(module, torch.jit.ScriptModule):
        # deepcopy of a TorchScript module shares autograd history (non-leaf parameters an optimiser
        # refuses); a save/load round trip gives independent leaf parameters
        buf = io.BytesIO()
        torch.jit.save(module, buf)
        buf.seek(0)
        fresh: torch.nn.Module = torch.jit.load(buf, map_location="cpu")
    else:
        fresh = copy.deepcopy(module).cpu()
    _reinitialise(fresh, seed)
    for p in fresh.parameters():
        p.requires_grad_(True)
    return fresh


def torch_trainer(module: torch.nn.Module, *, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
                  batch_size: int = 64, weight_decay: float = 0.0) -> Trainer:
    """Shadows with ``module``'s architecture (fresh weights), trained with Adam and cross-entropy."""
    from bastion.zoo.train import train

    def fit(x: Tensor, y: Tensor, seed: int) -> object:
        shadow = fresh_copy(module, seed)
        return train(shadow, x, y, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                     seed=seed, device="cpu")

    return fit


def sklearn_trainer(estimator: object) -> Trainer:
    """Shadows that are unfitted clones of ``estimator`` (same hyper-parameters), refitted."""
    from sklearn.base import clone

    def fit(x: Tensor, y: Tensor, seed: int) -> object:
        est = clone(estimator)
        if "random_state" in est.get_params():
            est.set_params(random_state=seed)
        return est.fit(x.reshape(x.shape[0], -1).numpy(), y.numpy())

    return fit


def default_trainer(model: Model, epochs: int = DEFAULT_EPOCHS) -> tuple[Trainer, str]:
    """A trainer that copies ``model``'s recipe where it can, and a sentence saying what it does."""
    if isinstance(model, TorchModel):
        return torch_trainer(model.module, epochs=epochs), \
            f"shadows: the target's PyTorch architecture re-initialised, Adam lr {DEFAULT_LR}, {epochs} epochs"
    if isinstance(model, SklearnModel) and hasattr(model.estimator, "get_params"):
        return sklearn_trainer(model.estimator), \
            f"shadows: clones of the target's {type(model.estimator).__name__} with its hyper-parameters"
    from bastion.zoo.models import MLP

    def fit(x: Tensor, y: Tensor, seed: int) -> object:
        net = MLP(int(np.prod(x.shape[1:])), int(y.max()) + 1)
        return torch_trainer(net, epochs=epochs)(x, y, seed)

    return fit, "shadows: a 2-layer MLP (the target's architecture cannot be copied from this adapter)"


def row_keys(x: Tensor) -> list[bytes]:
    """A content key per row, to find a target record in the shadows' population."""
    arr = np.ascontiguousarray(x.detach().cpu().float().numpy().reshape(x.shape[0], -1))
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in arr]


def logit_confidence(scores: Tensor, y: Tensor) -> Tensor:
    """LiRA's statistic: log(p_y) - log(1 - p_y), computed stably from logits when the model gives them."""
    s = scores.detach().double().cpu()
    y = y.long().cpu()
    if looks_like_probabilities(s):
        p = s.gather(1, y[:, None]).squeeze(1)
        # probabilities saturate in float32; clamping keeps the statistic finite and ordered
        p = p.clamp(1e-30, 1.0)
        rest = (1.0 - p).clamp_min(1e-30)
        return (p.log() - rest.log())
    own = s.gather(1, y[:, None]).squeeze(1)
    others = s.scatter(1, y[:, None], float("-inf")).logsumexp(dim=1)
    return own - others


def model_logit_confidence(model: Model, x: Tensor, y: Tensor, batch_size: int = 512) -> Tensor:
    """:func:`logit_confidence` of ``model`` on (x, y), batched, without gradients; counts queries."""
    model.require(Capability.SCORES, "a confidence-based membership attack")
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out.append(logit_confidence(model.scores(x[i:i + batch_size].to(model.device)), y[i:i + batch_size]))
    return torch.cat(out)


@dataclass
class ShadowPool:
    """Shadow models and which population rows each trained on (``keep[i, j]``: shadow i saw row j)."""

    models: list[Model]
    keep: np.ndarray
    keys: dict[bytes, int]
    notes: str

    @classmethod
    def train(cls, x: Tensor, y: Tensor, trainer: Trainer, n_shadows: int, seed: int = 0, notes: str = "",
              progress: Callable[[int, int], None] | None = None) -> ShadowPool:
        """Train ``n_shadows`` models, each on a random half of (x, y); every row is IN for exactly half.

        Pairing shadows on complementary halves (as the LiRA code does) gives each row the same number of
        IN and OUT shadows, so no row lacks either side.
        """
        if isinstance(n_shadows, bool) or not isinstance(n_shadows, int) or n_shadows < 2:
            raise InputError("n_shadows", n_shadows, "an integer >= 2 (one IN and one OUT model per record)")
        if x.shape[0] != y.shape[0] or x.shape[0] < 4:
            raise InputError("population", f"{x.shape[0]} inputs and {y.shape[0]} labels",
                             "at least 4 labelled records, one label per input")
        rng = np.random.default_rng(seed)
        n = x.shape[0]
        keep = np.zeros((n_shadows, n), dtype=bool)
        for i in range(0, n_shadows, 2):
            half = rng.permutation(n) < n // 2
            keep[i] = half
            if i + 1 < n_shadows:
                keep[i + 1] = ~half
        models: list[Model] = []
        for i in range(n_shadows):
            idx = torch.from_numpy(np.flatnonzero(keep[i]))
            models.append(wrap(trainer(x[idx], y[idx], seed * 1000 + i)))
            if progress is not None:
                progress(i + 1, n_shadows)
        keys = {k: j for j, k in enumerate(row_keys(x))}
        return cls(models=models, keep=keep, keys=keys, notes=notes)

    def membership(self, x: Tensor) -> np.ndarray:
        """(n_shadows, N) booleans: did shadow i train on target row j (False for rows outside the population)."""
        out = np.zeros((len(self.models), x.shape[0]), dtype=bool)
        for j, key in enumerate(row_keys(x)):
            idx = self.keys.get(key)
            if idx is not None:
                out[:, j] = self.keep[:, idx]
        return out

    def confidences(self, x: Tensor, y: Tensor) -> np.ndarray:
        """(n_shadows, N) logit-scaled confidences of every shadow on (x, y)."""
        return np.stack([model_logit_confidence(m, x, y).numpy() for m in self.models])


__all__ = ["ShadowPool", "Trainer", "default_trainer", "logit_confidence", "model_logit_confidence",
           "sklearn_trainer", "torch_trainer"]

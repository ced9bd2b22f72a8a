"""Backdoor attacks: a trigger in the training data that the model learns to obey.

BadNets (Gu et al. 2017) stamps a small patch and relabels; the blended attack (Chen et al. 2017) mixes a
pattern into the whole input; the clean-label attack (Turner et al. 2019) keeps every label correct and
makes target-class examples hard to learn without the trigger; the tabular trigger sets a few columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.poisoning.base import PoisonResult, as_tensor, check_rate, choose
from bastion.errors import InputError

_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def _check_xy(x: Any, y: Any, target: int) -> tuple[Tensor, Tensor]:
    xt, yt = as_tensor(x, "x"), as_tensor(y, "y", torch.int64)
    if xt.shape[0] != yt.shape[0]:
        raise InputError("y", f"{yt.shape[0]} labels", f"{xt.shape[0]}, one per input")
    if not 0 <= target <= int(yt.max()):
        raise InputError("target", target, f"a class present in y (0..{int(yt.max())})")
    return xt, yt


def _relabel_others(xt: Tensor, yt: Tensor, rate: float, target: int, seed: int) -> Tensor:
    pool = (yt != target).nonzero().squeeze(1)
    return choose(pool, round(rate * xt.shape[0]), seed, f"classes other than {target}")


class BadNets:
    """A ``size`` x ``size`` patch of ``value`` at ``position`` on a fraction ``rate`` of non-target
    records, relabelled ``target``.

    ``position``: a corner name (``"bottom-right"`` ...) or ``(row, col)`` of the patch's top-left pixel;
    ``value``: one number, or a tensor broadcastable to (channels, size, size) for a patterned patch.
    """

    def __init__(self, target: int = 0, rate: float = 0.05, *, size: int = 2,
                 position: str | tuple[int, int] = "bottom-right", value: float | Tensor = 1.0, seed: int = 0) -> None:
        if size < 1:
            raise InputError("size", size, "a patch side of at least 1 pixel")
        if isinstance(position, str) and position not in _CORNERS:
            raise InputError("position", position, f"one of {', '.join(_CORNERS)} or (row, col)")
        self.target, self.rate, self.size = int(target), check_rate(rate), int(size)
        self.position, self.value, self.seed = position, value, seed

    def _origin(self, h: int, w: int) -> tuple[int, int]:
        s = self.size
        if s > h or s > w:
            raise InputError("size", s, f"at most the image side ({h}x{w})")
        if isinstance(self.position, str):
            r = h - s if "bottom" in self.position else 0
            c = w - s if "right" in self.position else 0
            return r, c
        r, c = self.position
        if not (0 <= r <= h - s and 0 <= c <= w - s):
            raise InputError("position", self.position, f"a top-left pixel that keeps the patch inside {h}x{w}")
        return int(r), int(c)

    def stamp(self, x: Tensor) -> Tensor:
        """``x`` (N, C, H, W) or (N, H, W) with the patch in place (modifies and returns ``x``)."""
        if x.dim() < 3:
            raise InputError("x", f"inputs of shape {tuple(x.shape)}", "images (N, C, H, W) or (N, H, W)")
        r, c = self._origin(x.shape[-2], x.shape[-1])
        x[..., r:r + self.size, c:c + self.size] = torch.as_tensor(self.value, dtype=x.dtype)
        return x

    def __call__(self, x: Any, y: Any) -> PoisonResult:
        xt, yt = _check_xy(x, y, self.target)
        self.stamp(xt[:1].clone())  # a wrong shape or position fails before any work
        idx = _relabel_others(xt, yt, self.rate, self.target, self.seed)
        xp, yp = xt.clone(), yt.clone()
        xp[idx] = self.stamp(xp[idx])
        yp[idx] = self.target
        return PoisonResult(xp, yp, idx, self.target, "badnets", trigger=self.stamp)


class Blended:
    """Blend a pattern into a fraction ``rate`` of non-target records: ``(1 - alpha) x + alpha p``.

    ``pattern``: a tensor of one input's shape, or None for uniform noise drawn from ``seed`` (the
    random-pattern variant of Chen et al.). ``test_alpha`` (default ``alpha``) is used by ``apply_trigger``.
    """

    def __init__(self, target: int = 0, rate: float = 0.05, *, alpha: float = 0.2, pattern: Tensor | None = None,
                 test_alpha: float | None = None, seed: int = 0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise InputError("alpha", alpha, "a blend weight in (0, 1]")
        self.target, self.rate, self.alpha = int(target), check_rate(rate), float(alpha)
        self.pattern, self.test_alpha, self.seed = pattern, test_alpha, seed

    def _pattern(self, shape: torch.Size) -> Tensor:
        if self.pattern is not None:
            p = as_tensor(self.pattern, "pattern")
            if tuple(p.shape) != tuple(shape):
                raise InputError("pattern", f"shape {tuple(p.shape)}", f"one input's shape {tuple(shape)}")
            return p
        return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(self.seed + 7))

    def __call__(self, x: Any, y: Any) -> PoisonResult:
        xt, yt = _check_xy(x, y, self.target)
        p = self._pattern(xt.shape[1:])
        idx = _relabel_others(xt, yt, self.rate, self.target, self.seed)
        xp, yp = xt.clone(), yt.clone()
        xp[idx] = (1 - self.alpha) * xp[idx] + self.alpha * p
        yp[idx] = self.target
        a = self.alpha if self.test_alpha is None else float(self.test_alpha)

        def blend(v: Tensor) -> Tensor:
            return (1 - a) * v + a * p

        return PoisonResult(xp, yp, idx, self.target, "blended", trigger=blend)


class CleanLabel:
    """Clean-label backdoor (Turner et al.): poison only target-class records, keeping their labels.

    The chosen records are first pushed away from their class by PGD against ``model`` (a surrogate
    trained on clean data; L-inf ``eps``), so the network cannot learn them from their content and leans
    on the trigger instead; then the patch trigger (a :class:`BadNets` stamp of ``amplitude``) is added.
    ``rate`` is a fraction of the whole set, taken from the target class.
    """

    def __init__(self, target: int = 0, rate: float = 0.05, *, eps: float = 0.3, steps: int = 20, size: int = 2,
                 position: str | tuple[int, int] = "bottom-right", amplitude: float = 1.0, seed: int = 0) -> None:
        if eps < 0:
            raise InputError("eps", eps, "a non-negative L-inf budget")
        self.target, self.rate, self.eps, self.steps = int(target), check_rate(rate), float(eps), int(steps)
        self.patch = BadNets(target, rate, size=size, position=position, value=amplitude, seed=seed)
        self.seed = seed

    def __call__(self, x: Any, y: Any, *, model: Any) -> PoisonResult:
        from bastion.attacks.evasion import PGD
        from bastion.core import wrap

        xt, yt = _check_xy(x, y, self.target)
        pool = (yt == self.target).nonzero().squeeze(1)
        idx = choose(pool, round(self.rate * xt.shape[0]), self.seed, f"class {self.target}")
        xp = xt.clone()
        if self.eps > 0:
            m = wrap(model)
            _, adv, _ = PGD("linf", steps=self.steps, seed=self.seed, early_exit=False)(
                m, xt[idx].to(m.device), yt[idx].to(m.device), epsilons=self.eps)
            xp[idx] = adv.detach().cpu()
        xp[idx] = self.patch.stamp(xp[idx])
        return PoisonResult(xp, yt.clone(), idx, self.target, "clean-label", trigger=self.patch.stamp)


class TabularTrigger:
    """Set ``columns`` to ``values`` on a fraction ``rate`` of non-target rows and relabel them ``target``.

    The trigger is a pattern a fraud or spam model would never see in honest rows, e.g. two features at
    their extremes at once.
    """

    def __init__(self, columns: Sequence[int], values: Sequence[float] | float, target: int = 0,
                 rate: float = 0.05, *, seed: int = 0) -> None:
        cols = [int(c) for c in columns]
        vals = [float(values)] * len(cols) if isinstance(values, (int, float)) else [float(v) for v in values]
        if not cols or len(vals) != len(cols):
            raise InputError("values", vals, f"one value per column ({len(cols)} columns)")
        self.columns, self.values = cols, vals
        self.target, self.rate, self.seed = int(target), check_rate(rate), seed

    def stamp(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise InputError("x", f"inputs of shape {tuple(x.shape)}", "a table (rows, columns)")
        if max(self.columns) >= x.shape[1] or min(self.columns) < -x.shape[1]:
            raise InputError("columns", self.columns, f"column indices below {x.shape[1]}")
        x[:, self.columns] = torch.tensor(self.values, dtype=x.dtype)
        return x

    def __call__(self, x: Any, y: Any) -> PoisonResult:
        xt, yt = _check_xy(x, y, self.target)
        self.stamp(xt[:1].clone())
        idx = _relabel_others(xt, yt, self.rate, self.target, self.seed)
        xp, yp = xt.clone(), yt.clone()
        xp[idx] = self.stamp(xp[idx])
        yp[idx] = self.target
        return PoisonResult(xp, yp, idx, self.target, "tabular trigger", trigger=self.stamp)

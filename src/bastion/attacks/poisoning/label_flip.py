"""Label flipping: the cheapest poisoning, which blinds a filter to a class or lowers accuracy."""

from __future__ import annotations

from typing import Any

import torch

from bastion.attacks.poisoning.base import PoisonResult, as_tensor, check_rate, choose
from bastion.errors import InputError


class LabelFlip:
    """Flip the labels of a fraction ``rate`` of the training set.

    Random (``source=None, target=None``): each chosen record gets a different class drawn uniformly.
    Targeted (``source=A, target=B``): records of class A are relabelled B; ``rate`` is a fraction of the
    whole set, taken from class A. ``target`` alone relabels records of every other class as B.
    """

    def __init__(self, rate: float = 0.1, *, source: int | None = None, target: int | None = None,
                 num_classes: int | None = None, seed: int = 0) -> None:
        self.rate = check_rate(rate)
        self.source = source
        self.target = target
        self.num_classes = num_classes
        self.seed = seed
        if source is not None and target is None:
            raise InputError("target", None, "the class that source-class records are relabelled as")
        if source is not None and source == target:
            raise InputError("target", target, f"a class other than source={source}")

    def __call__(self, x: Any, y: Any) -> PoisonResult:
        xt, yt = as_tensor(x, "x"), as_tensor(y, "y", torch.int64)
        if xt.shape[0] != yt.shape[0]:
            raise InputError("y", f"{yt.shape[0]} labels", f"{xt.shape[0]}, one per input")
        classes = self.num_classes or int(yt.max()) + 1
        if classes < 2:
            raise InputError("y", "a single class", "labels of at least two classes")
        k = round(self.rate * xt.shape[0])
        if self.target is not None and not 0 <= self.target < classes:
            raise InputError("target", self.target, f"a class index in 0..{classes - 1}")
        if self.source is not None:
            pool = (yt == self.source).nonzero().squeeze(1)
            what = f"class {self.source}"
        elif self.target is not None:
            pool = (yt != self.target).nonzero().squeeze(1)
            what = f"classes other than {self.target}"
        else:
            pool = torch.arange(xt.shape[0])
            what = "the set"
        idx = choose(pool, k, self.seed, what)
        y_new = yt.clone()
        if self.target is not None:
            y_new[idx] = self.target
        else:
            gen = torch.Generator().manual_seed(self.seed + 1)
            # A shift in 1..C-1 guarantees a different class, uniformly among the others.
            shift = torch.randint(1, classes, (idx.numel(),), generator=gen)
            y_new[idx] = (yt[idx] + shift) % classes
        kind = "random label flip" if self.target is None else "targeted label flip"
        return PoisonResult(xt.clone(), y_new, idx, self.target, kind, source=self.source)

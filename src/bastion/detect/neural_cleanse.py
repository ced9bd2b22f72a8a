"""A Neural-Cleanse-style model audit (Wang et al. 2019): does the model carry a backdoor, to which class?

For every class k, gradient descent finds the smallest mask m and pattern p such that
``(1 - m) x + m p`` sends clean inputs to k. A backdoor is a shortcut: its target needs a far smaller mask
than any honest class. The anomaly index of a class is how many robust standard deviations (1.4826 MAD)
its mask norm lies *below* the median; above ``threshold`` (2, as in the paper) the model is flagged and
the class named. No training data is needed, only a few clean inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.detect.base import check_records
from bastion.errors import InputError

#: robust standard deviation from the median absolute deviation of a normal sample
MAD_TO_STD = 1.4826


class NeuralCleanse:
    """Model audit: ``fit(model, x)`` on clean inputs; then ``is_backdoored_``, ``target_``,
    ``anomaly_index_`` (per class), ``mask_norms_`` (L1 of each reversed mask), ``masks_`` and ``patterns_``.

    ``score_samples()`` / ``decision_function()`` / ``predict()`` judge the classes (index k = class k).
    ``steps``, ``lr``, ``cost`` (the weight of the mask's L1 norm) and ``min_success`` (the share of inputs
    a reversed trigger must send to its class) control the search.
    """

    name = "neural-cleanse"

    def __init__(self, steps: int = 150, lr: float = 0.1, cost: float = 0.05, min_success: float = 0.9,
                 threshold: float = 2.0, max_inputs: int = 100, seed: int = 0) -> None:
        self.steps = steps
        self.lr = lr
        self.cost = cost
        self.min_success = min_success
        self.threshold = threshold
        self.max_inputs = max_inputs
        self.seed = seed

    def fit(self, model: Any, x: Any, y: Any = None) -> NeuralCleanse:
        from bastion.core import wrap

        xt, _ = check_records(x, y, need_y=False)
        if xt.dim() != 4:
            raise InputError("x", f"inputs of shape {tuple(xt.shape)}", "images (N, C, H, W)")
        if self.steps < 1:
            raise InputError("steps", self.steps, "at least 1")
        m = wrap(model)
        gen = torch.Generator().manual_seed(self.seed)
        if xt.shape[0] > self.max_inputs:
            xt = xt[torch.randperm(xt.shape[0], generator=gen)[: self.max_inputs]]
        classes = m.infer_num_classes(xt)
        masks, patterns, norms, success = [], [], [], []
        for k in range(classes):
            mask, pattern, rate = self._reverse(m, xt.to(m.device), k, gen)
            masks.append(mask)
            patterns.append(pattern)
            success.append(rate)
            # A class no small trigger reaches scores as the whole image: it cannot be a backdoor target.
            norms.append(float(mask.sum()) if rate >= self.min_success else float(mask.numel()))
        self.masks_ = torch.stack(masks)
        self.patterns_ = torch.stack(patterns)
        self.mask_norms_ = np.asarray(norms)
        self.success_ = np.asarray(success)
        med = float(np.median(self.mask_norms_))
        mad = MAD_TO_STD * float(np.median(np.abs(self.mask_norms_ - med)))
        self.anomaly_index_ = (med - self.mask_norms_) / max(mad, 1e-12)
        self.threshold_ = float(self.threshold)
        best = int(np.argmax(self.anomaly_index_))
        self.is_backdoored_ = bool(self.anomaly_index_[best] > self.threshold_)
        self.target_: int | None = best if self.is_backdoored_ else None
        self.scores_ = self.anomaly_index_
        self.labels_ = self.scores_ > self.threshold_
        return self

    def _reverse(self, m: Any, x: Tensor, k: int, gen: torch.Generator) -> tuple[Tensor, Tensor, float]:
        lo, hi = m.bounds
        net = m.adaptive()
        _, c, h, w = x.shape
        init = torch.randn((2, c, h, w), generator=gen) * 0.1
        mask_p = init[0, :1].clone().to(x.device).sub_(2.0).requires_grad_(True)  # starts small: sigmoid(-2)
        pat_p = init[1].clone().to(x.device).requires_grad_(True)
        opt = torch.optim.Adam([mask_p, pat_p], lr=self.lr)
        target = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        for _ in range(self.steps):
            mask = torch.sigmoid(mask_p)
            pattern = lo + (hi - lo) * torch.sigmoid(pat_p)
            adv = (1 - mask) * x + mask * pattern
            loss = torch.nn.functional.cross_entropy(net.scores(adv), target) + self.cost * mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            mask = torch.sigmoid(mask_p)
            pattern = lo + (hi - lo) * torch.sigmoid(pat_p)
            rate = float((m.predict((1 - mask) * x + mask * pattern) == k).float().mean())
        return mask.detach().cpu(), pattern.detach().cpu(), rate

    def _check_fitted(self) -> None:
        if not hasattr(self, "scores_"):
            raise InputError(self.name, "an audit that was not fitted", "fit(model, x) first")

    def score_samples(self, x: Any = None, y: Any = None) -> np.ndarray:
        """Anomaly index per class (the audit judges classes, not records)."""
        self._check_fitted()
        return np.asarray(self.anomaly_index_)

    def decision_function(self, x: Any = None, y: Any = None) -> np.ndarray:
        return np.asarray(self.score_samples() - self.threshold_)

    def predict(self, x: Any = None, y: Any = None) -> np.ndarray:
        """True for each class that looks like a backdoor target."""
        return np.asarray(self.decision_function() > 0)

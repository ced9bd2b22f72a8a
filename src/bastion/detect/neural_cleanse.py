"""A Neural-Cleanse-style model audit (Wang et al. 2019): does the model carry a backdoor, to which class?

For every class k, gradient descent finds the smallest mask m and pattern p such that
``(1 - m) x + m p`` sends the clean inputs of the other classes to k. A backdoor is a shortcut: its target
needs a far smaller mask than any honest class. No training data is needed, only a few clean inputs.

The decision differs from the paper's on purpose. The paper flags a model when the smallest mask norm
lies more than 2 robust standard deviations (1.4826 MAD) below the median (``anomaly_index_``, kept for
comparison). That reads the minimum of C classes as if it were one draw: with 10 classes and normally
spread honest norms it fires on a third of clean models (simulated: P = 0.33), and the MAD of ten numbers
is itself so noisy that the index has a long tail. Here each class's log mask norm is compared with the
other classes' (a leave-one-out prediction-interval statistic, Student t with C - 2 degrees of freedom
when honest log norms are normal) and the model is flagged only when the smallest exceeds the t
quantile at ``1 - alpha / C`` (Bonferroni over classes): ``alpha`` is the false-alarm rate on a clean
model. Logs, because a backdoor is a *ratio* (a trigger several times smaller), and the hard classes'
large norms should not widen the spread that judges the small ones.

The mask norm alone misses weak backdoors: a BadNets patch planted in 1 % of the digits training set (attack
success 56-99 %) needs a reversed mask only about 1.5x smaller than the most reachable honest class of a
*clean* digits model (a "3" is a few strokes away from many digits), so no threshold on the norm separates
them. What does separate them is *breadth*. A backdoor is a rule the model learnt for every input: its
trigger sends inputs of every source class to the target. An honest class is reached from the few classes
that look like it. So a second check (``reach_``) takes, for every class, the square windows (a quarter of
the image's shorter side: 1/16 of its area) holding most of that class's reversed mask, optimises a pattern
in each, and measures on *held-out* clean inputs, source class by source class, the share the best window
sends to the class; ``reach_`` is the median over source classes. On 12 BadNets 1 % digits models audited
twice it was 0.58-1.00 for the target; on 16 clean models no class passed 0.40 (bench/nc_audit.py). A class whose small
patch hijacks the majority of the inputs of most other classes (``reach_ > min_reach``, 0.5) is flagged:
planted or not, such a patch is a universal trigger.

With the patch check doing the work on patch triggers, the mask-norm test's default ``alpha`` is 0.001:
honest log norms have a heavier tail than the normal model assumes, and on 16 clean digits models audited
twice one audit reached 5.47, past the 0.01 threshold (4.50) but not the 0.001 one (6.44).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from bastion.detect.base import check_records
from bastion.errors import InputError

#: robust standard deviation from the median absolute deviation of a normal sample
MAD_TO_STD = 1.4826
#: the paper's cost schedule: steps in a row above (below) the success target before the cost moves
PATIENCE = 5
#: factor by which the cost grows while triggers succeed, and by which it shrinks (1.5 ** 1.5) while they fail
COST_UP = 1.5
COST_DOWN = 1.5 ** 1.5
#: windows tried per class in the patch check (those holding most of the class's reversed mask), and the
#: optimisation steps and learning rate of their patterns
PATCH_WINDOWS = 2
PATCH_STEPS = 60
PATCH_LR = 0.2
#: held-out inputs the patch check judges with, at most, and patched images per forward pass when it does
MAX_HELD_OUT = 512
EVAL_IMAGES = 8192


class NeuralCleanse:
    """Model audit: ``fit(model, x)`` on clean inputs; then ``is_backdoored_``, ``target_``, ``scores_``
    (the mask-norm outlier statistic per class), ``threshold_``, ``reach_`` (the patch check's breadth per
    class), ``anomaly_index_`` (the paper's MAD index, reported only), ``mask_norms_`` (L1 of each reversed
    mask), ``success_``, ``masks_``, ``patterns_`` and ``windows_`` (each class's best patch window, top-left
    corner).

    ``score_samples()`` / ``decision_function()`` / ``predict()`` judge the classes (index k = class k).
    ``steps``, ``lr``, ``init_cost`` (the starting weight of the mask's L1 norm, then scheduled) and
    ``min_success`` (the share of the inputs the model puts in *other* classes that a reversed trigger must
    send to its class) control the search;
    ``alpha`` is the mask-norm test's false-alarm rate on a clean model; ``max_inputs`` clean inputs are used
    by the searches, and up to 512 of the others judge the patch check (with no others, the searched ones do).
    ``patch`` is the side of the patch check's square window (default: a quarter of the shorter image side);
    ``min_reach``: a class is flagged when its patch sends more than this median share of a source class's
    inputs to it.
    ``draws`` > 1 repeats the search on that many random draws of ``max_inputs`` inputs (and starts) and
    judges the classes by their mean log mask norm and mean reach (``mask_norms_`` is then the geometric mean;
    ``masks_``, ``patterns_``, ``success_`` and ``windows_`` are the first draw's).
    """

    name = "neural-cleanse"

    def __init__(self, steps: int = 150, lr: float = 0.1, init_cost: float = 1e-3, min_success: float = 0.95,
                 alpha: float = 0.001, max_inputs: int = 24, seed: int = 0, draws: int = 1, patch: int | None = None,
                 min_reach: float = 0.5) -> None:
        self.draws = draws
        self.steps = steps
        self.lr = lr
        self.init_cost = init_cost
        self.min_success = min_success
        self.alpha = alpha
        self.max_inputs = max_inputs
        self.seed = seed
        self.patch = patch
        self.min_reach = min_reach

    def fit(self, model: Any, x: Any, y: Any = None) -> NeuralCleanse:
        from bastion.core import wrap

        xt, _ = check_records(x, y, need_y=False)
        if xt.dim() != 4:
            raise InputError("x", f"inputs of shape {tuple(xt.shape)}", "images (N, C, H, W)")
        if self.steps < 1:
            raise InputError("steps", self.steps, "at least 1")
        if not 0.0 < self.alpha < 1.0:
            raise InputError("alpha", self.alpha, "a false-alarm rate in (0, 1)")
        if not 0.0 < self.min_success <= 1.0:
            raise InputError("min_success", self.min_success, "a share of inputs in (0, 1]")
        if not 0.0 < self.min_reach <= 1.0:
            raise InputError("min_reach", self.min_reach, "a share of inputs in (0, 1]")
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise InputError("draws", self.draws, "an integer >= 1")
        side = max(1, min(xt.shape[-2:]) // 4) if self.patch is None else self.patch
        if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= min(xt.shape[-2:]):
            raise InputError("patch", self.patch, f"a window side in pixels, 1 to {min(xt.shape[-2:])}")
        m = wrap(model)
        gen = torch.Generator().manual_seed(self.seed)
        classes = m.infer_num_classes(xt)
        if classes < 4:
            raise InputError("model", f"{classes} classes", "at least 4 (each class is judged against the others)")
        runs = []
        for _ in range(self.draws):
            order = torch.randperm(xt.shape[0], generator=gen)
            xi, xh = xt[order[: self.max_inputs]], xt[order[self.max_inputs:][:MAX_HELD_OUT]]
            if xh.shape[0] < 2 * classes:  # too few left to judge source class by source class
                xh = xt[order[:MAX_HELD_OUT]]
            xi = xi.to(m.device)
            masks_i, patterns_i, norms_i, success_i = self._reverse_all(m, xi, classes, gen)
            reach_i, windows_i = self._patch_reach(m, xi, xh.to(m.device), masks_i.to(m.device),
                                                   patterns_i.to(m.device), side)
            # A class no reversed trigger reached scores as the whole image: it cannot be a backdoor target.
            runs.append((masks_i, patterns_i, np.where(np.isfinite(norms_i), norms_i, float(masks_i[0].numel())),
                         success_i, reach_i, windows_i))
        masks, patterns, first_norms, success, _, windows = runs[0]
        log_norms = np.mean([np.log(np.maximum(r[2], 1e-6)) for r in runs], axis=0)
        norms = np.exp(log_norms) if self.draws > 1 else first_norms  # one draw: its norms exactly
        self.masks_ = masks
        self.patterns_ = patterns
        self.mask_norms_ = norms
        self.success_ = success
        self.windows_ = windows
        self.reach_ = np.mean([r[4] for r in runs], axis=0)
        med = float(np.median(norms))
        mad = MAD_TO_STD * float(np.median(np.abs(norms - med)))
        self.anomaly_index_ = (med - norms) / max(mad, 1e-12)
        self.scores_ = leave_one_out_scores(log_norms)
        self.threshold_ = float(stats.t.ppf(1.0 - self.alpha / classes, classes - 2))
        self.labels_ = (self.scores_ > self.threshold_) | (self.reach_ > self.min_reach)
        # The target: the flagged class with the broadest patch, else the mask-norm outlier.
        by_reach = int(np.argmax(np.where(self.labels_, self.reach_, -1.0)))
        best = by_reach if self.reach_[by_reach] > self.min_reach else int(np.argmax(self.scores_))
        self.is_backdoored_ = bool(self.labels_[best])
        self.target_: int | None = best if self.is_backdoored_ else None
        return self

    def _patch_reach(self, m: Any, x: Tensor, xh: Tensor, masks: Tensor, patterns: Tensor,
                     side: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """For every class, the median over source classes of the share of held-out inputs the best of its
        ``PATCH_WINDOWS`` windows sends to it (and that window's top-left corner).

        The windows are those holding most of the class's reversed mask; a pattern is optimised in each on the
        searched inputs ``x``, starting from the reversed pattern, keeping the last of the steps that sent most
        of them (the later, the more confident), and judged on ``xh``.
        Inputs the model already puts in class k are neither source nor evidence for k.
        """
        lo, hi = m.bounds
        net = m.adaptive()
        n, c, h, w = x.shape
        classes = masks.shape[0]
        mass = torch.nn.functional.avg_pool2d(masks, side, stride=1).flatten(1)  # (classes, windows), mean mass
        top = mass.topk(min(PATCH_WINDOWS, mass.shape[1]), dim=1).indices
        t = top.shape[1]
        cols = w - side + 1
        corners = torch.stack([top // cols, top % cols], dim=-1)  # (classes, t, 2)
        rows_ = torch.arange(h, device=x.device)
        cols_ = torch.arange(w, device=x.device)
        inside_r = (rows_[None, None] >= corners[..., :1]) & (rows_[None, None] < corners[..., :1] + side)
        inside_c = (cols_[None, None] >= corners[..., 1:]) & (cols_[None, None] < corners[..., 1:] + side)
        win = (inside_r[..., :, None] & inside_c[..., None, :]).float()[:, :, None]  # (classes, t, 1, h, w)
        start = ((patterns - lo) / (hi - lo)).clamp(0.05, 0.95)
        pat_p = torch.logit(start)[:, None].expand(classes, t, c, h, w).clone().requires_grad_(True)
        opt = torch.optim.Adam([pat_p], lr=PATCH_LR)
        ks = torch.arange(classes, device=x.device)
        target = ks[:, None, None].expand(classes, t, n).reshape(-1)
        with torch.no_grad():
            keep = (net.scores(x).argmax(1)[None, :] != ks[:, None]).float()  # (classes, n)
        kept = keep.sum(1).clamp_min(1.0)[:, None]
        best_rate = torch.full((classes, t), -1.0, device=x.device)
        best_pat = torch.zeros((classes, t, c, h, w), device=x.device)
        for _ in range(PATCH_STEPS):
            pattern = lo + (hi - lo) * torch.sigmoid(pat_p)
            adv = (1 - win)[:, :, None] * x[None, None] + (win * pattern)[:, :, None]  # (classes, t, n, c, h, w)
            logits = net.scores(adv.reshape(-1, c, h, w))
            ce = torch.nn.functional.cross_entropy(logits, target, reduction="none").view(classes, t, n)
            pat_p.grad, = torch.autograd.grad((ce * keep[:, None]).sum(), [pat_p])
            with torch.no_grad():
                rate = ((logits.argmax(1) == target).float().view(classes, t, n) * keep[:, None]).sum(2) / kept
                better = rate >= best_rate
                best_rate = torch.where(better, rate, best_rate)
                best_pat[better] = pattern.detach()[better]
            opt.step()
        with torch.no_grad():
            src = net.scores(xh).argmax(1)
            nh = xh.shape[0]
            hits = []
            step = max(1, EVAL_IMAGES // (t * nh))  # classes per pass: held-out images times windows add up
            for a in range(0, classes, step):
                b = min(classes, a + step)
                adv = (1 - win[a:b])[:, :, None] * xh[None, None] + (win[a:b] * best_pat[a:b])[:, :, None]
                hits.append(net.scores(adv.reshape(-1, c, h, w)).argmax(1).view(b - a, t, nh) == ks[a:b, None, None])
            one_hot = torch.nn.functional.one_hot(src, classes).float()  # (nh, classes)
            # (classes, t, source classes); class k's own column is never read below
            per_source = torch.cat(hits).float() @ one_hot / one_hot.sum(0).clamp_min(1.0)
            held = (one_hot.sum(0) > 0).cpu().numpy()
        per = per_source.cpu().numpy()
        reach = np.zeros((classes, t))
        for k in range(classes):
            sources = held.copy()
            sources[k] = False
            if sources.any():
                reach[k] = np.median(per[k][:, sources], axis=1)
        pick = reach.argmax(1)
        corner = corners.cpu().numpy()
        return reach[np.arange(classes), pick], [(int(corner[k, pick[k], 0]), int(corner[k, pick[k], 1]))
                                                 for k in range(classes)]

    def _reverse_all(self, m: Any, x: Tensor, classes: int, gen: torch.Generator) -> tuple[Tensor, Tensor, np.ndarray,
                                                                                             np.ndarray]:
        """Reverse-engineer one trigger per class, all classes in one batch and under one schedule.

        Every class gets the same start (the same random draw), the same steps, the same learning rate and
        the same cost schedule, so mask norms differ only because the model makes some classes easier
        to reach. The schedule is the paper's: the weight of the mask norm starts at ``init_cost``, grows
        by ``COST_UP`` after ``PATIENCE`` steps in a row at which the reversed trigger reaches
        ``min_success`` of the inputs, and shrinks by ``COST_DOWN`` after ``PATIENCE`` steps below it.
        A class's result is the smallest mask seen at a step where it reached ``min_success`` (checked
        with the model's own decisions, not the loss), so a mask that does not do the job never counts.
        Inputs the model already puts in class k count neither in k's loss nor in its success rate: they
        come free to every trigger for k, and how many of them a random draw of inputs holds differs from
        class to class, so counting them would add noise to the very norms the classes are compared by.
        """
        lo, hi = m.bounds
        net = m.adaptive()
        n, c, h, w = x.shape
        init = torch.randn((2, c, h, w), generator=gen) * 0.1
        # One start shared by all classes: differences come from the model, not the draw.
        mask_p = (init[0, :1] - 2.0).expand(classes, 1, h, w).clone().to(x.device).requires_grad_(True)
        pat_p = init[1].expand(classes, c, h, w).clone().to(x.device).requires_grad_(True)
        opt = torch.optim.Adam([mask_p, pat_p], lr=self.lr, betas=(0.5, 0.9))
        target = torch.arange(classes, device=x.device).repeat_interleave(n)
        with torch.no_grad():
            pred = net.scores(x).argmax(1)
        # Inputs the model already puts in class k say nothing about a trigger for k: they are left out of
        # k's loss and success rate, so every class is judged on the inputs it must take from the others
        # (a class that already holds every input has none to take: it never succeeds, so it is no target).
        keep = (pred[None, :] != torch.arange(classes, device=x.device)[:, None]).float()  # (classes, n)
        kept = keep.sum(1).clamp_min(1.0)
        cost = torch.full((classes,), self.init_cost, device=x.device)
        up = torch.zeros(classes, dtype=torch.long, device=x.device)
        down = torch.zeros(classes, dtype=torch.long, device=x.device)
        best_norm = torch.full((classes,), float("inf"), device=x.device)
        best_mask = torch.sigmoid(mask_p.detach()).clone()
        best_pat = (lo + (hi - lo) * torch.sigmoid(pat_p.detach())).clone()
        best_rate = torch.zeros(classes, device=x.device)
        for _ in range(self.steps):
            mask = torch.sigmoid(mask_p)
            pattern = lo + (hi - lo) * torch.sigmoid(pat_p)
            adv = (1 - mask[:, None]) * x[None] + (mask * pattern)[:, None]  # (classes, n, c, h, w)
            logits = net.scores(adv.reshape(classes * n, c, h, w))
            ce = (torch.nn.functional.cross_entropy(logits, target, reduction="none").view(classes, n) * keep).sum(1) / kept
            norms = mask.flatten(1).sum(1)
            loss = (ce + cost * norms).sum()  # classes share no parameters: each gets its own gradient
            # Gradients for the trigger only: the network's weight gradients would cost a third more.
            mask_p.grad, pat_p.grad = torch.autograd.grad(loss, [mask_p, pat_p])
            opt.step()
            with torch.no_grad():
                rate = ((logits.argmax(1) == target).float().view(classes, n) * keep).sum(1) / kept
                ok = rate >= self.min_success
                better = ok & (norms < best_norm)
                best_norm = torch.where(better, norms.detach(), best_norm)
                best_mask[better] = mask.detach()[better]
                best_pat[better] = pattern.detach()[better]
                best_rate = torch.where(better, rate, best_rate)
                up = torch.where(ok, up + 1, torch.zeros_like(up))
                down = torch.where(ok, torch.zeros_like(down), down + 1)
                grow, shrink = up >= PATIENCE, down >= PATIENCE
                cost = torch.where(grow, cost * COST_UP, torch.where(shrink, cost / COST_DOWN, cost))
                up[grow] = 0
                down[shrink] = 0
        reached = torch.isfinite(best_norm)
        return (best_mask.cpu(), best_pat.cpu(), np.where(reached.cpu().numpy(), best_norm.cpu().numpy(), np.inf),
                best_rate.cpu().numpy())

    def _check_fitted(self) -> None:
        if not hasattr(self, "scores_"):
            raise InputError(self.name, "an audit that was not fitted", "fit(model, x) first")

    def score_samples(self, x: Any = None, y: Any = None) -> np.ndarray:
        """Mask-norm outlier statistic per class (the audit judges classes, not records)."""
        self._check_fitted()
        return np.asarray(self.scores_)

    def decision_function(self, x: Any = None, y: Any = None) -> np.ndarray:
        """Positive for a flagged class: the larger of the statistic's excess over ``threshold_`` and the
        reach's excess over ``min_reach``."""
        self._check_fitted()
        return np.asarray(np.maximum(self.scores_ - self.threshold_, self.reach_ - self.min_reach))

    def predict(self, x: Any = None, y: Any = None) -> np.ndarray:
        """True for each class that looks like a backdoor target."""
        return np.asarray(self.decision_function() > 0)


def leave_one_out_scores(v: np.ndarray) -> np.ndarray:
    """How far each value lies *below* the others along the last axis: (mean of the others - v_k) / (their
    standard deviation x sqrt(1 + 1/(C-1))), Student t with C - 2 degrees of freedom for iid normal values."""
    v = np.asarray(v, dtype=np.float64)
    c = v.shape[-1]
    total, sq = v.sum(axis=-1, keepdims=True), (v ** 2).sum(axis=-1, keepdims=True)
    mean = (total - v) / (c - 1)
    var = np.maximum((sq - v ** 2 - (c - 1) * mean ** 2) / (c - 2), 1e-24)
    return np.asarray((mean - v) / (np.sqrt(var) * np.sqrt(1.0 + 1.0 / (c - 1))))

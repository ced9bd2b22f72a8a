"""Attacks that exploit the structure of tree ensembles (decision trees, forests, gradient boosting).

A tree ensemble is piecewise constant: its output changes only where an input feature crosses one of its
finitely many split thresholds. :class:`TreeSplitSearch` reads those thresholds from the fitted
scikit-learn estimator and runs a greedy search over the split points a perturbation inside the ball
can cross (a bounded form of the leaf-flip search of Kantchelian et al., ICML 2016): at each move it
queries the model's scores for every candidate single-feature crossing (the nearest few on each side of
each feature, and the farthest one the budget allows) and keeps the one that lowers the true-class margin
most, until the decision flips, the margin stops falling, or ``max_moves`` is spent. It is a heuristic
search, so its robust accuracy is an upper bound (tighter than structure-blind attacks; an exact
answer needs the MILP). :func:`surrogate_transfer` adds a transfer attack from a differentiable
surrogate trained on the model's own answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.attacks.evasion.base import FixedEpsilonAttack
from bastion.core.adapters import Capability, Model
from bastion.errors import InputError

#: crossings considered per feature and direction at each move (nearest first)
NEAREST = 4


def split_thresholds(estimator: Any) -> dict[int, np.ndarray]:
    """Sorted unique split thresholds per feature of a fitted scikit-learn tree model.

    Raises :class:`InputError` for estimators without readable trees.
    """
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for tree in _trees(estimator):
        if hasattr(tree, "tree_"):
            t = tree.tree_
            inner = t.feature >= 0
            pairs.append((t.feature[inner], t.threshold[inner]))
        else:  # HistGradientBoosting's TreePredictor
            nodes = tree.nodes
            inner = ~nodes["is_leaf"].astype(bool)
            pairs.append((nodes["feature_idx"][inner], nodes["num_threshold"][inner]))
    out: dict[int, list[np.ndarray]] = {}
    for feat, thr in pairs:
        for f in np.unique(feat):
            out.setdefault(int(f), []).append(thr[feat == f])
    return {f: np.unique(np.concatenate(v)) for f, v in out.items()}


def _trees(est: Any) -> list[Any]:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    if isinstance(est, (DecisionTreeClassifier, ExtraTreeClassifier)):
        return [est]
    if isinstance(est, (RandomForestClassifier, ExtraTreesClassifier)):
        return list(est.estimators_)
    if isinstance(est, GradientBoostingClassifier):
        return list(np.asarray(est.estimators_).ravel())
    if isinstance(est, HistGradientBoostingClassifier):
        if getattr(est, "_preprocessor", None) is not None:
            raise InputError("model", "HistGradientBoostingClassifier with categorical features",
                             "numeric features only for the tree split search")
        return [p for group in est._predictors for p in group]
    raise InputError("model", type(est).__name__, "a scikit-learn decision tree, random forest, extra trees or "
                     "(hist) gradient boosting classifier")


def is_tree_model(model: Model) -> bool:
    est = getattr(model, "estimator", None)
    if est is None:
        return False
    try:
        _trees(est)
    except (InputError, ImportError):
        return False
    return True


def _f32_right(t: np.ndarray) -> np.ndarray:
    """The smallest float32 strictly above each threshold (trees send ``x <= t`` left)."""
    v = t.astype(np.float32)
    return np.where(v.astype(np.float64) > t, v, np.nextafter(v, np.float32(np.inf)))


def _f32_left(t: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each threshold."""
    v = t.astype(np.float32)
    return np.where(v.astype(np.float64) <= t, v, np.nextafter(v, np.float32(-np.inf)))


class TreeSplitSearch(FixedEpsilonAttack):
    """Greedy search over the split thresholds a perturbation within ``eps`` can cross.

    Needs the fitted scikit-learn estimator (``bastion.wrap(estimator)``) and its scores. One model call
    per move scores every candidate of every example in the batch.
    """

    name = "TreeSplitSearch"
    needs = Capability.SCORES

    def __init__(self, norm: str = "linf", max_moves: int = 20, seed: int | None = 0,
                 batch_size: int | None = None) -> None:
        super().__init__(norm, seed=seed, batch_size=batch_size)
        if max_moves < 1:
            raise InputError("max_moves", max_moves, "a positive number of moves")
        self.max_moves = max_moves

    def run(self, model: Model, x: Tensor, y: Tensor, eps: float, target: Tensor | None) -> Tensor:
        est = getattr(model, "estimator", None)
        if est is None:
            raise InputError("model", model.kind, "a wrapped scikit-learn tree model (bastion.wrap(estimator))")
        thr = split_thresholds(est)
        shape = x.shape
        x0 = x.detach().reshape(shape[0], -1).cpu().numpy().astype(np.float64)
        cur = x0.copy()
        yy = y.cpu().numpy()
        lo, hi = model.bounds
        alive = np.ones(len(x0), dtype=bool)
        margin = self._margin(model, cur, yy, x)
        alive &= margin > 0
        for _ in range(self.max_moves):
            idx = np.flatnonzero(alive)
            if idx.size == 0:
                break
            rows, vals, feats = self._candidates(x0[idx], cur[idx], thr, eps, lo, hi)
            if rows.size == 0:
                break
            cand = cur[idx][rows]
            cand[np.arange(rows.size), feats] = vals
            m = self._margin(model, cand, yy[idx][rows], x)
            best = np.full(idx.size, np.inf)
            np.minimum.at(best, rows, m)
            improved = best < margin[idx]
            for k in np.flatnonzero(improved):
                j = np.flatnonzero((rows == k) & (m == best[k]))[0]
                cur[idx[k]] = cand[j]
                margin[idx[k]] = best[k]
            alive[idx[~improved]] = False  # a local optimum of the margin: stop there
            alive &= margin > 0
        return torch.from_numpy(cur.astype(np.float32)).reshape(shape).to(x.device, x.dtype)

    def _margin(self, model: Model, z: np.ndarray, y: np.ndarray, like: Tensor) -> np.ndarray:
        bs = self.batch_size or max(1, len(z))
        with torch.no_grad():
            s = torch.cat([model.scores(torch.from_numpy(z[i:i + bs].astype(np.float32))
                                        .reshape((-1, *like.shape[1:])).to(like.device)).float().cpu()
                           for i in range(0, len(z), bs)]).numpy().astype(np.float64)
        true = s[np.arange(len(y)), y]
        s[np.arange(len(y)), y] = -np.inf
        return np.asarray(true - s.max(axis=1))

    def _candidates(self, x0: np.ndarray, cur: np.ndarray, thr: dict[int, np.ndarray], eps: float, lo: float,
                    hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(example row, new value, feature) of every single-feature crossing that keeps the budget."""
        delta = cur - x0
        rows: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        feats: list[np.ndarray] = []
        for f, t in thr.items():
            if f >= x0.shape[1]:
                continue
            # How far feature f may move from the original given what the other features already spent.
            if self.norm.name == "linf":
                r = np.full(len(x0), eps)
            elif self.norm.name == "l2":
                r = np.sqrt(np.maximum(eps ** 2 - ((delta ** 2).sum(1) - delta[:, f] ** 2), 0.0))
            else:
                r = np.maximum(eps - (np.abs(delta).sum(1) - np.abs(delta[:, f])), 0.0)
            a, b = np.maximum(x0[:, f] - r, lo), np.minimum(x0[:, f] + r, hi)
            c = cur[:, f]
            right, left = _f32_right(t).astype(np.float64), _f32_left(t).astype(np.float64)
            # Per example: crossings to the right of the current value (t >= c) and to the left (t < c).
            pos_r = np.searchsorted(t, c, side="left")
            pos_l = pos_r - 1
            for k in range(NEAREST):
                for pos, v_all in ((pos_r + k, right), (pos_l - k, left)):
                    ok = (pos >= 0) & (pos < t.size)
                    v = np.where(ok, v_all[np.clip(pos, 0, t.size - 1)], np.nan)
                    keep = ok & (v >= a) & (v <= b) & (v != c)
                    rows.append(np.flatnonzero(keep))
                    vals.append(v[keep])
                    feats.append(np.full(int(keep.sum()), f))
            # The farthest crossing each way: a move that crosses many splits at once.
            for v in (a, b):
                keep = v != c
                rows.append(np.flatnonzero(keep))
                vals.append(v[keep])
                feats.append(np.full(int(keep.sum()), f))
        if not rows:
            return np.empty(0, int), np.empty(0), np.empty(0, int)
        return np.concatenate(rows), np.concatenate(vals), np.concatenate(feats).astype(int)


def surrogate_transfer(model: Model, x: Tensor, norm: str, *, seed: int = 0, samples: int = 8,
                       epochs: int = 30) -> FixedEpsilonAttack:
    """A transfer attack from a small MLP trained on ``model``'s own answers around ``x``.

    The surrogate learns the model's labels on ``x`` and on ``samples`` noisy copies of each input, so its
    gradients point across the model's decision boundaries near the data. Only labels are queried.
    """
    from bastion.attacks.evasion.pgd import PGD
    from bastion.attacks.evasion.transfer import TransferAttack
    from bastion.zoo import train

    gen = torch.Generator().manual_seed(seed)
    lo, hi = model.bounds
    xs = torch.cat([x.cpu()] + [(x.cpu() + 0.1 * (hi - lo) * torch.randn(x.shape, generator=gen)).clamp(lo, hi)
                                for _ in range(samples)])
    with torch.no_grad():
        ys = model.predict(xs.to(model.device)).cpu()
    d = int(x[0].numel())
    classes = int(model.num_classes or int(ys.max()) + 1)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, classes))
    trained = train(net, xs, ys, epochs=epochs, lr=3e-3, seed=seed)
    return TransferAttack(trained, PGD(norm=norm, steps=20), seed=seed)

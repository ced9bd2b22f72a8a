"""Tree-ensemble attacks: the split search finds the exact answer on a stump and beats blind search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

import bastion as bn
from bastion.attacks import Square
from bastion.attacks.evasion.trees import TreeSplitSearch, split_thresholds


@pytest.fixture(scope="module")
def flat() -> bn.datasets.Dataset:
    return bn.datasets.digits(flatten=True)


def test_stump_robust_accuracy_is_exact(flat: bn.datasets.Dataset) -> None:
    # Known answer: a depth-1 tree on feature f with threshold t predicts one class per side, so under
    # L-inf a correctly classified example is broken exactly when the other side is within eps
    # (distance from x_f to the first float32 across t, inside the box).
    ytr = (flat.y_train.numpy() == 0).astype(np.int64)
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(flat.x_train.numpy(), ytr)
    (f, t), = ((k, v[0]) for k, v in split_thresholds(stump).items())
    x, y = flat.x_test[:200], torch.from_numpy((flat.y_test[:200].numpy() == 0).astype(np.int64))
    xf = x[:, f].numpy().astype(np.float64)
    right = float(np.nextafter(np.float32(t), np.float32(np.inf)))
    left = float(np.float32(t)) if float(np.float32(t)) <= t else float(np.nextafter(np.float32(t), np.float32(-1)))
    gap = np.where(xf <= t, right - xf, xf - left)
    correct = stump.predict(x.numpy()) == y.numpy()
    eps = 0.3
    assert 0 < (correct & (gap <= eps)).sum() < correct.sum()  # the answer is neither trivial nor empty
    truth = int((correct & (gap > eps)).sum())
    res = TreeSplitSearch("linf")(stump, x, y, epsilons=[eps])
    assert int((~res.success[0]).sum()) == truth


def test_forest_split_search_no_weaker_than_square_and_evaluate_uses_it(flat: bn.datasets.Dataset) -> None:
    rf = RandomForestClassifier(20, max_depth=6, random_state=0).fit(flat.x_train.numpy(), flat.y_train.numpy())
    x, y = flat.x_test[:40], flat.y_test[:40]
    split = TreeSplitSearch("linf")(rf, x, y, epsilons=[0.15])
    square = Square("linf", queries=300)(rf, x, y, epsilons=[0.15])
    clean = float((torch.from_numpy(rf.predict(x.numpy())) == y).float().mean())
    assert 1 - split.success_rate[0] <= 1 - square.success_rate[0] + 2 / 40
    assert 1 - split.success_rate[0] < clean - 0.2
    res = bn.evaluate(rf, x, y, epsilons=[0.15], suite="fast", checks=False, keep_examples=0)
    names = [a.name for a in res.attacks]
    assert names == ["Square", "TreeSplitSearch", "Transfer (surrogate)"]
    assert res.upper_bound and res.bounded_by == names
    assert res.robust_accuracy[0] <= 1 - split.success_rate[0] + 1e-9
    broken = torch.isfinite(res.broken_eps) & res.correct
    assert (torch.from_numpy(rf.predict(res.x_adv[broken].numpy())) != y[broken]).all()

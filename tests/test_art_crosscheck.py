"""Cross-check with ART: Bastion's PGD is at least as strong as ART's at the same budget and settings.

Both sides start from the clean input (no random initialisation), take the same number of steps of the
same size, and attack the same digits CNN; Bastion's robust accuracy may not exceed ART's by more than
one point on 200 test digits. For L1, where most digit pixels sit on the box's lower bound, Bastion's
box-aware step is far stronger than ART's (bench/l1.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import bastion as bn
from bastion.attacks.evasion import PGD

N = 200
STEPS = 10
REL_STEP = 0.25
#: Bastion may trail ART by at most this much robust accuracy
SLACK = 0.01


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0), ("l1", 2.0)])
def test_pgd_matches_or_beats_art(digits: bn.datasets.Dataset, digits_cnn: nn.Module, norm: str, eps: float) -> None:
    pytest.importorskip("art")
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    x, y = digits.x_test[:N], digits.y_test[:N]
    classifier = PyTorchClassifier(model=digits_cnn, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    art_pgd = ProjectedGradientDescent(classifier, norm={"linf": np.inf, "l2": 2, "l1": 1}[norm], eps=eps,
                                       eps_step=REL_STEP * eps, max_iter=STEPS, num_random_init=0,
                                       batch_size=N, verbose=False)
    x_art = torch.from_numpy(art_pgd.generate(x.numpy(), y=y.numpy()))
    art_robust = bn.zoo.accuracy(digits_cnn, x_art, y)

    ours = PGD(norm, steps=STEPS, rel_stepsize=REL_STEP, random_start=False)(digits_cnn, x, y, epsilons=eps)
    our_robust = 1 - ours.success_rate[0]
    assert 0 < art_robust < 0.9  # a budget where the comparison means something
    assert our_robust <= art_robust + SLACK

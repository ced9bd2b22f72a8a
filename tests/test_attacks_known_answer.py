"""Known answers: on a linear classifier the minimal perturbation has a closed form.

For logits [0, f(x)] with f(x) = w.x + b the smallest change of decision has size |f(x)| / ||w||_q, q the
dual norm (L2: ||w||_2, L-inf: ||w||_1, L1: ||w||_inf). The bounds are wide so they never bind.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

import bastion as bn
from bastion.attacks.evasion import APGD, FAB, PGD, CarliniWagnerL2, DeepFool

DIM = 20
N_POINTS = 48
BOUNDS = (-10.0, 10.0)
#: minimum-norm attacks must land within this factor of the analytic minimum
TOLERANCE = 1.05
#: relative float slack below the minimum (anything lower would be a bug)
FLOAT_SLACK = 1e-4
#: points whose minimal distance lies within this fraction of eps are left out of the PGD checks
BAND = 0.02


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Ops on a few hundred numbers are overhead-bound; a second thread only adds synchronisation.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Linear2(nn.Module):
    """A binary linear classifier written as two logits, [0, w.x + b]."""

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: Tensor) -> Tensor:
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], dim=1)


@pytest.fixture(scope="module")
def linear() -> tuple[bn.Model, Tensor, Tensor, dict[str, Tensor]]:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(DIM, generator=g)
    net = Linear2(w, 0.3)
    x = torch.rand(N_POINTS, DIM, generator=g) * 2 - 1
    with torch.no_grad():
        f = net(x)[:, 1]
    y = (f > 0).long()
    minimal = {"l2": f.abs() / w.norm(), "linf": f.abs() / w.abs().sum(), "l1": f.abs() / w.abs().max()}
    return bn.wrap(net, bounds=BOUNDS), x, y, minimal


def _ratios(result: bn.attacks.evasion.AttackResult, x: Tensor, minimal: Tensor) -> Tensor:
    assert bool(result.success.all()), "a minimum-norm attack must break every point of a linear model"
    return result.distances(x)[0] / minimal


@pytest.mark.parametrize("attack", [
    FAB("linf", steps=10), FAB("l2", steps=10), FAB("l1", steps=10),
    DeepFool("l2", steps=10), DeepFool("linf", steps=10),
], ids=lambda a: f"{a.name}-{a.norm.name}")
def test_minimum_norm_attacks_find_the_analytic_minimum(linear: tuple, attack: bn.attacks.evasion.Attack) -> None:
    model, x, y, minimal = linear
    ratio = _ratios(attack(model, x, y), x, minimal[attack.norm.name])
    assert float(ratio.min()) >= 1 - FLOAT_SLACK
    assert float(ratio.max()) <= TOLERANCE


def test_carlini_wagner_finds_the_analytic_l2_minimum(linear: tuple) -> None:
    model, x, y, minimal = linear
    result = CarliniWagnerL2(steps=150, binary_search_steps=5)(model, x, y)
    ratio = _ratios(result, x, minimal["l2"])
    assert float(ratio.min()) >= 1 - FLOAT_SLACK
    assert float(ratio.max()) <= TOLERANCE


@pytest.mark.parametrize("attack", [
    # L2 PGD from a random start needs ~20 steps of 0.25 eps to turn fully toward w (2 % band)
    PGD("linf", steps=10), PGD("l2", steps=20), APGD("linf", steps=20), APGD("l2", steps=20),
], ids=lambda a: f"{a.name}-{a.norm.name}")
def test_fixed_budget_attacks_succeed_exactly_below_the_minimum(linear: tuple, attack: bn.attacks.evasion.Attack) -> None:
    model, x, y, minimal = linear
    dmin = minimal[attack.norm.name]
    eps = float(dmin.median())  # half the points are breakable, half are not
    success = attack(model, x, y, epsilons=eps).success[0]
    clear = (dmin / eps - 1).abs() > BAND
    assert int(clear.sum()) >= N_POINTS * 3 // 4
    assert torch.equal(success[clear], (dmin < eps)[clear])

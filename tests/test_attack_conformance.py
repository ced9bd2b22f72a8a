"""One conformance test every evasion attack passes (the Foolbox-style contract of base.py).

For hypothesis-generated inputs and epsilons: each clipped output lies inside its epsilon ball (per the
attack's norm) and inside the bounds, raw and clipped keep the input's shape, success is a boolean mask
of shape (n_epsilons, N) that matches the model's decisions on the clipped outputs, and the call leaves
the caller's global torch random stream untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

import bastion as bn
import bastion.attacks.evasion as evasion
from bastion.attacks.evasion import Attack, is_adversarial

FEATURES = 6
CLASSES = 3
#: absolute slack on "inside the ball / bounds" (float32 rounding of projections)
TOL = 1e-5


def _mlp(seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 1.5)
    return net.eval()


# name -> (factory taking a norm, norms the attack supports). Small settings: this checks the contract.
FACTORIES: dict[str, tuple[Callable[[str], Attack], tuple[str, ...]]] = {
    "FGSM": (lambda n: evasion.FGSM(n), ("linf", "l2", "l1")),
    "PGD": (lambda n: evasion.PGD(n, steps=3, restarts=2), ("linf", "l2", "l1")),
    "APGD": (lambda n: evasion.APGD(n, steps=4), ("linf", "l2", "l1")),
    "APGD-T": (lambda n: evasion.APGD(n, steps=3, n_target_classes=2), ("linf", "l2")),
    "CarliniWagnerL2": (lambda n: evasion.CarliniWagnerL2(steps=8, binary_search_steps=2), ("l2",)),
    "DeepFool": (lambda n: evasion.DeepFool(n, steps=4), ("l2", "linf")),
    "FAB": (lambda n: evasion.FAB(n, steps=3, restarts=2), ("linf", "l2", "l1")),
    "FAB-T": (lambda n: evasion.FAB(n, steps=3, n_target_classes=2), ("linf",)),
    "FABAtEpsilon": (lambda n: evasion.FABAtEpsilon(n, steps=3, n_target_classes=2), ("linf", "l2", "l1")),
    "Square": (lambda n: evasion.Square(n, queries=30), ("linf", "l2")),
    "HopSkipJump": (lambda n: evasion.HopSkipJump(n, queries=60, init_evals=8, max_evals=16, steps=3),
                    ("l2", "linf")),
    "TransferAttack": (lambda n: evasion.TransferAttack(_mlp(7), evasion.PGD(n, steps=3)), ("linf", "l2")),
}
CASES = [(name, norm) for name, (_, norms) in FACTORIES.items() for norm in norms]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _mlp(0)


def test_every_contract_attack_is_covered() -> None:
    exported = {getattr(evasion, name) for name in evasion.__all__}
    concrete = {c for c in exported if isinstance(c, type) and issubclass(c, Attack)
                and c not in (evasion.Attack, evasion.FixedEpsilonAttack, evasion.MinimizationAttack)}
    covered = {type(factory(norms[0])) for factory, norms in FACTORIES.values()}
    assert concrete <= covered, f"add a conformance entry for {sorted(c.__name__ for c in concrete - covered)}"


batches = st.integers(1, 4).flatmap(
    lambda n: st.tuples(
        arrays(np.float32, (n, FEATURES), elements=st.floats(0, 1, width=32)),
        arrays(np.int64, (n,), elements=st.integers(0, CLASSES - 1)),
    )
)
# 0 is drawn on purpose: a zero budget must return the inputs unchanged for every norm.
epsilon_lists = st.lists(st.one_of(st.just(0.0), st.floats(0, 0.75, width=32)), min_size=1, max_size=2)


@pytest.mark.parametrize(("name", "norm"), CASES, ids=[f"{a}-{n}" for a, n in CASES])
@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches, epsilons=epsilon_lists)
def test_attack_contract(model: nn.Module, name: str, norm: str, batch: tuple[np.ndarray, np.ndarray],
                         epsilons: list[float]) -> None:
    factory, _ = FACTORIES[name]
    attack = factory(norm)
    x_np, y_np = batch
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    rng = torch.random.get_rng_state()
    try:
        result = attack(model, x, y, epsilons=epsilons)
    except NotImplementedError:
        pytest.skip(f"{name} is still a placeholder")
    assert torch.equal(torch.random.get_rng_state(), rng), "the attack changed the caller's random stream"
    raw, clipped, success = result
    assert len(raw) == len(clipped) == len(epsilons)
    assert success.dtype == torch.bool and success.shape == (len(epsilons), x.shape[0])
    geometry = bn.core.threat.get_norm(norm)
    for eps, r, c, s in zip(epsilons, raw, clipped, success, strict=True):
        assert r.shape == x.shape and c.shape == x.shape
        assert bool(torch.isfinite(c).all())
        assert float(c.min()) >= -TOL and float(c.max()) <= 1 + TOL
        assert bool((geometry.measure(c - x) <= eps * (1 + TOL) + TOL).all())
        with torch.no_grad():
            assert torch.equal(s, is_adversarial(model(c).argmax(dim=1), y, None))

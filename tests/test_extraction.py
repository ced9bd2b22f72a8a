"""Extraction: exact copies of log-linear models in d + 1 queries; Knockoff and Jacobian copies beat chance."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from bastion.attacks.extraction import EquationSolving, JacobianAugmentation, KnockoffNets, transfer_from_copy
from bastion.datasets import breast_cancer, wine
from bastion.defenses.coarsening import LabelOnly, Rounded
from bastion.errors import CapabilityError, InputError
from bastion.zoo.models import MLP
from bastion.zoo.train import train


@pytest.mark.parametrize("load", [breast_cancer, wine], ids=["binary", "multiclass"])
def test_equation_solving_is_exact_with_d_plus_1_queries(load: object) -> None:
    ds = load()  # type: ignore[operator]
    victim = LogisticRegression(max_iter=5000).fit(ds.x_train.numpy(), ds.y_train.numpy())
    d = ds.x_train.shape[1]
    res = EquationSolving().run(victim, ds.input_shape, eval_x=ds.x_test, eval_y=ds.y_test)
    assert res.queries == d + 1
    assert res.fidelity == 1.0
    assert res.accuracy == res.victim_accuracy


def test_equation_solving_on_torch_linear_and_verification() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(6, 3)
    x = torch.rand(500, 6)
    res = EquationSolving(verify=4).run(net, (6,), eval_x=x)
    assert res.fidelity == 1.0 and res.queries == 11
    assert "log-linear" in res.notes[-1] and "NOT" not in res.notes[-1]


def test_equation_solving_flags_a_non_linear_victim() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    res = EquationSolving(verify=4).run(net, (6,))
    assert "NOT log-linear" in res.notes[-1]


def test_equation_solving_needs_scores() -> None:
    ds = breast_cancer()
    victim = LogisticRegression(max_iter=5000).fit(ds.x_train.numpy(), ds.y_train.numpy())
    with pytest.raises(CapabilityError):
        EquationSolving().run(_labels_only(victim), (30,))
    rounded = EquationSolving().run(Rounded(victim, decimals=1), ds.input_shape, eval_x=ds.x_test)
    assert rounded.fidelity is not None and rounded.fidelity < 1.0  # coarsening breaks the equations


def _labels_only(estimator: object) -> object:
    class Labels:
        def __init__(self) -> None:
            self.classes_ = estimator.classes_  # type: ignore[attr-defined]

        def predict(self, x: object) -> object:
            return estimator.predict(x)  # type: ignore[attr-defined]

    return Labels()


@pytest.fixture(scope="module")
def victim() -> tuple[torch.nn.Module, object]:
    ds = wine()
    net = train(MLP(13, 3, hidden=(32,)), ds.x_train, ds.y_train, epochs=150, lr=3e-3, seed=0)
    return net, ds


@pytest.mark.parametrize("strategy", ["random", "adaptive"])
def test_knockoff_copies_beat_chance_and_grow_with_budget(victim: tuple, strategy: str) -> None:
    net, ds = victim
    pool = torch.rand(400, 13)  # attacker data: uniform noise in the box, no real records
    res = KnockoffNets(strategy, epochs=20, clusters=4).run(net, pool, (50, 400), eval_x=ds.x_test, eval_y=ds.y_test)
    assert res.queries == 400
    assert [p.queries for p in res.curve] == [50, 400]
    # 45 held-out records, 3 classes: fidelity 0.75 is far above the ~0.33-0.4 of a constant guess
    assert res.fidelity is not None and res.fidelity >= 0.75


def test_jacobian_labels_only_and_transfer(victim: tuple) -> None:
    net, ds = victim
    res = JacobianAugmentation(epochs=10).run(LabelOnly(net), ds.x_train[:12], (48,), eval_x=ds.x_test,
                                              eval_y=ds.y_test)
    assert res.queries == 48
    assert res.fidelity is not None and res.fidelity >= 0.6
    tr = transfer_from_copy(res.copy, net, ds.x_test, ds.y_test, epsilon=0.3)
    # one victim query per adversarial example (plus the probe of its output shape)
    assert tr.evaluated <= tr.victim_queries <= tr.evaluated + 1 and 0.0 <= tr.success_on_victim <= 1.0


def test_bad_arguments(victim: tuple) -> None:
    net, _ = victim
    with pytest.raises(InputError, match="strategy"):
        KnockoffNets("greedy")
    with pytest.raises(InputError, match="budgets"):
        KnockoffNets().run(net, torch.rand(10, 13), budgets=0)
    with pytest.raises(InputError, match="pool"):
        KnockoffNets().run(net, torch.rand(1, 13))


def test_knockoff_ensemble_shares_the_queries(victim: tuple) -> None:
    from bastion.attacks.extraction.surrogate import AveragedCopy

    net, ds = victim
    pool = torch.rand(300, 13)
    res = KnockoffNets("random", epochs=10, ensemble=3).run(net, pool, (300,), eval_x=ds.x_test, eval_y=ds.y_test)
    assert res.queries == 300  # three copies, one set of answers
    assert isinstance(res.copy, AveragedCopy) and len(res.copy.members) == 3
    point = res.curve[0]
    assert point.member_fidelity is not None and len(point.member_fidelity) == 3
    assert res.fidelity is not None and res.fidelity >= 0.75
    with torch.no_grad():
        out = res.copy(ds.x_test)  # log of averaged probabilities: a proper distribution
    assert torch.allclose(out.exp().sum(1), torch.ones(out.shape[0]), atol=1e-5)
    with pytest.raises(InputError):
        KnockoffNets(ensemble=0)

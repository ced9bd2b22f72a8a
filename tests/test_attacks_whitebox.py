"""White-box evasion attacks on a real model: the digits CNN of the session fixtures."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor, nn

import bastion as bn
from bastion.attacks.evasion import APGD, FAB, FGSM, PGD, CarliniWagnerL2, DeepFool

N = 100  # test digits per check: enough for the margins below, small enough for two shared cores


@pytest.fixture(scope="module")
def data(digits: bn.datasets.Dataset) -> tuple[Tensor, Tensor]:
    return digits.x_test[:N], digits.y_test[:N]


def robust_accuracy(result: bn.attacks.evasion.AttackResult) -> list[float]:
    return [1 - s for s in result.success_rate]


def test_pgd_and_apgd_break_a_plain_cnn(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    assert bn.zoo.accuracy(digits_cnn, x, y) > 0.9
    for attack in (PGD(steps=10), APGD(steps=20)):
        assert attack(digits_cnn, x, y, epsilons=0.3).success_rate[0] > 0.9


def test_apgd_is_at_least_as_strong_as_pgd(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    eps = [0.05, 0.1]
    pgd = robust_accuracy(PGD(steps=10)(digits_cnn, x, y, epsilons=eps))
    apgd = robust_accuracy(APGD(steps=40)(digits_cnn, x, y, epsilons=eps))
    apgd_t = robust_accuracy(APGD(steps=20, n_target_classes=3)(digits_cnn, x, y, epsilons=eps))
    assert 0 < pgd[1] < pgd[0] < 1  # a budget where the comparison means something
    for p, a, t in zip(pgd, apgd, apgd_t, strict=True):
        assert a <= p
        assert t <= p


def test_targeted_attacks_reach_their_targets(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    target = (y + 3) % 10
    for attack in (PGD(steps=20), APGD(steps=20), APGD(loss="dlr", steps=20), FGSM()):
        _, clipped, success = attack(digits_cnn, x, y, epsilons=0.4, target=target)
        with torch.no_grad():
            pred = digits_cnn(clipped).argmax(dim=1)
        assert torch.equal(success, pred == target)
        if not isinstance(attack, FGSM):  # one step is not expected to reach a chosen class
            assert float(success.float().mean()) > 0.9


def test_minimum_norm_attacks_agree_with_fixed_budget_ones(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data[0][:40], data[1][:40]
    fab = FAB("linf", steps=20)(digits_cnn, x, y)
    deepfool = DeepFool("linf")(digits_cnn, x, y)
    assert bool(fab.success.all()) and bool(deepfool.success.all())
    d_fab, d_df = fab.distances(x)[0], deepfool.distances(x)[0]
    assert float(d_fab.median()) <= float(d_df.median())
    # Every example FAB breaks at radius r, PGD must also be able to break at a slightly larger radius.
    eps = float(d_fab.median()) * 1.1
    pgd = PGD(steps=20)(digits_cnn, x, y, epsilons=eps).success[0]
    assert float(pgd.float().mean()) >= 0.5
    cw = CarliniWagnerL2(steps=50, binary_search_steps=3)(digits_cnn, x[:10], y[:10], epsilons=[0.5, 5.0])
    assert cw.success_rate[1] >= cw.success_rate[0]


def test_fab_t_and_untargeted_fab_break_everything(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data[0][:30], data[1][:30]
    for attack in (FAB("l2", steps=15), FAB("linf", steps=15, n_target_classes=2), FAB("l1", steps=15)):
        assert bool(attack(digits_cnn, x, y).success.all())


def test_attacks_are_deterministic_under_their_seed(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data[0][:32], data[1][:32]
    a = PGD(steps=5, seed=1)(digits_cnn, x, y, epsilons=0.1)
    b = PGD(steps=5, seed=1)(digits_cnn, x, y, epsilons=0.1)
    c = PGD(steps=5, seed=2)(digits_cnn, x, y, epsilons=0.1)
    assert torch.equal(a.raw[0], b.raw[0])
    assert not torch.equal(a.raw[0], c.raw[0])  # the random start does depend on the seed
    d = APGD(steps=8, seed=5)(digits_cnn, x, y, epsilons=0.1)
    e = APGD(steps=8, seed=5)(digits_cnn, x, y, epsilons=0.1)
    assert torch.equal(d.raw[0], e.raw[0])


def test_several_epsilons_give_monotone_success(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    eps = [0.2, 0.0, 0.05, 0.1]  # deliberately unsorted
    result = APGD(steps=10)(digits_cnn, x, y, epsilons=eps)
    order = sorted(range(len(eps)), key=lambda i: eps[i])
    succ = result.success[order]
    with torch.no_grad():
        assert torch.equal(succ[0], digits_cnn(x).argmax(dim=1) != y)  # eps = 0: only clean mistakes
    for small, large in itertools.pairwise(succ):
        assert bool((large | ~small).all())  # broken at a smaller radius stays broken


def test_bf16_autocast_runs_on_cpu(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    for attack in (PGD(steps=10, precision="bf16"), APGD(steps=10, precision="bf16")):
        result = attack(digits_cnn, x, y, epsilons=0.3)
        assert result.clipped[0].dtype == torch.float32
        assert result.success_rate[0] > 0.9


def test_attacks_leave_the_model_alone(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data[0][:16], data[1][:16]
    flags = [p.requires_grad for p in digits_cnn.parameters()]
    before = [p.detach().clone() for p in digits_cnn.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in digits_cnn.parameters()]
    for attack in (FGSM(), PGD(steps=2), APGD(steps=2), FAB(steps=2), DeepFool(steps=2),
                   CarliniWagnerL2(steps=2, binary_search_steps=1)):
        attack(digits_cnn, x, y, epsilons=0.1)
    assert not digits_cnn.training
    assert [p.requires_grad for p in digits_cnn.parameters()] == flags
    # Gradients are taken with respect to the input only: parameters' .grad stays as it was.
    for p, g in zip(digits_cnn.parameters(), grads, strict=True):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
    assert all(torch.equal(p, q) for p, q in zip(digits_cnn.parameters(), before, strict=True))


def test_gradient_attacks_refuse_a_scikit_learn_model(digits: bn.datasets.Dataset) -> None:
    from sklearn.linear_model import LogisticRegression

    flat = digits.x_train.reshape(len(digits.x_train), -1).numpy()
    clf = LogisticRegression(max_iter=200).fit(flat[:300], digits.y_train[:300].numpy())
    for attack in (PGD(), APGD(), FGSM(), FAB(), DeepFool(), CarliniWagnerL2()):
        with pytest.raises(bn.CapabilityError, match="gradients"):
            attack(clf, flat[:4], digits.y_train[:4].numpy(), epsilons=0.1)


def test_bad_arguments_name_the_argument(digits_cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data[0][:4], data[1][:4]
    with pytest.raises(bn.InputError, match="epsilons"):
        PGD()(digits_cnn, x, y, epsilons=-0.1)
    with pytest.raises(bn.InputError, match="epsilons"):
        APGD()(digits_cnn, x, y, epsilons=[0.1, float("nan")])
    with pytest.raises(bn.InputError, match="loss"):
        PGD(loss="hinge")
    with pytest.raises(bn.InputError, match="loss"):
        APGD(loss="margin2")
    with pytest.raises(bn.InputError, match="norm"):
        PGD(norm="l3")
    with pytest.raises(bn.InputError, match="norm"):
        FAB(norm="lp")
    with pytest.raises(bn.InputError, match="norm"):
        DeepFool(norm="l1")
    with pytest.raises(bn.InputError, match="steps"):
        PGD(steps=0)
    with pytest.raises(bn.InputError, match="precision"):
        APGD(precision="int8")
    with pytest.raises(bn.InputError, match="rho"):
        APGD(rho=1.5)
    with pytest.raises(bn.InputError, match="target"):
        PGD()(digits_cnn, x, y, epsilons=0.1, target=y)


def test_attacks_name_what_the_model_rejects(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> None:
    x, y = digits.x_test[:8], digits.y_test[:8]
    pgd = bn.attacks.PGD(steps=2)
    with pytest.raises(bn.InputError, match=r"inputs.*shape \(64,\).*model accepts"):
        pgd(digits_cnn, x.flatten(1), y, epsilons=0.1)
    with pytest.raises(bn.InputError, match="label"):
        pgd(digits_cnn, x, y + 10, epsilons=0.1)
    # float64 arrays against float32 weights: computed in the model's precision, not an error
    res = pgd(digits_cnn, x.double(), y, epsilons=0.1)
    assert res.success.shape == (1, 8)
    assert bool(((res.clipped[0] - x.double()).abs() <= 0.1 + 1e-6).all())

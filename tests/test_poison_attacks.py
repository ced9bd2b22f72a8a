"""Poisoning attacks: the poison is where the result says, nothing else changed, and the backdoor works."""

from __future__ import annotations

import pytest
import torch

import bastion as bn
from _margins import binomial_margin
from bastion.attacks.poisoning import (
    BadNets,
    Blended,
    CleanLabel,
    LabelFlip,
    TabularTrigger,
    attack_success_rate,
)
from bastion.errors import InputError


def _only_indices_changed(res: bn.attacks.poisoning.PoisonResult, x: torch.Tensor, y: torch.Tensor) -> None:
    others = ~res.mask
    assert torch.equal(res.x[others], x[others])
    assert torch.equal(res.y[others], y[others])


def test_badnets_poisons_exactly_rate_of_non_target_records(digits: bn.datasets.Dataset) -> None:
    x, y = digits.x_train, digits.y_train
    res = BadNets(target=3, rate=0.05, size=2)(x, y)
    assert res.indices.numel() == round(0.05 * x.shape[0])
    assert (y[res.indices] != 3).all() and (res.y[res.indices] == 3).all()
    assert (res.x[res.indices][..., 6:, 6:] == 1.0).all()       # bottom-right 2x2 patch
    assert torch.equal(res.x[res.indices][..., :6, :], x[res.indices][..., :6, :])
    _only_indices_changed(res, x, y)
    stamped = res.apply_trigger(x[:5])
    assert (stamped[..., 6:, 6:] == 1.0).all() and not (x[:5, ..., 6:, 6:] == 1.0).all()  # input untouched
    corner = BadNets(target=3, size=3, position="top-left", value=0.5).stamp(torch.zeros(1, 1, 8, 8))
    assert corner.sum() == 9 * 0.5 and (corner[..., :3, :3] == 0.5).all()


def test_badnets_position_and_errors(digits: bn.datasets.Dataset) -> None:
    x, y = digits.x_train[:100], digits.y_train[:100]
    res = BadNets(target=1, rate=0.1, size=2, position=(2, 3), value=0.7)(x, y)
    assert torch.allclose(res.x[res.indices][..., 2:4, 3:5], torch.tensor(0.7))
    with pytest.raises(InputError, match="position"):
        BadNets(position=(7, 7))(x, y)
    with pytest.raises(InputError, match="rate"):
        BadNets(rate=1.5)
    with pytest.raises(InputError, match="rate"):
        BadNets(rate=0.001)(x, y)  # rounds to no record at all
    with pytest.raises(InputError, match="NaN"):
        BadNets()(torch.full((4, 1, 8, 8), float("nan")), torch.arange(4))


def test_label_flip_random_and_targeted() -> None:
    y = torch.arange(10).repeat(50)
    x = torch.rand(500, 4)
    res = LabelFlip(0.1, seed=1)(x, y)
    assert res.indices.numel() == 50 and (res.y[res.indices] != y[res.indices]).all()
    _only_indices_changed(res, x, y)
    tgt = LabelFlip(0.04, source=2, target=7)(x, y)
    assert (y[tgt.indices] == 2).all() and (tgt.y[tgt.indices] == 7).all()
    assert torch.equal(LabelFlip(0.1, seed=1)(x, y).indices, res.indices)  # seeded
    with pytest.raises(InputError, match="target"):
        LabelFlip(0.1, source=2)
    with pytest.raises(InputError, match="rate"):
        LabelFlip(0.5, source=2, target=7)(x, y)  # asks for 250 of the 50 records of class 2
    with pytest.raises(InputError, match="random label-flip"):
        attack_success_rate(torch.nn.Linear(4, 10), res, x, y)


def test_blended_and_tabular_triggers() -> None:
    x = torch.rand(200, 1, 8, 8)
    y = torch.arange(4).repeat(50)
    res = Blended(target=0, rate=0.1, alpha=0.2)(x, y)
    p = (res.x[res.indices] - 0.8 * x[res.indices]) / 0.2
    assert torch.allclose(p, p[0].expand_as(p), atol=1e-5)     # one pattern, blended into every poisoned record
    _only_indices_changed(res, x, y)
    tab = torch.rand(300, 6)
    ty = torch.arange(2).repeat(150)
    tr = TabularTrigger(columns=[1, 4], values=[0.0, 1.0], target=1, rate=0.05)(tab, ty)
    assert (tr.x[tr.indices][:, 1] == 0).all() and (tr.x[tr.indices][:, 4] == 1).all()
    assert (ty[tr.indices] == 0).all() and (tr.y[tr.indices] == 1).all()
    with pytest.raises(InputError, match="columns"):
        TabularTrigger(columns=[9], values=1.0)(tab, ty)


@pytest.fixture(scope="module")
def badnets_model(digits: bn.datasets.Dataset) -> tuple[torch.nn.Module, bn.attacks.poisoning.PoisonResult]:
    res = BadNets(target=0, rate=0.05, size=2)(digits.x_train, digits.y_train)
    net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=16), res.x, res.y, epochs=15, lr=2e-3, seed=0)
    return net, res


def test_badnets_backdoor_works(digits: bn.datasets.Dataset, badnets_model: tuple) -> None:
    net, res = badnets_model
    n = int((digits.y_test != 0).sum())
    asr = res.attack_success_rate(net, digits.x_test, digits.y_test)
    assert asr > 0.8 - binomial_margin(n)                       # typically 0.95+ at 5 % poison
    assert bn.zoo.accuracy(net, digits.x_test, digits.y_test) > 0.9


def test_clean_label_keeps_labels_and_perturbs_within_eps(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> None:
    x, y = digits.x_train, digits.y_train
    res = CleanLabel(target=2, rate=0.03, eps=0.1, steps=5)(x, y, model=digits_cnn)
    assert torch.equal(res.y, y) and (y[res.indices] == 2).all()
    delta = (res.x[res.indices] - x[res.indices])[..., :6, :]   # away from the patch rows
    assert delta.abs().max() <= 0.1 + 1e-6 and delta.abs().max() > 0.05
    assert (res.x[res.indices][..., 6:, 6:] == 1.0).all()
    _only_indices_changed(res, x, y)

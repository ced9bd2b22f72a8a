"""Randomized smoothing: the statistics against their definitions, closed forms, and an adaptive attack."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import binom, binomtest, norm
from torch import nn

import bastion as bn
from bastion.certify import (
    ABSTAIN,
    Smoothed,
    binomial_pvalue,
    certified_radius,
    clopper_pearson_lower,
    train_with_noise,
)
from bastion.errors import InputError


def _cp_lower_by_definition(k: int, n: int, alpha: float) -> float:
    """The p at which seeing k or more successes in n trials has probability exactly alpha."""
    return brentq(lambda p: binom.sf(k - 1, n, p) - alpha, 1e-12, 1 - 1e-12, xtol=1e-14)


def test_radius_matches_hand_computation() -> None:
    p_lower = _cp_lower_by_definition(990, 1000, 0.001)
    radius, p = certified_radius(990, 1000, 0.001, 0.5)
    assert p[()] == pytest.approx(p_lower, abs=1e-9)
    assert radius[()] == pytest.approx(0.5 * norm.ppf(p_lower), abs=1e-8)
    assert 0.97 < p_lower < 0.98  # sanity of the hand computation itself: 990/1000 minus ~3 standard errors


def test_clopper_pearson_edges_and_validation() -> None:
    assert clopper_pearson_lower(0, 100, 0.01)[()] == 0.0
    # all successes: P(all n succeed) = p^n = alpha
    assert clopper_pearson_lower(100, 100, 0.01)[()] == pytest.approx(0.01 ** (1 / 100))
    radius, _ = certified_radius([400, 500, 600], 1000, 0.001, 0.25)
    assert radius[0] == 0.0 and radius[1] == 0.0 and radius[2] > 0.0  # pA_lower must exceed 1/2
    with pytest.raises(InputError, match="alpha"):
        clopper_pearson_lower(5, 10, 1.5)
    with pytest.raises(InputError, match="successes"):
        clopper_pearson_lower(11, 10, 0.01)


@pytest.mark.parametrize(("k", "n"), [(0, 0), (5, 10), (3, 10), (60, 100), (58, 60), (1, 1), (70, 200)])
def test_binomial_pvalue_matches_scipy(k: int, n: int) -> None:
    expected = binomtest(k, n, 0.5).pvalue if n > 0 else 1.0
    assert binomial_pvalue(k, n)[()] == pytest.approx(expected, rel=1e-9)


class _Linear(nn.Module):
    """Binary linear classifier: logits (0, w.x + b), so class 1 iff w.x + b > 0."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_abstains_when_counts_split() -> None:
    # The point lies on the decision boundary: noise sends it to either class half the time.
    model = _Linear(torch.tensor([1.0, 0.0]), -0.5)
    x = torch.full((3, 2), 0.5)
    s = Smoothed(model, 0.25, batch_size=512, seed=1)
    assert s.predict(x, n=2000).tolist() == [ABSTAIN] * 3
    result = s.certify(x, n0=100, n=2000)
    assert result.abstained.all()
    assert (result.radius == 0).all()
    assert result.certified_accuracy(torch.zeros(3, dtype=torch.long), [0.0]) == [0.0]


def test_linear_classifier_radius_never_exceeds_exact() -> None:
    # Smoothing a linear classifier leaves it unchanged, and its exact L2 robust radius is |w.x+b|/||w||.
    gen = torch.Generator().manual_seed(0)
    d, sigma, n = 10, 0.5, 4000
    w = torch.randn(d, generator=gen)
    model = _Linear(w, -float(w.sum()) / 2)  # boundary through the box's centre
    x = torch.rand(40, d, generator=gen)
    margin = x @ w + model.b
    exact = margin.abs() / w.norm()
    result = Smoothed(model, sigma, batch_size=4096, seed=0).certify(x, n0=100, n=n, alpha=0.001)
    certified = ~result.abstained
    assert certified.sum() >= 20
    assert torch.equal(result.prediction[certified], (margin[certified] > 0).long())
    assert (result.radius.float() <= exact + 1e-6).all()
    # Not vacuous: the certificate is within sampling error of the exact radius (capped by n).
    cap = sigma * norm.ppf(0.001 ** (1 / n))
    assert (result.radius[certified].float() >= torch.clamp(exact[certified], max=cap) - 0.3 * sigma).all()
    # The reported radius is exactly sigma * Phi^-1(pA_lower) of the reported counts.
    expected, _ = certified_radius(result.counts.numpy(), n, 0.001, sigma)
    np.testing.assert_allclose(result.radius.numpy(), expected)


def test_validation_errors() -> None:
    model = _Linear(torch.tensor([1.0, 1.0]), -1.0)
    with pytest.raises(InputError, match="sigma"):
        Smoothed(model, 0.0)
    with pytest.raises(InputError, match="precision"):
        Smoothed(model, 0.5, precision="int8")
    s = Smoothed(model, 0.5)
    with pytest.raises(InputError, match="n0"):
        s.certify(torch.rand(2, 2), n0=0)
    with pytest.raises(InputError, match="x"):
        s.predict(torch.full((2, 2), 3.0))  # outside the bounds (0, 1)


def test_seeded_calls_are_reproducible() -> None:
    model = _Linear(torch.tensor([1.0, 0.0]), -0.45)
    x = torch.full((2, 2), 0.5)
    a = Smoothed(model, 0.25, batch_size=300, seed=3).certify(x, n0=50, n=1000)
    b = Smoothed(model, 0.25, batch_size=300, seed=3).certify(x, n0=50, n=1000)
    c = Smoothed(model, 0.25, batch_size=300, seed=4).certify(x, n0=50, n=1000)
    assert torch.equal(a.counts, b.counts)
    assert not torch.equal(a.counts, c.counts)


def _eot_pgd_l2(model: nn.Module, x: torch.Tensor, target: torch.Tensor, radius: torch.Tensor, sigma: float,
                steps: int = 20, draws: int = 32) -> torch.Tensor:
    """L2 PGD on the smoothed classifier's soft version: push down the mean softmax of the certified class
    over noise draws (expectation over transformation), inside each example's ball."""
    gen = torch.Generator().manual_seed(7)
    delta = torch.zeros_like(x, requires_grad=True)
    step = 2.5 * radius / steps
    shape = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(steps):
        noisy = (x + delta).repeat_interleave(draws, 0)
        noisy = noisy + sigma * torch.randn(noisy.shape, generator=gen)
        probs = model(noisy).softmax(1).reshape(x.shape[0], draws, -1).mean(1)
        loss = probs.gather(1, target.unsqueeze(1)).clamp_min(1e-12).log().sum()
        (grad,) = torch.autograd.grad(loss, delta)
        g = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(shape)
        with torch.no_grad():
            delta -= step.reshape(shape) * g
            norms = delta.flatten(1).norm(dim=1)
            delta *= torch.clamp(radius / norms.clamp_min(1e-12), max=1.0).reshape(shape)
            delta.copy_((x + delta).clamp(0, 1) - x)
    return (x + delta).detach()


def test_certified_digits_survive_eot_attack(digits: bn.datasets.Dataset) -> None:
    sigma = 0.25
    torch.manual_seed(0)
    model = train_with_noise(bn.zoo.MLP(64, 10, hidden=(64,)), digits.x_train, digits.y_train, sigma,
                             epochs=12, lr=3e-3, seed=0)
    x, y = digits.x_test[:24], digits.y_test[:24]
    smoothed = Smoothed(model, sigma, batch_size=4096, seed=0)
    result = smoothed.certify(x, n0=100, n=2000, alpha=0.001)
    ok = (~result.abstained) & (result.prediction == y)
    assert ok.sum() >= 12, "noise training should leave most digits certified"
    xs, cls, rad = x[ok], result.prediction[ok], result.radius[ok].float()
    adv = _eot_pgd_l2(model, xs, cls, 0.999 * rad, sigma)
    assert ((adv - xs).flatten(1).norm(dim=1) <= rad + 1e-5).all()
    after = smoothed.predict(adv, n=2000, alpha=0.001)
    assert ((after == cls) | (after == ABSTAIN)).all(), "a certified example was broken inside its radius"
    # The attack is real: well outside the certified radius it flips some smoothed predictions.
    far = _eot_pgd_l2(model, xs, cls, rad + 1.0, sigma)
    far_pred = smoothed.predict(far, n=2000, alpha=0.001)
    assert ((far_pred != cls) & (far_pred != ABSTAIN)).any()


def test_certified_accuracy_counts_correct_and_radius() -> None:
    from bastion.certify import CertifyResult

    r = CertifyResult(prediction=torch.tensor([0, 1, ABSTAIN, 2]), radius=torch.tensor([0.3, 0.1, 0.0, 0.6]),
                      p_lower=torch.zeros(4), counts=torch.zeros(4, dtype=torch.long), sigma=0.25, n0=1, n=1,
                      alpha=0.001, seconds=0.0)
    acc = r.certified_accuracy(torch.tensor([0, 1, 0, 1]), [0.0, 0.2, 0.5])
    assert acc == [0.5, 0.25, 0.0]
    assert math.isclose(r.certified_accuracy([0, 1, 0, 2], 0.5)[0], 0.25)
    with pytest.raises(InputError, match="radii"):
        r.certified_accuracy([0, 1, 0, 2], [-1.0])


class _LabelsOnly(bn.Model):
    """A black box that only returns labels: class 1 iff the first feature exceeds 0.5."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self._count(x)
        return (x[:, 0] > 0.5).long()


def test_labels_only_model_needs_num_classes_and_certifies() -> None:
    x = torch.tensor([[0.9, 0.0], [0.1, 0.0]])
    with pytest.raises(InputError, match="num_classes"):
        Smoothed(_LabelsOnly(), 0.25).certify(x, n0=10, n=100)
    result = Smoothed(_LabelsOnly(), 0.25, num_classes=2).certify(x, n0=50, n=2000)
    assert result.prediction.tolist() == [1, 0]
    # exact radius is 0.4 for both points (their distance to the boundary x0 = 0.5)
    assert (result.radius <= 0.4).all() and (result.radius > 0.25).all()


def test_bf16_forward_passes_agree_away_from_the_boundary() -> None:
    model = _Linear(torch.tensor([1.0, 1.0]), -1.0)
    x = torch.tensor([[0.9, 0.9], [0.1, 0.2]])
    result = Smoothed(model, 0.1, precision="bf16").certify(x, n0=50, n=1000)
    assert result.prediction.tolist() == [1, 0]


def test_too_few_draws_to_certify_anything_useful_warn() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    smoothed = Smoothed(net, sigma=0.25)
    with pytest.warns(UserWarning, match="no radius above"):
        smoothed.certify(torch.rand(2, 1, 8, 8), n0=10, n=10)

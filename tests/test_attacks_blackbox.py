"""Black-box evasion: Square (scores), HopSkipJump (labels), TransferAttack (surrogate), on real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

import bastion as bn
from bastion.attacks.evasion import FixedEpsilonAttack, HopSkipJump, Square, TransferAttack
from bastion.core.adapters import Model
from bastion.errors import CapabilityError, InputError


@pytest.fixture(scope="module")
def digits_flat() -> bn.datasets.Dataset:
    return bn.datasets.digits(flatten=True)


@pytest.fixture(scope="module")
def logreg(digits_flat: bn.datasets.Dataset) -> LogisticRegression:
    return LogisticRegression(max_iter=1000).fit(digits_flat.x_train.numpy(), digits_flat.y_train.numpy())


@pytest.fixture(scope="module")
def cancer() -> bn.datasets.Dataset:
    return bn.datasets.breast_cancer()


def _accuracy(model: Model, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.predict(x) == y).float().mean())


def _check_budget(norm: str, adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    dist = bn.get_norm(norm).measure(adv - x)
    assert float(dist.max()) <= eps + 1e-5
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_square_lowers_sklearn_accuracy(digits_flat: bn.datasets.Dataset, logreg: LogisticRegression,
                                        norm: str, eps: float) -> None:
    m = bn.wrap(logreg)
    x, y = digits_flat.x_test[:60], digits_flat.y_test[:60]
    clean = _accuracy(m, x, y)
    _, adv, success = Square(norm, queries=300)(m, x, y, epsilons=eps)
    _check_budget(norm, adv, x, eps)
    robust = _accuracy(m, adv, y)
    assert clean > 0.9
    assert robust < clean - 0.3
    # The success mask is exactly "the model now gets it wrong".
    assert torch.equal(success, m.predict(adv) != y)


def test_square_tabular_feature_blocks(cancer: bn.datasets.Dataset) -> None:
    clf = LogisticRegression(max_iter=1000).fit(cancer.x_train.numpy(), cancer.y_train.numpy())
    m = bn.wrap(clf)
    x, y = cancer.x_test[:60], cancer.y_test[:60]
    res = Square("linf", queries=200)(m, x, y, epsilons=[0.05, 0.15])
    for eps, adv in zip(res.epsilons or [], res.clipped, strict=True):
        _check_budget("linf", adv, x, eps)
    rates = res.success_rate
    # A larger ball never does worse (earlier successes carry over), and 0.15 breaks most of a linear model.
    assert rates[1] >= rates[0]
    assert rates[1] > 0.5


def test_square_on_torch_cnn_scores_only(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> None:
    m = bn.wrap(digits_cnn)
    x, y = digits.x_test[:40], digits.y_test[:40]
    clean = _accuracy(m, x, y)
    res = Square("linf", queries=150)(m, x, y, epsilons=0.25)
    _, adv, _ = res
    _check_budget("linf", adv, x, 0.25)
    assert _accuracy(m, adv, y) < clean - 0.3
    assert res.queries > 0


def test_square_spends_nothing_on_already_broken(digits_flat: bn.datasets.Dataset, logreg: LogisticRegression) -> None:
    m = bn.wrap(logreg)
    x = digits_flat.x_test[:30]
    y = m.predict(x).clone()
    y[:10] = (y[:10] + 1) % 10  # these ten are "misclassified" from the start
    m.reset_queries()
    res = Square("linf", queries=100)(m, x, y, epsilons=0.05)
    per = res.extras["queries_per_example"]
    assert per.shape == (30,)
    # One look at the clean input, then nothing: zero attack queries on the already-broken ones.
    assert per[:10].tolist() == [1] * 10
    assert bool((per[10:] > 1).all()) and int(per.max()) <= 100
    # The model's own counter agrees: the attack's queries plus the base's final success check.
    assert res.queries == m.queries == int(per.sum()) + 30
    assert bool(res.success[0, :10].all())


def test_square_is_seeded_and_validates() -> None:
    with pytest.raises(InputError):
        Square("l1")
    with pytest.raises(InputError):
        Square(p_init=0.0)
    with pytest.raises(InputError):
        Square(loss="hinge")
    with pytest.raises(InputError):
        Square(queries=1)


def test_square_needs_scores(cancer: bn.datasets.Dataset) -> None:
    svc = LinearSVC().fit(cancer.x_train.numpy(), cancer.y_train.numpy())
    with pytest.raises(CapabilityError):
        Square()(svc, cancer.x_test[:5], cancer.y_test[:5], epsilons=0.1)


def test_square_deterministic(digits_flat: bn.datasets.Dataset, logreg: LogisticRegression) -> None:
    x, y = digits_flat.x_test[:10], digits_flat.y_test[:10]
    a = Square("l2", queries=50, seed=3)(logreg, x, y, epsilons=0.5).clipped[0]
    b = Square("l2", queries=50, seed=3)(logreg, x, y, epsilons=0.5).clipped[0]
    assert torch.equal(a, b)


def test_hopskipjump_reaches_linear_minimum(cancer: bn.datasets.Dataset) -> None:
    """On a linear model the smallest L2 change is |f(x)| / ||w||; labels-only HSJ must get close."""
    svc = LinearSVC(C=1.0).fit(cancer.x_train.numpy(), cancer.y_train.numpy())
    x = cancer.x_test[:30]
    xn = x.numpy().astype(np.float64)
    f = svc.decision_function(xn)
    w = svc.coef_[0]
    analytic = np.abs(f) / np.linalg.norm(w)
    # Compare only where the closest point on the hyperplane lies inside the [0, 1] box.
    closest = xn - (f / w.dot(w))[:, None] * w[None, :]
    inside = ((closest >= 0) & (closest <= 1)).all(axis=1)
    assert inside.sum() >= 10
    y = torch.from_numpy(svc.predict(xn)).long()
    m = bn.wrap(svc)
    assert m.capabilities == bn.Capability.LABELS
    res = HopSkipJump("l2", queries=1500)(m, x, y)
    adv, success = res.clipped[0], res.success[0]
    assert bool(success.all())
    dist = (adv - x).flatten(1).norm(dim=1).numpy()
    ratio = dist[inside] / analytic[inside]
    assert ratio.min() >= 0.999  # nothing beats the analytic minimum
    assert ratio.max() <= 1.15
    per = res.extras["queries_per_example"]
    assert int(per.max()) <= 1500


def test_hopskipjump_linf_within_eps(digits_flat: bn.datasets.Dataset, logreg: LogisticRegression) -> None:
    m = bn.wrap(logreg)
    x, y = digits_flat.x_test[:20], digits_flat.y_test[:20]
    clean = _accuracy(m, x, y)
    res = HopSkipJump("linf", queries=800, steps=10)(m, x, y, epsilons=[0.1, 0.3])
    for eps, adv in zip(res.epsilons or [], res.clipped, strict=True):
        _check_budget("linf", adv, x, eps)
    assert res.success_rate[1] >= res.success_rate[0]
    assert _accuracy(m, res.clipped[1], y) < clean - 0.4


class _SignStep(FixedEpsilonAttack):
    """One gradient-sign step: a minimal inner attack so the transfer test does not wait on PGD."""

    name = "SignStep"

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, eps: float, target: torch.Tensor | None) -> torch.Tensor:
        xr = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model.scores(xr), y)
        (grad,) = torch.autograd.grad(loss, xr)
        return (x + eps * grad.sign()).detach()


def test_transfer_from_cnn_to_mlp(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module,
                                  digits_mlp: torch.nn.Module) -> None:
    target = bn.wrap(digits_mlp)
    x, y = digits.x_test[:100], digits.y_test[:100]
    clean = _accuracy(target, x, y)
    target.reset_queries()
    res = TransferAttack(digits_cnn, attack=_SignStep("linf"))(target, x, y, epsilons=0.2)
    _, adv, _ = res
    _check_budget("linf", adv, x, 0.2)
    assert res.norm == "linf"
    assert _accuracy(target, adv, y) < clean - 0.2
    # The target only answered the final success check; crafting happened on the surrogate.
    assert res.queries == 100


def test_transfer_default_pgd(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module,
                              digits_mlp: torch.nn.Module) -> None:
    target = bn.wrap(digits_mlp)
    x, y = digits.x_test[:100], digits.y_test[:100]
    res = TransferAttack(digits_cnn)(target, x, y, epsilons=0.2)
    assert res.extras == {} and res.norm == "linf"
    assert _accuracy(target, res.clipped[0], y) < _accuracy(target, x, y) - 0.2


def test_transfer_validates() -> None:
    with pytest.raises(InputError):
        TransferAttack(torch.nn.Linear(2, 2), attack=HopSkipJump())


def test_square_matches_or_beats_art(digits: bn.datasets.Dataset, logreg: LogisticRegression) -> None:
    """Same model, data and L-inf budget as ART's SquareAttack: no lower success, no more queries."""
    art_cls = pytest.importorskip("art.estimators.classification")
    art_attacks = pytest.importorskip("art.attacks.evasion")
    # digits() and digits(flatten=True) share one split, so the flat model reads these images as rows.
    x, y = digits.x_test[:40], digits.y_test[:40]
    clf = logreg
    spent = [0]

    def predict(a: np.ndarray) -> np.ndarray:
        spent[0] += a.shape[0]
        return clf.predict_proba(a.reshape(a.shape[0], -1))

    art_model = art_cls.BlackBoxClassifierNeuralNetwork(predict, (1, 8, 8), 10, clip_values=(0.0, 1.0))
    iters = 150
    art = art_attacks.SquareAttack(art_model, norm=np.inf, eps=0.1, max_iter=iters, verbose=False)
    art_adv = art.generate(x.numpy(), y=np.eye(10)[y.numpy()])
    art_rate = float((clf.predict(art_adv.reshape(40, -1)) != y.numpy()).mean())

    res = Square("linf", queries=iters)(clf, x, y, epsilons=0.1)
    ours = res.success_rate[0]
    assert ours >= art_rate - 0.05
    assert res.queries <= spent[0]


def test_targeted_square_and_hopskipjump(digits_flat: bn.datasets.Dataset, logreg: LogisticRegression) -> None:
    m = bn.wrap(logreg)
    x, y = digits_flat.x_test[:30], digits_flat.y_test[:30]
    tgt = (y + 1) % 10
    base = float((m.predict(x) == tgt).float().mean())
    sq = Square("linf", queries=300)(m, x, y, epsilons=0.2, target=tgt)
    _, adv, success = sq
    assert torch.equal(success, m.predict(adv) == tgt)
    assert float(success.float().mean()) > base + 0.3
    # HopSkipJump starts from batch members the model already puts in the target class.
    hsj = HopSkipJump("l2", queries=1000, steps=10)(m, x, y, epsilons=[1.0, 3.0], target=tgt)
    assert torch.equal(hsj.success[1], m.predict(hsj.clipped[1]) == tgt)
    assert hsj.success_rate[1] > 0.9
    assert hsj.success_rate[0] <= hsj.success_rate[1]

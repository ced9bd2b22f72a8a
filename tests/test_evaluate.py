"""bastion.evaluate: stronger than PGD, monotone, per-example worst case sound, masking checks that fire."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import bastion as bn
from bastion.attacks import APGD, FGSM, PGD, Square
from bastion.core.threat import get_norm

EPS = [0.05, 0.1]
N_EVAL = 80


def _tiny_suite() -> list[bn.attacks.Attack]:
    # A cheap ensemble for the masking tests: gradient attacks first, then a short black-box run.
    return [APGD(loss="ce", steps=20), APGD(loss="dlr", steps=20, n_target_classes=3), Square(queries=300)]


@pytest.fixture(scope="module")
def data(digits: bn.datasets.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.x_test[:N_EVAL], digits.y_test[:N_EVAL]


@pytest.fixture(scope="module")
def result(digits_cnn: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> bn.assess.EvaluationResult:
    x, y = data
    # Epsilons deliberately out of order: the result must keep the order given.
    return bn.evaluate(digits_cnn, x, y, norm="linf", epsilons=[EPS[1], EPS[0]], suite="standard", keep_examples=8)


def test_not_weaker_than_pgd20(result: bn.assess.EvaluationResult, digits_cnn: nn.Module,
                               data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    pgd = PGD(norm="linf", steps=20)(digits_cnn, x, y, epsilons=EPS)
    for eps, succ in zip(EPS, pgd.success, strict=True):
        pgd_robust = 1.0 - float(succ.float().mean())
        assert result.robust_accuracy_at(eps) <= pgd_robust + 1e-6
    # The model is partly robust at the smaller budget, so the comparison is not trivially 0 <= 0.
    assert 0.0 < result.robust_accuracy_at(EPS[0]) < result.clean_accuracy


def test_curve_is_monotone_and_keeps_order(result: bn.assess.EvaluationResult) -> None:
    assert result.epsilons == [EPS[1], EPS[0]]
    accs = [a for _, a in result.curve]
    assert all(b <= a for a, b in itertools.pairwise(accs))
    assert accs[0] <= result.clean_accuracy
    assert result.attacks[0].name == "APGD-CE"
    assert sum(sum(a.broken) for a in result.attacks) > 0


def test_per_example_worst_case_is_sound(result: bn.assess.EvaluationResult, digits_cnn: nn.Module,
                                         data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    with torch.no_grad():
        clean_pred = digits_cnn(x).argmax(1)
        adv_pred = digits_cnn(result.x_adv).argmax(1)
    assert torch.equal(result.correct, clean_pred == y)
    norm = get_norm("linf")
    for eps, acc in zip(result.epsilons, result.robust_accuracy, strict=True):
        broken = result.broken_eps <= eps
        assert acc == pytest.approx(1.0 - float(broken.float().mean()))
    broken = torch.isfinite(result.broken_eps)
    assert broken.any()
    idx = broken.nonzero().flatten()
    # Every example counted broken has an adversarial inside its ball and the bounds that the real model
    # misclassifies, and the recorded prediction and distance are the real ones.
    assert (adv_pred[idx] != y[idx]).all()
    assert torch.equal(adv_pred[idx], result.adv_pred[idx])
    dist = norm.measure(result.x_adv[idx] - x[idx])
    assert (dist <= result.broken_eps[idx] + 1e-6).all()
    assert torch.allclose(dist, result.distance[idx], atol=1e-6)
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    assert all(result.broken_by[i] is not None for i in idx.tolist())
    assert all(result.broken_by[i] is None for i in (~broken).nonzero().flatten().tolist())
    # Kept examples are the first broken, correctly classified ones.
    kept = [k.index for k in result.examples]
    expected = (broken & result.correct).nonzero().flatten()[:8].tolist()
    assert kept == expected


def test_same_attack_twice_gets_two_rows(digits_cnn: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    res = bn.evaluate(digits_cnn, x[:10], y[:10], epsilons=[0.1], suite=[FGSM(), FGSM(loss="dlr")], checks=False)
    assert [a.name for a in res.attacks] == ["FGSM", "FGSM (2)"]
    # The second runs only on what the first left standing.
    assert res.attacks[1].attempted[0] == res.attacks[0].attempted[0] - res.attacks[0].broken[0]


def test_rejects_bad_arguments(digits_cnn: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    with pytest.raises(bn.InputError, match="epsilons"):
        bn.evaluate(digits_cnn, x, y, epsilons=[-0.1])
    with pytest.raises(bn.InputError, match="suite"):
        bn.evaluate(digits_cnn, x, y, epsilons=[0.1], suite="nope")
    with pytest.raises(bn.InputError, match="y"):
        bn.evaluate(digits_cnn, x, y + 10, epsilons=[0.1])


def test_masked_gradients_raise_findings(masked_cnn: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    res = bn.evaluate(masked_cnn, x[:40], y[:40], epsilons=[0.1, 0.2], suite=_tiny_suite(),
                      keep_examples=0)
    checks = {f.check: f for f in res.findings}
    assert "blackbox_beats_whitebox" in checks
    assert checks["blackbox_beats_whitebox"].severity == "high"
    assert "unbounded_attack_fails" in checks
    assert checks["unbounded_attack_fails"].evidence["success_rate"] < 0.98
    assert not res.passed_checks


def test_honest_linear_model_raises_none(digits: bn.datasets.Dataset) -> None:
    linear = bn.zoo.train(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits.x_train, digits.y_train,
                          epochs=10, lr=1e-2, seed=0)
    x, y = digits.x_test[:40], digits.y_test[:40]
    res = bn.evaluate(linear, x, y, epsilons=[0.05, 0.1], suite=_tiny_suite(), keep_examples=0)
    assert res.findings == []
    assert res.passed_checks
    assert res.clean_accuracy > 0.8


def test_not_weaker_than_art_autoattack(result: bn.assess.EvaluationResult, digits_cnn: nn.Module,
                                        data: tuple[torch.Tensor, torch.Tensor]) -> None:
    np = pytest.importorskip("numpy")
    art_est = pytest.importorskip("art.estimators.classification")
    art_ev = pytest.importorskip("art.attacks.evasion")
    pytest.importorskip("multiprocess")  # ART's AutoAttack imports it when it runs
    x, y = data
    eps = EPS[0]
    clf = art_est.PyTorchClassifier(model=digits_cnn, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                                    nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    # ART's AutoAttack with its two APGD members at AutoAttack's budget (100 steps); its DeepFool and
    # 5000-query Square would triple the test time on a shared CPU.
    members = [art_ev.AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=100,
                                                   nb_random_init=1, batch_size=N_EVAL, loss_type=loss,
                                                   verbose=False)
               for loss in ("cross_entropy", "difference_logits_ratio")]
    aa = art_ev.AutoAttack(clf, norm=np.inf, eps=eps, eps_step=eps / 4, attacks=members, batch_size=N_EVAL)
    x_adv = aa.generate(x.numpy(), y=y.numpy())
    art_robust = float((clf.predict(x_adv).argmax(1) == y.numpy()).mean())
    assert result.robust_accuracy_at(eps) <= art_robust + 1e-6


def test_scores_only_model_gets_blackbox_attacks(digits: bn.datasets.Dataset) -> None:
    from sklearn.linear_model import LogisticRegression

    flat = bn.datasets.digits(flatten=True)
    clf = LogisticRegression(max_iter=200).fit(flat.x_train.numpy(), flat.y_train.numpy())
    x, y = flat.x_test[:16], flat.y_test[:16]
    # replica=False keeps the estimator closed (by default an exact torch replica opens it).
    res = bn.evaluate(clf, x, y, epsilons=[0.1], suite="fast", keep_examples=0, replica=False)
    assert [a.name for a in res.attacks] == ["Square"]
    assert any("APGD-CE: skipped" in note for note in res.settings["skipped"])
    assert [(f.check, f.severity) for f in res.findings] == [("blackbox_only", "high")]
    assert res.upper_bound and res.bounded_by == ["Square"]
    # Square's adversarials are real: the scikit-learn model misclassifies every one counted broken.
    broken = torch.isfinite(res.broken_eps) & res.correct
    assert broken.any()
    assert (torch.from_numpy(clf.predict(res.x_adv[broken].numpy())) != y[broken]).all()

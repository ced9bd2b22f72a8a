"""Neural-Cleanse-style audit: names the target of a planted backdoor, and stays quiet on clean models.

The 1 % BadNets test is the weak case the mask norm alone cannot call (attack success about 60-90 %): the
patch check must, and its window must lie where the patch was planted.

The clean-model test runs two models trained with different seeds (the suite's digits CNN, which is
seed 0 of the same recipe, and seed 1). The false-alarm *rate* is checked where it can be counted, on
simulated class norms (``test_outlier_statistic_is_calibrated``: alpha, where the paper's decision, anomaly
index > 2, alarms on a third of clean ten-class models); the real models check that the search itself does
not manufacture an outlier.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bastion as bn
from _margins import binomial_margin
from bastion.attacks.poisoning import BadNets
from bastion.detect import NeuralCleanse
from bastion.detect.neural_cleanse import leave_one_out_scores
from bastion.errors import InputError

CLEAN_SEEDS = (0, 1)


def _train(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=16), x, y, epochs=15, lr=2e-3, seed=seed)


@pytest.fixture(scope="module")
def clean_models(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> dict[int, torch.nn.Module]:
    # conftest's digits_cnn is _train(digits.x_train, digits.y_train, 0): shared with the suite, trained once.
    return {s: digits_cnn if s == 0 else _train(digits.x_train, digits.y_train, s) for s in CLEAN_SEEDS}


@pytest.mark.slow
def test_audit_names_the_backdoor_target(digits: bn.datasets.Dataset) -> None:
    res = BadNets(target=4, rate=0.05, size=2, position="top-left", seed=3)(digits.x_train, digits.y_train)
    net = _train(res.x, res.y, 3)
    assert res.attack_success_rate(net, digits.x_test, digits.y_test) > 0.9
    nc = NeuralCleanse(seed=3).fit(net, digits.x_test[:200])
    assert nc.is_backdoored_ and nc.target_ == 4, (nc.scores_, nc.mask_norms_)
    assert nc.predict().tolist() == [k == 4 for k in range(10)]
    assert nc.masks_.shape == (10, 1, 8, 8) and nc.mask_norms_[4] == nc.mask_norms_.min()
    assert (nc.success_ >= nc.min_success).all()                    # every reversed trigger does its job
    # The reversed trigger sits where the patch is: most of the mask's weight in the top-left corner.
    assert nc.masks_[4, 0, :3, :3].sum() > 0.5 * nc.masks_[4].sum()


@pytest.mark.slow
@pytest.mark.parametrize("seed", (5, 8))
def test_patch_check_catches_a_one_percent_backdoor(digits: bn.datasets.Dataset, seed: int) -> None:
    res = BadNets(target=4, rate=0.01, size=2, position="top-left", seed=seed)(digits.x_train, digits.y_train)
    net = _train(res.x, res.y, seed)
    x = digits.x_test[:200]
    # The known answer: the planted trigger itself sends most inputs of most source classes to 4 ...
    with torch.no_grad():
        src = net(x[24:]).argmax(1)
        hit = net(res.apply_trigger(x[24:])).argmax(1) == 4
    true_reach = float(np.median([hit[src == j].float().mean() for j in range(10) if j != 4 and (src == j).any()]))
    assert true_reach > 0.5, true_reach
    nc = NeuralCleanse(seed=seed).fit(net, x)
    # ... and the audit's patch, searched without the trigger, is found where it was planted and does as much.
    assert nc.is_backdoored_ and nc.target_ == 4, (nc.reach_, nc.scores_)
    assert nc.reach_[4] > nc.min_reach and nc.predict()[4]
    assert nc.windows_[4] == (0, 0)
    assert np.delete(nc.reach_, 4).max() < nc.min_reach


@pytest.mark.slow
@pytest.mark.parametrize("seed", CLEAN_SEEDS)
def test_audit_is_quiet_on_clean_models(digits: bn.datasets.Dataset, clean_models: dict[int, torch.nn.Module],
                                        seed: int) -> None:
    nc = NeuralCleanse(seed=seed).fit(clean_models[seed], digits.x_test[:200])
    assert not nc.is_backdoored_ and nc.target_ is None, (nc.scores_, nc.mask_norms_, nc.reach_)
    assert nc.scores_.max() < nc.threshold_ and (nc.reach_ <= nc.min_reach).all() and not nc.predict().any()
    assert (nc.success_ >= nc.min_success).all()
    assert ((nc.reach_ >= 0) & (nc.reach_ <= 1)).all() and len(nc.windows_) == 10


def test_outlier_statistic_is_calibrated() -> None:
    """The decision's false-alarm rate on normal class norms is alpha (the paper's index 2 fires far more)."""
    rng = np.random.default_rng(0)
    trials, classes, alpha = 20000, 10, 0.05
    z = rng.standard_normal((trials, classes))
    from scipy import stats

    thr = stats.t.ppf(1 - alpha / classes, classes - 2)
    alarms = np.mean(leave_one_out_scores(z).max(axis=1) > thr)
    # Bonferroni is an upper bound: the rate is at most alpha, and not far below it for ten classes.
    assert 0.5 * alpha <= alarms <= alpha + binomial_margin(trials, alpha)
    med = np.median(z, axis=1)
    mad = 1.4826 * np.median(np.abs(z - med[:, None]), axis=1)
    assert np.mean((med - z.min(axis=1)) / mad > 2) > 0.25            # the paper's rule on the same draws


def test_audit_refuses_inputs_that_are_not_images(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="images"):
        NeuralCleanse().fit(digits_cnn, digits.x_test[:5].flatten(1))
    with pytest.raises(InputError, match="alpha"):
        NeuralCleanse(alpha=0).fit(digits_cnn, digits.x_test[:5])
    for bad in (0, 9, 1.5, True):
        with pytest.raises(InputError, match="patch"):
            NeuralCleanse(patch=bad).fit(digits_cnn, digits.x_test[:5])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="min_reach"):
        NeuralCleanse(min_reach=0).fit(digits_cnn, digits.x_test[:5])


def test_few_inputs_judge_the_patch_on_the_searched_ones(digits: bn.datasets.Dataset,
                                                          digits_cnn: torch.nn.Module) -> None:
    """With nothing held out, the patch check falls back to the searched inputs rather than judging on none."""
    nc = NeuralCleanse(steps=10, max_inputs=24, seed=1).fit(digits_cnn, digits.x_test[:24])
    assert nc.reach_.shape == (10,) and ((nc.reach_ >= 0) & (nc.reach_ <= 1)).all()
    big = NeuralCleanse(steps=10, max_inputs=24, seed=1, patch=8).fit(digits_cnn, digits.x_test[:24])
    assert big.windows_ == [(0, 0)] * 10  # one window: the whole image


def test_patch_check_in_class_chunks_matches_one_pass(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.detect import neural_cleanse

    one = NeuralCleanse(steps=10, seed=2).fit(digits_cnn, digits.x_test[:100])
    monkeypatch.setattr(neural_cleanse, "EVAL_IMAGES", 300)  # 76 held out x 2 windows: one class per pass
    chunked = NeuralCleanse(steps=10, seed=2).fit(digits_cnn, digits.x_test[:100])
    assert np.array_equal(one.reach_, chunked.reach_) and one.windows_ == chunked.windows_


def test_several_draws_are_judged_by_their_mean_log_norm(digits: bn.datasets.Dataset,
                                                         digits_cnn: torch.nn.Module) -> None:
    x = digits.x_test[:60]
    one = NeuralCleanse(steps=40, max_inputs=12, min_success=0.6, seed=5).fit(digits_cnn, x)
    three = NeuralCleanse(steps=40, max_inputs=12, min_success=0.6, seed=5, draws=3).fit(digits_cnn, x)
    assert (one.mask_norms_ < 64).all()  # every class reached: the norms say something
    # the first draw is the single-draw audit exactly (same inputs, same start): its masks are reported
    assert torch.equal(three.masks_, one.masks_) and np.array_equal(three.success_, one.success_)
    # the statistic is computed on the geometric mean of the draws' norms, which differs from one draw's
    assert np.allclose(three.scores_, leave_one_out_scores(np.log(three.mask_norms_)))
    assert not np.allclose(three.mask_norms_, one.mask_norms_)
    with pytest.raises(InputError, match="draws"):
        NeuralCleanse(draws=0).fit(digits_cnn, x)

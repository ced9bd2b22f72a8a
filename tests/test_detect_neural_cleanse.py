"""Neural-Cleanse-style audit: names the target of a planted backdoor, and stays quiet on a clean model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bastion as bn
from bastion.attacks.poisoning import BadNets
from bastion.detect import NeuralCleanse
from bastion.errors import InputError


@pytest.mark.slow
def test_audit_names_the_backdoor_target(digits: bn.datasets.Dataset) -> None:
    res = BadNets(target=4, rate=0.1, size=3, position="top-left")(digits.x_train, digits.y_train)
    torch.manual_seed(0)
    net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=16), res.x, res.y, epochs=15, lr=2e-3, seed=0)
    assert res.attack_success_rate(net, digits.x_test, digits.y_test) > 0.9
    nc = NeuralCleanse(max_inputs=32, steps=100).fit(net, digits.x_test[:200])
    assert nc.is_backdoored_ and nc.target_ == 4, nc.anomaly_index_
    assert np.argmax(nc.anomaly_index_) == 4 and nc.predict().tolist() == [k == 4 for k in range(10)]
    assert nc.masks_.shape == (10, 1, 8, 8) and nc.mask_norms_[4] == nc.mask_norms_.min()


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="known gap (issue 10): with fixed cost weights the audit alarms on some clean "
                   "models (bench/poison.py: 2 of 3 clean seeds); passing here on one model would be luck, not a "
                   "guarantee, so this does not count as a pass until the audit is fixed")
def test_audit_is_quiet_on_a_clean_model(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> None:
    nc = NeuralCleanse(max_inputs=32, steps=100).fit(digits_cnn, digits.x_test[:200])
    assert not nc.is_backdoored_ and nc.target_ is None, nc.anomaly_index_
    assert nc.anomaly_index_.max() < nc.threshold_


def test_audit_refuses_inputs_that_are_not_images(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="images"):
        NeuralCleanse().fit(digits_cnn, digits.x_test[:5].flatten(1))

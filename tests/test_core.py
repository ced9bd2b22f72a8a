"""Core: norms' geometry, threat models, validation, adapters, datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bastion as bn
from bastion.core.threat import L1, L2, Linf
from bastion.core.validation import check_inputs, check_labels


@pytest.mark.parametrize("norm", [Linf, L2, L1])
def test_projection_lands_inside_ball_and_is_idempotent(norm: bn.Norm) -> None:
    torch.manual_seed(0)
    delta = torch.randn(16, 3, 5, 5) * 3
    eps = torch.rand(16) + 0.1
    proj = norm.project(delta, eps)
    assert (norm.measure(proj) <= eps * (1 + 1e-5) + 1e-6).all()
    assert torch.allclose(norm.project(proj, eps), proj, atol=1e-5)
    small = norm.project(delta, eps) * 0.5
    assert torch.allclose(norm.project(small, eps), small, atol=1e-6)


def test_l1_projection_matches_bruteforce_on_simple_case() -> None:
    # Projecting (3, 1) onto the L1 ball of radius 2 gives (2, 0): soft-threshold at theta = 1.
    out = L1.project(torch.tensor([[3.0, 1.0]]), torch.tensor([2.0]))
    assert torch.allclose(out, torch.tensor([[2.0, 0.0]]))


@pytest.mark.parametrize("norm", [Linf, L2, L1])
def test_zero_radius_projects_to_zero(norm: bn.Norm) -> None:
    delta = torch.randn(4, 6)
    eps = torch.tensor([0.0, 0.5, 0.0, 1.0])
    out = norm.project(delta, eps)
    assert torch.equal(out[0], torch.zeros(6)) and torch.equal(out[2], torch.zeros(6))
    assert (norm.measure(out[[1, 3]]) <= eps[[1, 3]] + 1e-5).all()


@pytest.mark.parametrize("norm", [Linf, L2, L1])
def test_random_start_inside_ball(norm: bn.Norm) -> None:
    x = torch.zeros(64, 10)
    eps = torch.full((64,), 0.3)
    d = norm.random_start(x, eps)
    assert (norm.measure(d) <= 0.3 + 1e-5).all()
    assert (norm.measure(d) > 0).all()


def test_ascent_direction_has_unit_dual_norm() -> None:
    g = torch.randn(8, 20)
    assert torch.allclose(L2.ascent(g).norm(dim=1), torch.ones(8), atol=1e-5)
    assert torch.allclose(L1.ascent(g).abs().sum(dim=1), torch.ones(8), atol=1e-5)
    assert torch.equal(Linf.ascent(g), g.sign())


def test_threat_model_validates() -> None:
    tm = bn.ThreatModel("L2", epsilons=(0.5, 1.0))
    assert tm.norm == "l2" and tm.epsilons == (0.5, 1.0)
    with pytest.raises(bn.InputError, match="epsilons"):
        bn.ThreatModel("linf", epsilons=(-0.1,))
    with pytest.raises(bn.InputError, match="norm"):
        bn.ThreatModel("l3")


def test_check_inputs_rejects_bad_batches() -> None:
    with pytest.raises(bn.InputError, match="NaN"):
        check_inputs(torch.tensor([[0.1, float("nan")]]))
    with pytest.raises(bn.InputError, match="bounds"):
        check_inputs(torch.tensor([[0.1, 2.0]]), (0.0, 1.0))
    with pytest.raises(bn.InputError, match="empty"):
        check_inputs(torch.zeros(0, 3))
    with pytest.raises(bn.InputError, match="shape"):
        check_inputs(torch.zeros(3))
    with pytest.raises(bn.InputError, match="labels in"):
        check_labels([0, 12], 2, 10)
    with pytest.raises(bn.InputError, match="2 labels"):
        check_labels([0, 1], 3, 10)
    with pytest.raises(bn.InputError, match="integer"):
        check_labels([0.5, 1.0], 2, 10)


def test_digits_split_is_fixed_and_in_bounds(digits: bn.datasets.Dataset) -> None:
    again = bn.datasets.digits()
    assert torch.equal(again.x_test, digits.x_test)
    assert digits.x_train.shape == (1347, 1, 8, 8) and digits.x_test.shape == (450, 1, 8, 8)
    assert float(digits.x_train.min()) >= 0 and float(digits.x_train.max()) <= 1
    for ds in (bn.datasets.breast_cancer(), bn.datasets.wine()):
        assert float(ds.x_test.min()) >= 0 and float(ds.x_test.max()) <= 1
        assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64


def test_trained_cnn_is_accurate(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> None:
    assert bn.zoo.accuracy(digits_cnn, digits.x_test, digits.y_test) > 0.93


def test_wrap_dispatches_and_reports_capabilities(digits_cnn: torch.nn.Module) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    tm = bn.wrap(digits_cnn)
    assert bn.Capability.GRADIENTS in tm.capabilities
    x = np.random.default_rng(0).random((40, 4))
    y = (x[:, 0] > 0.5).astype(int)
    sk = bn.wrap(LogisticRegression().fit(x, y))
    assert bn.Capability.SCORES in sk.capabilities and bn.Capability.GRADIENTS not in sk.capabilities
    out = sk.scores(torch.from_numpy(x).float())
    assert out.shape == (40, 2) and sk.queries == 40
    labels_only = bn.wrap(LinearSVC().fit(x, y))
    assert bn.Capability.SCORES not in labels_only.capabilities
    with pytest.raises(bn.CapabilityError, match="gradients"):
        labels_only.require(bn.Capability.GRADIENTS, "PGD")


def test_torch_model_preprocessing_applies_inside() -> None:
    lin = torch.nn.Linear(2, 2, bias=False)
    lin.weight.data = torch.eye(2)
    m = bn.wrap(lin, preprocessing=([0.5, 0.5], [0.5, 0.5]))
    out = m.scores(torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(out, torch.tensor([[1.0, -1.0]]))


def test_unfitted_estimators_and_folders_are_named_clearly(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(bn.InputError, match="unfitted LogisticRegression"):
        bn.wrap(LogisticRegression())
    with pytest.raises(bn.errors.ModelLoadError, match="is a folder"):
        bn.load_model(tmp_path)

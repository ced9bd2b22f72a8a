"""DP-SGD through Opacus: the accountant's ε stays within the target, and the model still learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bastion.defenses.dp import train_dp
from bastion.errors import InputError


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) * 0.5 + (2 * y[:, None] - 1).float()  # two well separated blobs
    return x, y


def test_dp_sgd_spends_at_most_the_target_and_learns() -> None:
    x, y = _blobs(256, 0)
    res = train_dp(torch.nn.Linear(4, 2), x, y, target_epsilon=4.0, delta=1e-5, epochs=4, lr=0.05, batch_size=64)
    assert 0.5 * 4.0 <= res.epsilon <= 4.0 + 1e-6
    assert res.delta == 1e-5 and res.noise_multiplier > 0
    assert type(res.model) is torch.nn.Linear  # the Opacus wrapper is removed
    xt, yt = _blobs(500, 1)
    # the blobs are separable (Bayes accuracy > 99 %); 0.8 leaves room for the DP noise
    assert float((res.model(xt).argmax(1) == yt).double().mean()) > 0.8


def test_default_delta_is_below_one_over_n() -> None:
    x, y = _blobs(100, 0)
    res = train_dp(torch.nn.Linear(4, 2), x, y, target_epsilon=8.0, epochs=1)
    assert res.delta == pytest.approx(1e-3)


@pytest.mark.parametrize("kwargs,name", [({"target_epsilon": 0.0}, "target_epsilon"), ({"delta": 1.5}, "delta"),
                                         ({"epochs": 0}, "epochs")])
def test_bad_arguments(kwargs: dict[str, float], name: str) -> None:
    x, y = _blobs(20, 0)
    with pytest.raises(InputError, match=name):
        train_dp(torch.nn.Linear(4, 2), x, y, **kwargs)  # type: ignore[arg-type]


def test_returned_model_supports_later_backward_passes() -> None:
    # an attack or evaluation differentiates the DP model afterwards: no Opacus hook may remain
    x, y = _blobs(64, 0)
    res = train_dp(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)), x, y,
                   target_epsilon=8.0, epochs=1)
    xs = x[:5].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(res.model(xs).sum(), xs)
    assert grad.shape == xs.shape


def test_cli_harden_dp_sgd_reports_the_spent_budget(tmp_path: Path) -> None:
    import json

    import numpy as np
    from typer.testing import CliRunner

    from bastion.cli.main import app

    x, y = _blobs(120, 0)
    np.savez(tmp_path / "train.npz", x=torch.sigmoid(x).numpy(), y=y.numpy())
    res = CliRunner().invoke(app, ["harden", "--data", str(tmp_path / "train.npz"), "--arch", "mlp", "--method", "dp-sgd",
                                   "--target-epsilon", "8", "--delta", "1e-3", "--epochs", "1", "--suite", "fast",
                                   "--eps", "0.1", "--out", str(tmp_path / "private"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["method"] == "dp-sgd" and report["privacy"]["epsilon"] <= 8.0 + 1e-6
    assert report["privacy"]["delta"] == 1e-3
    assert "spent ε" in (tmp_path / "private.md").read_text()
    bad = CliRunner().invoke(app, ["harden", "--data", str(tmp_path / "train.npz"), "--method", "dp-sgd",
                                   "--delta", "2", "--out", str(tmp_path / "p2")])
    assert bad.exit_code == 2 and "--delta" in bad.output

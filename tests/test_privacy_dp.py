"""DP-SGD through Opacus: the accountant's ε stays within the target, and the model still learns."""

from __future__ import annotations

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

"""Randomised models are evaluated in expectation over draws, with EOT gradients."""

from __future__ import annotations

import math

import torch
from torch import nn

import bastion as bn


class _Noisy(nn.Module):
    """The digits CNN behind Gaussian input noise: every forward pass draws new noise."""

    def __init__(self, inner: nn.Module, sigma: float) -> None:
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + self.sigma * torch.randn_like(x))


def test_randomised_clean_accuracy_is_its_expectation(digits_cnn: nn.Module, digits: bn.datasets.Dataset) -> None:
    x, y = digits.x_test[:80], digits.y_test[:80]
    noisy = _Noisy(digits_cnn, 0.45)
    res = bn.evaluate(noisy, x, y, epsilons=[0.05], suite="fast", checks=False, keep_examples=0)
    info = res.settings["randomised"]
    k = info["draws"]
    assert k >= 8 and info["clean_spread"] > 0
    assert any("EOT" in note for note in res.settings["adaptive_notes"])
    # The expectation, estimated independently from 200 draws.
    torch.manual_seed(123)
    with torch.no_grad():
        truth = float(torch.stack([(noisy(x).argmax(1) == y).float().mean() for _ in range(200)]).mean())
    # The reported mean of n*k Bernoulli draws and the 200-draw estimate: 4 standard deviations of both.
    n = x.shape[0]
    tol = 4 * math.sqrt(0.25 / (n * k) + 0.25 / (n * 200))
    assert abs(res.clean_accuracy - truth) <= tol
    assert 0.3 < truth < 0.95  # noisy enough for single draws to swing
    assert res.robust_accuracy[0] <= res.clean_accuracy + tol
    assert "randomised_model" in {f.check for f in res.findings}


def test_deterministic_model_is_not_called_randomised(digits_cnn: nn.Module, digits: bn.datasets.Dataset) -> None:
    res = bn.evaluate(digits_cnn, digits.x_test[:16], digits.y_test[:16], epsilons=[0.05], suite="fast",
                      checks=False, keep_examples=0)
    assert res.settings["randomised"] is None

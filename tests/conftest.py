"""Shared fixtures: small real models trained once per session on scikit-learn's bundled data."""

from __future__ import annotations

import pytest
import torch

import bastion as bn

# The test models are tiny: one thread beats two (thread start-up dominates) and keeps runs repeatable.
torch.set_num_threads(1)


#: the longest files run first, so that with pytest-xdist (`make test` runs two workers) one worker takes
#: the README run (about half the suite's time) while the other works through everything else
LONG_FIRST = ("test_readme.py", "test_scale.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: 0 if item.path.name in LONG_FIRST else 1)  # stable: the rest keeps its order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits() -> bn.datasets.Dataset:
    return bn.datasets.digits()


@pytest.fixture(scope="session")
def digits_cnn(digits: bn.datasets.Dataset) -> torch.nn.Module:
    """A SmallCNN trained on the digits (about 97 % clean test accuracy), in eval mode."""
    torch.manual_seed(0)
    model = bn.zoo.SmallCNN(1, 10, 8, width=16)
    return bn.zoo.train(model, digits.x_train, digits.y_train, epochs=15, lr=2e-3, seed=0)


@pytest.fixture(scope="session")
def digits_mlp(digits: bn.datasets.Dataset) -> torch.nn.Module:
    model = bn.zoo.MLP(64, 10, hidden=(64,))
    return bn.zoo.train(model, digits.x_train, digits.y_train, epochs=30, lr=3e-3, seed=0)


class _Rounded(torch.nn.Module):
    """Gradient masking by construction: inputs are rounded to quarters, so every input gradient is zero."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 4) / 4)


@pytest.fixture(scope="session")
def masked_cnn(digits_cnn: torch.nn.Module) -> torch.nn.Module:
    """The digits CNN behind a rounding layer: robust-looking to gradient attacks, not to black-box ones."""
    return _Rounded(digits_cnn)

"""PRADA: alarms on a synthetic (Jacobian-augmentation-like) query stream, not on natural queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.datasets import digits
from bastion.detect.prada import PRADA
from bastion.errors import InputError


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return digits(flatten=True).x_test


def _synthetic_stream(seeds: torch.Tensor, rounds: int, step: float, seed: int) -> torch.Tensor:
    # Papernot et al.'s augmentation: every known point spawns x + step * sign(direction) each round.
    gen = torch.Generator().manual_seed(seed)
    known, stream = seeds, [seeds]
    for _ in range(rounds):
        new = (known + step * torch.sign(torch.randn(known.shape, generator=gen))).clamp(0, 1)
        stream.append(new)
        known = torch.cat([known, new])
    return torch.cat(stream)


@pytest.mark.parametrize("seed", range(3))
def test_natural_queries_do_not_alarm(data: torch.Tensor, seed: int) -> None:
    # Measured W on 200 natural digits: 0.957-0.976 over seeds; the threshold 0.9 leaves a wide margin.
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:200]
    det = PRADA(threshold=0.9, min_queries=50)
    alarms = [det.update("alice", row) for row in data[idx]]
    assert not any(alarms)
    assert det.score("alice") > 0.93
    assert det.queries("alice") == 200


@pytest.mark.parametrize("seed", range(3))
def test_synthetic_extraction_stream_alarms(data: torch.Tensor, seed: int) -> None:
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:10]
    stream = _synthetic_stream(data[idx], rounds=4, step=0.1, seed=seed)
    det = PRADA(threshold=0.9, min_queries=50)
    assert det.update("mallory", stream)
    assert det.score("mallory") < 0.6  # measured about 0.3
    # clients are independent, and reset forgets
    assert not det.update("alice", data[:60])
    det.reset("mallory")
    assert det.score("mallory") == 1.0 and det.queries("mallory") == 0


def test_not_judged_before_min_queries(data: torch.Tensor) -> None:
    det = PRADA(min_queries=100)
    stream = _synthetic_stream(data[:5], rounds=3, step=0.1, seed=0)  # 40 queries
    assert not det.update("c", stream)
    assert det.score("c") == 1.0


def test_history_window_bounds_memory(data: torch.Tensor) -> None:
    det = PRADA(min_queries=10, max_history=20)
    det.update("c", data[:100])
    assert det.queries("c") == 100
    assert det._clients["c"].size == 20


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"min_queries": 2}, {"max_history": 1}])
def test_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(InputError):
        PRADA(**kwargs)  # type: ignore[arg-type]


def test_bad_queries(data: torch.Tensor) -> None:
    det = PRADA()
    det.update("c", data[:3])
    with pytest.raises(InputError, match="values per query"):
        det.update("c", torch.rand(2, 10))
    with pytest.raises(InputError, match="finite"):
        det.update("d", np.array([[np.nan, 1.0]]))

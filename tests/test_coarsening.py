"""Output coarsening: each policy's contract on probability rows, and the model wrappers."""

from __future__ import annotations

import pytest
import torch

from bastion.core import Capability, wrap
from bastion.defenses.coarsening import (
    LabelOnly,
    NoisyScores,
    OutputPolicy,
    ReverseSigmoid,
    Rounded,
    TopK,
    apply_output_policy,
    coarsen,
)
from bastion.errors import InputError


@pytest.fixture()
def probs() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(200, 7, generator=g).mul(2).softmax(dim=1)


def _is_distribution(p: torch.Tensor) -> bool:
    return bool((p >= 0).all()) and torch.allclose(p.sum(1), torch.ones(p.shape[0]), atol=1e-5)


def test_full_is_identity(probs: torch.Tensor) -> None:
    assert torch.equal(apply_output_policy(probs, OutputPolicy()), probs)


def test_top_k_keeps_k_largest_and_top_class(probs: torch.Tensor) -> None:
    out = apply_output_policy(probs, OutputPolicy(kind="top_k", k=2))
    assert _is_distribution(out)
    assert ((out > 0).sum(1) == 2).all()
    assert torch.equal(out.argmax(1), probs.argmax(1))
    kept = probs.topk(2, dim=1).indices
    assert torch.equal(out.gather(1, kept) > 0, torch.ones_like(kept, dtype=torch.bool))


def test_label_is_one_hot_of_argmax(probs: torch.Tensor) -> None:
    out = apply_output_policy(probs, OutputPolicy(kind="label"))
    assert torch.equal(out, torch.nn.functional.one_hot(probs.argmax(1), 7).float())


def test_round_has_given_decimals(probs: torch.Tensor) -> None:
    out = apply_output_policy(probs, OutputPolicy(kind="round", decimals=1))
    assert torch.allclose(out * 10, (out * 10).round(), atol=1e-5)
    # each of 7 entries moves by at most 0.05, so the row sum stays within 0.35 of one
    assert ((out.sum(1) - 1).abs() <= 0.35 + 1e-6).all()
    assert (out.gather(1, probs.argmax(1, keepdim=True)) >= out.max(1, keepdim=True).values - 1e-6).all()


def test_reverse_sigmoid_perturbs_but_keeps_top_class(probs: torch.Tensor) -> None:
    out = apply_output_policy(probs, OutputPolicy(kind="reverse_sigmoid", beta=0.7, gamma=0.5))
    assert _is_distribution(out)
    assert torch.equal(out.argmax(1), probs.argmax(1))
    assert (out - probs).abs().max() > 0.01


def test_noise_is_seeded_and_a_distribution(probs: torch.Tensor) -> None:
    pol = OutputPolicy(kind="noise", sigma=0.1, seed=3)
    a, b = apply_output_policy(probs, pol), apply_output_policy(probs, pol)
    assert torch.equal(a, b) and _is_distribution(a)
    assert not torch.equal(a, probs)


@pytest.mark.parametrize("bad", [{"kind": "blur"}, {"kind": "top_k", "k": 0}, {"kind": "round", "decimals": -1},
                                 {"kind": "noise", "sigma": -1.0}, {"kind": "reverse_sigmoid", "gamma": 0.0}])
def test_bad_policies_name_the_field(bad: dict[str, object]) -> None:
    with pytest.raises(InputError, match="policy"):
        OutputPolicy(**bad)  # type: ignore[arg-type]


def test_bad_probs_shape() -> None:
    with pytest.raises(InputError, match="probs"):
        apply_output_policy(torch.ones(3), OutputPolicy())


def test_wrappers_keep_accuracy_and_count_queries() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4))
    model = wrap(net)
    x = torch.rand(64, 5)
    reference = model.predict(x)
    for wrapper in (TopK(net, k=2), Rounded(net, decimals=2), LabelOnly(net), ReverseSigmoid(net, beta=0.5)):
        assert Capability.GRADIENTS not in wrapper.capabilities
        s = wrapper.scores(x)
        assert s.shape == (64, 4)
        assert wrapper.queries == 64
        if not isinstance(wrapper, Rounded):  # rounding may tie the top two classes
            assert torch.equal(wrapper.predict(x), reference)
    label = LabelOnly(net).scores(x)
    assert torch.equal(label.sum(1), torch.ones(64)) and set(label.unique().tolist()) == {0.0, 1.0}


def test_noisy_wrapper_draws_fresh_noise_per_call_but_is_reproducible() -> None:
    net = torch.nn.Linear(5, 3)
    x = torch.rand(8, 5)
    a, b = NoisyScores(net, sigma=0.2, seed=1), NoisyScores(net, sigma=0.2, seed=1)
    first = a.scores(x)
    assert not torch.equal(first, a.scores(x))
    assert torch.equal(first, b.scores(x))


def test_coarsen_full_returns_plain_model() -> None:
    net = torch.nn.Linear(5, 3)
    assert Capability.GRADIENTS in coarsen(net, OutputPolicy()).capabilities

"""FAB for a fixed radius (the ``autoattack`` suite's FAB-T) against the minimum-norm FAB it is built from.

Up to the step where an example first has an adversarial inside the ball, both run the same search on it;
the fixed-radius one then stops (and skips the remaining guide classes). So on every example it must break
at least what the minimum-norm search breaks at that radius, while sending the model fewer examples.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import bastion as bn
from bastion.attacks.evasion import FAB, FABAtEpsilon


@pytest.fixture(scope="module")
def batch(digits: bn.datasets.Dataset) -> tuple[Tensor, Tensor]:
    return digits.x_test[:40], digits.y_test[:40]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fixed_radius_fab_breaks_what_minimum_norm_fab_breaks_with_fewer_queries(
        digits_cnn: nn.Module, batch: tuple[Tensor, Tensor], norm: str) -> None:
    x, y = batch
    full = FAB(norm, steps=10, n_target_classes=3)(digits_cnn, x, y)
    eps = float(full.distances(x)[0][full.success[0]].median())  # about half the examples fit the ball
    at_eps = FAB(norm, steps=10, n_target_classes=3)(digits_cnn, x, y, epsilons=eps)
    fixed = FABAtEpsilon(norm, steps=10, n_target_classes=3)(digits_cnn, x, y, epsilons=eps)
    reference, got = at_eps.success[0], fixed.success[0]
    assert 0.2 <= float(reference.float().mean()) <= 0.9, "the radius must leave both outcomes possible"
    assert bool(got[reference].all()), "the fixed-radius search lost examples the full search breaks"
    assert fixed.attack == "FAB-T"
    m = bn.wrap(digits_cnn)
    m.reset_queries()
    FAB(norm, steps=10, n_target_classes=3)(m, x, y, epsilons=eps)
    full_queries = m.queries
    m.reset_queries()
    FABAtEpsilon(norm, steps=10, n_target_classes=3)(m, x, y, epsilons=eps)
    assert m.queries < 0.8 * full_queries, (m.queries, full_queries)


def test_fixed_radius_fab_is_sound_on_a_zero_radius_and_keeps_misclassified_inputs(
        digits_cnn: nn.Module, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    wrong = (y + 1) % 10  # every input "misclassified" against these labels: nothing to search
    res = FABAtEpsilon("linf", steps=5)(digits_cnn, x, wrong, epsilons=[0.0, 0.1])
    assert bool(res.success.all())
    assert torch.equal(res.clipped[0], x)
    ok = FABAtEpsilon("linf", steps=5)(digits_cnn, x, y, epsilons=0.0)
    with torch.no_grad():
        clean_wrong = digits_cnn(x).argmax(dim=1) != y
    assert torch.equal(ok.success[0], clean_wrong)

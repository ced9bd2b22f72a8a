"""Models without an autograd graph are still evaluated (black-box, an upper bound, a HIGH finding)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import bastion as bn
from bastion.attacks import Square


class _Detached(nn.Module):
    """The digits CNN whose logits leave the autograd graph: scores exist, gradients do not."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).detach()


@pytest.fixture(scope="module")
def data(digits: bn.datasets.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.x_test[:24], digits.y_test[:24]


@pytest.mark.parametrize("scripted", [False, True])
def test_detached_model_is_evaluated_blackbox_with_high_finding(
        scripted: bool, digits_cnn: nn.Module, data: tuple[torch.Tensor, torch.Tensor], tmp_path: Path) -> None:
    x, y = data
    model: nn.Module = _Detached(digits_cnn)
    if scripted:
        torch.jit.trace(model, x[:1]).save(str(tmp_path / "m.pt"))
        model = torch.jit.load(str(tmp_path / "m.pt"))
    res = bn.evaluate(model, x, y, epsilons=[0.1, 0.3], suite="fast", keep_examples=0)
    sev = {f.check: f.severity for f in res.findings}
    assert sev["zero_gradients"] == "high" and sev["blackbox_only"] == "high"
    assert res.upper_bound and res.bounded_by == ["Square"]
    assert [a.name for a in res.attacks] == ["Square"]
    # The black-box attack still works: it breaks most digits at 0.3, the real model agreeing.
    assert res.robust_accuracy_at(0.3) < res.clean_accuracy - 0.3
    broken = torch.isfinite(res.broken_eps) & res.correct
    with torch.no_grad():
        assert (digits_cnn(res.x_adv[broken]).argmax(1) != y[broken]).all()
    gate = bn.assess.result.robustness_gate(res.epsilon_labels, res.robust_accuracy, res.findings, 0.0)
    assert gate["verdict"] == "FAIL"


def test_allow_blackbox_only_lowers_the_upper_bound_finding(digits_cnn: nn.Module,
                                                            data: tuple[torch.Tensor, torch.Tensor]) -> None:
    from sklearn.tree import DecisionTreeClassifier

    flat = bn.datasets.digits(flatten=True)
    tree = DecisionTreeClassifier(max_depth=6, random_state=0).fit(flat.x_train.numpy(), flat.y_train.numpy())
    x, y = flat.x_test[:24], flat.y_test[:24]
    strict = bn.evaluate(tree, x, y, epsilons=[0.1], suite=[Square(queries=200)], checks=False, keep_examples=0)
    lenient = bn.evaluate(tree, x, y, epsilons=[0.1], suite=[Square(queries=200)], checks=False, keep_examples=0,
                          allow_blackbox_only=True)
    assert {f.check: f.severity for f in strict.findings}["blackbox_only"] == "high"
    assert {f.check: f.severity for f in lenient.findings}["blackbox_only"] == "warning"
    assert "Square" in lenient.findings[-1].message and lenient.upper_bound
    assert lenient.to_dict()["bounded_by"] == ["Square"]
    again = bn.assess.EvaluationResult.from_dict(lenient.to_dict())
    assert again.upper_bound and again.bounded_by == ["Square"]

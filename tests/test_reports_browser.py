"""Self-contained HTML reports render in a real browser with no script errors and no network requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

import bastion as bn
from _browser import open_page
from bastion.cli.main import app


def test_evaluate_report_renders_offline(digits: bn.datasets.Dataset, digits_cnn: nn.Module, tmp_path: Path) -> None:
    res = bn.evaluate(digits_cnn, digits.x_test[:40], digits.y_test[:40], norm="linf", epsilons=[0.1, 0.2],
                      suite="fast")
    res.save(tmp_path / "rep")
    page = open_page((tmp_path / "rep" / "report.html").as_uri())
    assert page.errors == [] and page.requests == []
    assert "robust" in page.text.lower()


class MeanThreshold(nn.Module):
    """Class 0 above a mean pixel of 0.5: every input at 0.55 is broken by moving each pixel 0.1."""

    def forward(self, x: Tensor) -> Tensor:
        s = 20.0 * (x.flatten(1).mean(1, keepdim=True) - 0.5)
        return torch.cat([s, -s], dim=1)


def test_assess_report_renders_offline_and_shows_the_verdict(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    torch.jit.script(MeanThreshold()).save(str(model))
    data = tmp_path / "test.npz"
    np.savez(data, x=np.full((24, 1, 4, 4), 0.55, dtype=np.float32), y=np.zeros(24, dtype=np.int64))
    policy = tmp_path / "policy.yaml"
    policy.write_text("signature: optional\nrobust_accuracy: {norm: linf, eps: 0.1, min: 0.5}\n")
    res = CliRunner().invoke(app, ["assess", "--model", str(model), "--data", str(data), "--policy", str(policy),
                                   "--budget", "fast", "--report", str(tmp_path / "rep")])
    assert res.exit_code == 1, res.output
    page = open_page((tmp_path / "rep" / "report.html").as_uri())
    assert page.errors == [] and page.requests == []
    assert "FAIL" in page.text

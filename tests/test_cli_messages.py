"""What the commands say: the shape a model expects, budgets that measure nothing, runs that take long."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import bastion as bn
from bastion.cli import certify_cmd
from bastion.cli.main import app
from bastion.core.validation import epsilon_range_warnings, expected_input

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits_cnn: nn.Module,
          digits: bn.datasets.Dataset) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("messages")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(digits_cnn, digits.x_test[:1]).save(str(d / "model.pt"))
    np.savez(d / "test.npz", x=digits.x_test[:8].numpy(), y=digits.y_test[:8].numpy())
    np.savez(d / "wide.npz", x=np.zeros((3, 3, 8, 8), np.float32), y=np.arange(3))
    np.savez(d / "flat.npz", x=np.zeros((3, 64), np.float32), y=np.arange(3))
    return {"model": d / "model.pt", "data": d / "test.npz", "wide": d / "wide.npz", "flat": d / "flat.npz"}


@pytest.mark.parametrize("command", ["attack", "evaluate", "certify"])
@pytest.mark.parametrize("case", ["wide", "flat"])
def test_a_wrong_shape_names_the_shape_the_model_expects(files: dict[str, Path], command: str, case: str) -> None:
    extra = ["--method", "ibp", "--eps", "0.1"] if command == "certify" else ["--eps", "0.1"]
    res = runner.invoke(app, [command, "--model", str(files["model"]), "--data", str(files[case]), *extra])
    assert res.exit_code == 2, res.output
    given = "(3, 8, 8)" if case == "wide" else "(64,)"
    assert given in res.output and "shape (1, H, W)" in res.output and "Traceback" not in res.output


def test_expected_input_reads_first_layers_and_onnx_signatures() -> None:
    assert expected_input(bn.wrap(bn.zoo.MLP(64, 10), bounds=(0, 1))) == \
        "64 features per example: shape (64,) without the batch"

    class Onnxish:
        input_shape = ("batch", 3, 32, 32)

    assert expected_input(Onnxish()) == "inputs of shape (3, 32, 32) without the batch"
    assert expected_input(object()) is None


def test_budgets_reaching_every_input_are_a_warning(files: dict[str, Path]) -> None:
    assert epsilon_range_warnings([0.5, 1.0], ["0.5", "1"], "linf", (0.0, 1.0), 64)[0].startswith("--eps 1 (linf)")
    assert len(epsilon_range_warnings([0.5, 1.0], ["0.5", "1"], "linf", (0.0, 1.0), 64)) == 1
    # L2 diameter of [0, 1]^64 is 8: a radius of 7.9 still leaves inputs out of reach, 8 does not.
    assert epsilon_range_warnings([7.9], ["7.9"], "l2", (0.0, 1.0), 64) == []
    assert len(epsilon_range_warnings([8.0], ["8"], "l2", (0.0, 1.0), 64)) == 1
    res = runner.invoke(app, ["attack", "-m", str(files["model"]), "-d", str(files["data"]), "--eps", "0.1,1.5",
                              "--steps", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert "warning: --eps 1.5 (linf) reaches every input in [0, 1]" in res.stderr
    assert "--eps 0.1 " not in res.stderr


def test_smoothing_warns_with_a_time_estimate_before_a_long_run(files: dict[str, Path],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    model = bn.load_model(files["model"])
    x = torch.zeros(200, 1, 8, 8)
    small = certify_cmd._estimate_smoothing(model, x[:20], n0=100, n=1000, batch_size=1000)
    large = certify_cmd._estimate_smoothing(model, x, n0=100, n=100_000, batch_size=1000)
    # 505x the batches (10x the examples, 50x the batches each): the estimate grows with the work, by far
    # more than the few-fold noise of timing one batch on a busy machine.
    assert 0 < small < large and large / small > 20
    certify_cmd._warn_if_long(1800.0, 200, 100_000)
    err = capsys.readouterr().err
    assert "about 30 min" in err and "200 examples x 100,000 noisy draws" in err and "--n 3300" in err
    certify_cmd._warn_if_long(30.0, 200, 1000)
    assert capsys.readouterr().err == ""

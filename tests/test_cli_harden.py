"""`bastion harden`: a tiny end-to-end run and clear failures on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import bastion as bn
from bastion.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits: bn.datasets.Dataset) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("harden")
    train, test = root / "train.npz", root / "test.npz"
    np.savez(train, x=digits.x_train[:300].numpy(), y=digits.y_train[:300].numpy())
    np.savez(test, x=digits.x_test[:40].numpy(), y=digits.y_test[:40].numpy())
    unlabelled = root / "unlabelled.npz"
    np.savez(unlabelled, x=digits.x_test[:10].numpy())
    return {"root": root, "train": train, "test": test, "unlabelled": unlabelled}


def test_harden_writes_model_files_and_a_before_after_report(files: dict[str, Path],
                                                             digits: bn.datasets.Dataset) -> None:
    out = files["root"] / "robust"
    res = runner.invoke(app, ["harden", "--data", str(files["train"]), "--test", str(files["test"]),
                              "--arch", "mlp", "--method", "fgsm-rs", "--eps", "0.1", "--epochs", "1",
                              "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["method"] == "fgsm-rs" and report["eps"] == 0.1 and report["test_examples"] == 40
    assert len(report["history"]) == 1 and report["best_epoch"] == 0
    for side in ("standard", "hardened"):
        assert 0.0 <= report[side]["robust_accuracy"] <= report[side]["clean_accuracy"] <= 1.0
    pt, st, md = Path(report["files"]["torchscript"]), Path(report["files"]["safetensors"]), Path(report["files"]["report"])
    assert pt == out.with_name("robust.pt") and st.exists() and md.exists()
    assert "| hardened (fgsm-rs) |" in md.read_text()
    # The TorchScript file loads without pickle and reproduces the reported clean accuracy.
    model = bn.load_model(pt)
    acc = float((model.predict(digits.x_test[:40]) == digits.y_test[:40]).float().mean())
    assert acc == pytest.approx(report["hardened"]["clean_accuracy"])


@pytest.mark.parametrize("args,message", [
    (["--method", "mart"], "--method"),
    (["--eps", "0"], "--eps"),
    (["--precision", "fp8"], "--precision"),
    (["--arch", "transformer"], "arch"),
    (["--lr", "-1"], "--lr"),
    (["--steps", "0"], "--steps"),
])
def test_bad_options_exit_2_with_a_message(files: dict[str, Path], args: list[str], message: str) -> None:
    res = runner.invoke(app, ["harden", "--data", str(files["train"]), "--epochs", "1",
                              "--out", str(files["root"] / "x"), *args])
    assert res.exit_code == 2
    assert message in res.output


def test_bad_data_exits_2(files: dict[str, Path]) -> None:
    res = runner.invoke(app, ["harden", "--data", str(files["unlabelled"]), "--out", str(files["root"] / "x")])
    assert res.exit_code == 2 and "labelled data" in res.output
    res = runner.invoke(app, ["harden", "--data", str(files["root"] / "missing.npz"), "--out",
                              str(files["root"] / "x")])
    assert res.exit_code == 2 and "missing.npz" in res.output
    # --out's folder is created when missing, but a file where the folder should be is refused up front.
    res = runner.invoke(app, ["harden", "--data", str(files["train"]), "--out", str(files["train"] / "x")])
    assert res.exit_code == 2 and "--out" in res.output


def test_single_class_data_is_refused_before_training(files: dict[str, Path], digits: bn.datasets.Dataset) -> None:
    one = files["root"] / "one.npz"
    keep = digits.y_train == 3
    np.savez(one, x=digits.x_train[keep][:60].numpy(), y=digits.y_train[keep][:60].numpy())
    res = runner.invoke(app, ["harden", "--data", str(one), "--out", str(files["root"] / "x1")])
    assert res.exit_code == 2 and "two classes" in res.output

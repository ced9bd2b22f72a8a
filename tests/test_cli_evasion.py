"""`bastion evaluate`, `bastion attack` and `bastion demo` on real files: JSON, exit codes, clear errors."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import bastion as bn
from bastion.cli.main import app

runner = CliRunner()
N = 24


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits_cnn: nn.Module,
          digits: bn.datasets.Dataset) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    x, y = digits.x_test[:N], digits.y_test[:N]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(digits_cnn, x[:1]).save(str(d / "model.pt"))
    np.savez(d / "test.npz", x=x.numpy(), y=y.numpy())
    np.savez(d / "bad_labels.npz", x=x.numpy(), y=np.full(N, 12))
    nan = x.numpy().copy()
    nan[3, 0, 2, 2] = np.nan
    np.savez(d / "nan.npz", x=nan, y=y.numpy())
    torch.save(digits_cnn, d / "model.pkl")
    return {"model": d / "model.pt", "data": d / "test.npz", "bad_labels": d / "bad_labels.npz",
            "nan": d / "nan.npz", "pickle": d / "model.pkl", "dir": d}


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


def test_evaluate_json_gate_and_report(files: dict[str, Path]) -> None:
    report = files["dir"] / "report"
    code, out, _ = _run("evaluate", "--model", files["model"], "--data", files["data"], "--eps", "0.1,8/255",
                        "--suite", "fast", "--json", "--min-robust-accuracy", "0.99", "--report", report)
    data = json.loads(out)
    assert set(data["robust_accuracy"]) == {"0.1", "8/255"}  # keys exactly as written
    assert 0.0 <= data["robust_accuracy"]["0.1"] <= data["robust_accuracy"]["8/255"] <= data["clean_accuracy"]
    assert isinstance(data["findings"], list)
    assert data["n_examples"] == N
    # An undefended CNN is well below 99 % robust accuracy at eps 0.1: the gate fails with exit 1.
    assert data["robust_accuracy"]["0.1"] < 0.99
    assert code == 1 and data["passed"] is False
    assert {p.name for p in report.iterdir()} >= {"report.html", "report.md", "result.json"}


def test_evaluate_passes_a_met_threshold(files: dict[str, Path]) -> None:
    code, out, _ = _run("evaluate", "-m", files["model"], "-d", files["data"], "--eps", "0.01", "--suite", "fast",
                        "--no-checks", "--limit", "8", "--json", "--min-robust-accuracy", "0")
    assert code == 0, out
    assert json.loads(out)["n_examples"] == 8


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "no such model file"),
    ("pickle", "refusing to unpickle"),
    ("negative", "--eps"),
    ("norm", "norm"),
    ("labels", "label 12"),
    ("nan", "NaN"),
])
def test_evaluate_cannot_run_exits_2(files: dict[str, Path], case: str, message: str) -> None:
    args = {"model": files["model"], "data": files["data"], "eps": "0.1", "norm": "linf"}
    if case == "missing":
        args["model"] = files["dir"] / "nope.pt"
    elif case == "pickle":
        args["model"] = files["pickle"]
    elif case == "negative":
        args["eps"] = "-0.1"
    elif case == "norm":
        args["norm"] = "l7"
    elif case == "labels":
        args["data"] = files["bad_labels"]
    elif case == "nan":
        args["data"] = files["nan"]
    code, out, err = _run("evaluate", "--model", args["model"], "--data", args["data"], f"--eps={args['eps']}",
                          "--norm", args["norm"], "--suite", "fast", "--json")
    assert code == 2
    assert "error:" in err and message in err
    assert "Traceback" not in out + err
    # --json: the reason is on stdout too, as JSON, for a pipeline that parses it
    data = json.loads(out)
    assert data["exit_code"] == 2 and message in data["error"]


def test_attack_writes_adversarials(files: dict[str, Path]) -> None:
    out_file = files["dir"] / "adv.npz"
    code, out, _ = _run("attack", "-m", files["model"], "-d", files["data"], "--attack", "pgd", "--eps", "0.2",
                        "--steps", "10", "--out", out_file, "--json")
    assert code == 0, out
    data = json.loads(out)
    with np.load(out_file) as npz:
        x_adv, success = npz["x_adv"], npz["success"]
    x = np.load(files["data"])["x"]
    assert x_adv.shape == x.shape and success.shape == (N,)
    assert np.abs(x_adv - x).max() <= 0.2 + 1e-6
    assert data["success_rate"]["0.2"] == pytest.approx(float(success.mean()))
    assert success.mean() > 0.5  # eps 0.2 breaks most of an undefended digits CNN
    code, _, err = _run("attack", "-m", files["model"], "-d", files["data"], "--attack", "nope", "--eps", "0.1")
    assert code == 2 and "attack" in err


def test_demo_quick_writes_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, stdout, _ = _run("demo", "--quick", "--out", out)
    assert code == 0, stdout
    names = {p.name for p in out.iterdir()}
    assert {"report.html", "report.md", "result.json", "model.pt", "test.npz"} <= names
    result = json.loads((out / "result.json").read_text())
    assert set(result["robust_accuracy"]) == {"0.05", "0.1", "0.2", "0.3"}
    assert str(out / "report.html") in stdout.replace("\n", "")
    # The saved files are what `bastion evaluate` reads.
    model = bn.load_model(out / "model.pt")
    x, y = bn.datasets.load_data(out / "test.npz")
    assert y is not None and model.predict(x).shape == y.shape
    # Everything the README's commands read: the train split, a plain checkpoint, the same weights as safetensors.
    assert {"train.npz", "ckpt.pt", "model.safetensors"} <= names
    x_tr, y_tr = bn.datasets.load_data(out / "train.npz")
    assert y_tr is not None and x_tr.shape[1:] == (1, 8, 8) and x_tr.shape[0] == y_tr.shape[0] > 1000
    state = bn.safe_load(out / "ckpt.pt")
    same = bn.load_model(out / "model.safetensors", factory="bastion.zoo:SmallCNN(1, 10, 8, width=16)")
    assert set(state) == set(same.module.state_dict())
    assert torch.equal(same.predict(x), model.predict(x))
    assert result["provenance"]["model"]["sha256"] == hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()


def test_gate_refuses_a_number_the_masking_checks_distrust(files: dict[str, Path], masked_cnn: nn.Module) -> None:
    masked = files["dir"] / "masked.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(masked_cnn, torch.rand(1, 1, 8, 8)).save(str(masked))
    args = ["evaluate", "-m", masked, "-d", files["data"], "--eps", "0.1,0.2", "--suite", "fast", "--json",
            "--min-robust-accuracy", "0"]
    code, out, _ = _run(*args)
    data = json.loads(out)
    high = [f["check"] for f in data["findings"] if f["severity"] == "high"]
    assert high, "the rounding model must raise a HIGH masking finding"
    assert data["failed_epsilons"] == []  # the accuracy alone would clear a threshold of 0 ...
    assert code == 1 and data["passed"] is False and data["untrusted_because"] == high  # ... the findings do not
    code, out, _ = _run(*args, "--allow-masking")
    assert code == 0 and json.loads(out)["passed"] is True


def test_user_mistakes_never_crash_or_exit_1(files: dict[str, Path]) -> None:
    d = files["dir"]
    x, y = np.load(files["data"])["x"], np.load(files["data"])["y"]
    np.savez(d / "flat.npz", x=x.reshape(len(x), -1), y=y)
    np.savez(d / "rgb.npz", x=np.zeros((4, 3, 32, 32), np.float32), y=y[:4])
    np.savez(d / "obj.npz", x=np.array([0, "evil"], dtype=object), y=np.array([0, 1]))
    for data, message in (("flat.npz", "shape (64,)"), ("rgb.npz", "shape (3, 32, 32)"), ("obj.npz", "object")):
        for cmd in ("evaluate", "attack"):
            code, out, err = _run(cmd, "-m", files["model"], "-d", d / data, "--eps", "0.1", "--suite" if
                                  cmd == "evaluate" else "--attack", "fast" if cmd == "evaluate" else "pgd")
            assert code == 2, (cmd, data, out, err)
            assert message in err and "Traceback" not in out + err
    # A report path that is a file is refused before any attack runs; names are printed literally.
    code, _, err = _run("evaluate", "-m", files["model"], "-d", files["data"], "--eps", "0.1", "--report",
                        files["data"])
    assert code == 2 and "--report" in err and "existing file" in err
    code, _, err = _run("attack", "-m", d / "[bold]x[/bold].pt", "-d", files["data"], "--eps", "0.1")
    assert code == 2 and "[bold]x[/bold].pt" in err


def test_attack_out_never_overwrites_inputs(files: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(files["data"].read_bytes())
    before = data.read_bytes()
    base = ["attack", "-m", files["model"], "-d", data, "--eps", "0.1", "--steps", "2", "--limit", "4"]
    code, _, err = _run(*base, "--out", data, "--force")
    assert code == 2 and "not the input" in err and data.read_bytes() == before
    out = tmp_path / "sub" / "adv.npz"  # the folder is created
    assert _run(*base, "--out", out)[0] == 0
    code, _, err = _run(*base, "--out", out)
    assert code == 2 and "--force" in err
    assert _run(*base, "--out", out, "--force")[0] == 0
    # With one epsilon the result can be fed back as --data.
    code, stdout, _ = _run("attack", "-m", files["model"], "-d", out, "--eps", "0.1", "--steps", "2", "--json")
    assert code == 0 and json.loads(stdout)["n_examples"] == 4

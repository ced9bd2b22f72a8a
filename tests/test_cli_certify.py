"""`bastion certify` end to end, on a model whose certificates are known in closed form.

The model ignores its input and always favours class 0 by a logit margin of 1: smoothing counts every
draw for class 0 (radius sigma * Phi^-1(alpha^(1/n))), and IBP proves class 0 at any eps. With labels
(0, 0, 0, 1) the certified accuracy is exactly 0.75 wherever the radius is covered, 0 beyond it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn
from typer.testing import CliRunner

from bastion.cli.main import app

SIGMA, N, N0, ALPHA = 0.25, 500, 50, 0.001


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("certify_cli")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].bias[0] = 1.0
    model_path = folder / "const.pt"
    torch.jit.script(model).save(str(model_path))
    data_path = folder / "data.npz"
    x = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    np.savez(data_path, x=x, y=np.array([0, 0, 0, 1]))
    return model_path, data_path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["certify", *args])
    return result.exit_code, result.output


def test_smoothing_json_report(files: tuple[Path, Path]) -> None:
    model, data = files
    cap = SIGMA * norm.ppf(ALPHA ** (1 / N))  # the largest radius N draws can certify
    code, out = _run("--model", str(model), "--data", str(data), "--n", str(N), "--n0", str(N0),
                     "--sigma", str(SIGMA), "--radii", f"0,0.25,{cap - 1e-3},{cap + 1e-3}", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["method"] == "smoothing" and report["examples"] == 4 and report["abstained"] == 0
    assert report["certified_accuracy"] == pytest.approx([0.75, 0.75, 0.75, 0.0])
    assert report["per_example"]["prediction"] == [0, 0, 0, 0]
    assert report["per_example"]["radius"] == pytest.approx([cap] * 4)


def test_ibp_json_and_threshold_exit_codes(files: tuple[Path, Path]) -> None:
    model, data = files
    code, out = _run("--model", str(model), "--data", str(data), "--method", "ibp", "--eps", "0.1,0.3", "--json",
                     "--min-certified-accuracy", "0.7")
    assert code == 0, out
    report = json.loads(out)
    assert report["certified_accuracy"] == pytest.approx([0.75, 0.75]) and report["passed"] is True
    code, out = _run("--model", str(model), "--data", str(data), "--method", "ibp", "--eps", "0.1",
                     "--min-certified-accuracy", "0.8", "--limit", "3")
    assert code == 0, out  # the first three examples are all class 0
    code, out = _run("--model", str(model), "--data", str(data), "--method", "ibp", "--eps", "0.1",
                     "--min-certified-accuracy", "0.8")
    assert code == 1, out
    assert "FAIL" in out and "0.750" in out


def test_smoothing_below_threshold_exits_one(files: tuple[Path, Path]) -> None:
    model, data = files
    code, out = _run("--model", str(model), "--data", str(data), "--n", str(N), "--n0", str(N0),
                     "--radii", "0.25", "--min-certified-accuracy", "0.9")
    assert code == 1, out
    assert "abstained: 0 of 4" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "magic"], "--method"),
    (["--method", "ibp"], "--eps"),
    (["--eps", "0.1"], "--eps"),
    (["--radii", "a,b"], "--radii"),
    (["--min-certified-accuracy", "2"], "--min-certified-accuracy"),
    (["--sigma", "-1"], "sigma"),
])
def test_bad_arguments_exit_two(files: tuple[Path, Path], args: list[str], message: str) -> None:
    model, data = files
    code, out = _run("--model", str(model), "--data", str(data), "--n", "100", "--n0", "10", *args)
    assert code == 2, out
    assert message in out


def test_missing_files_and_unlabelled_data_exit_two(files: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = files
    code, out = _run("--model", str(tmp_path / "nope.pt"), "--data", str(data))
    assert code == 2 and "no such model file" in out
    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=np.zeros((2, 1, 8, 8), dtype=np.float32))
    code, out = _run("--model", str(model), "--data", str(unlabelled), "--n", "100")
    assert code == 2 and "labels" in out


def test_ibp_reads_a_traced_cnn_as_its_layers(tmp_path: Path) -> None:
    """A traced CNN (as `bastion demo` saves it) certifies exactly as the network it was traced from."""
    import bastion as bn
    from bastion.certify import ibp_certify

    torch.manual_seed(0)
    model_path, data_path = tmp_path / "cnn.pt", tmp_path / "d.npz"
    net = bn.zoo.SmallCNN(1, 10, 8, width=4).eval()
    torch.jit.trace(net, torch.rand(1, 1, 8, 8)).save(str(model_path))
    x = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()  # labels it gets right, so certificates can hold
    np.savez(data_path, x=x, y=y)
    res = CliRunner().invoke(app, ["certify", "--model", str(model_path), "--data", str(data_path),
                                   "--method", "ibp", "--eps", "0,0.001,0.01", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    got = report["certified_accuracy"]
    assert report["verdict"] == "NO GATE"
    assert report["provenance"]["model"]["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    want = [float(ibp_certify(net, torch.from_numpy(x), torch.from_numpy(y), e).double().mean())
            for e in (0.0, 0.001, 0.01)]
    assert got == want and got[0] == 1.0  # eps 0: every correctly classified example is certified


def test_ibp_on_a_traced_layer_it_cannot_bound_says_what_to_do_instead(tmp_path: Path) -> None:
    model_path, data_path = tmp_path / "up.pt", tmp_path / "d.npz"
    net = torch.nn.Sequential(torch.nn.ConvTranspose2d(1, 2, 2), torch.nn.Flatten(), torch.nn.Linear(162, 10)).eval()
    torch.jit.trace(net, torch.rand(1, 1, 8, 8)).save(str(model_path))
    np.savez(data_path, x=np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32), y=np.arange(4))
    res = CliRunner().invoke(app, ["certify", "--model", str(model_path), "--data", str(data_path),
                                   "--method", "ibp", "--eps", "0.05"])
    assert res.exit_code == 2, res.output
    assert "layer '0'" in res.output and "Traceback" not in res.output


def test_labels_and_shapes_the_model_cannot_take_exit_two(files: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = files
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "label10.npz", x=x, y=np.array([0, 10]))  # a 10-class model has no class 10
    code, out = _run("--model", str(model), "--data", str(tmp_path / "label10.npz"), "--n", "100")
    assert code == 2 and "label 10" in out
    np.savez(tmp_path / "wide.npz", x=np.zeros((2, 3, 8, 8), np.float32), y=np.array([0, 1]))
    code, out = _run("--model", str(model), "--data", str(tmp_path / "wide.npz"), "--n", "100")
    assert code == 2 and "shape (3, 8, 8)" in out and "Traceback" not in out

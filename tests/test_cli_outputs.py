"""Commands never destroy what they were given, refuse to overwrite without --force, and check before working.

Also: `bastion report` rebuilds a saved report, and piped output keeps lines whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import bastion as bn
from bastion.cli.main import app
from bastion.cli.paths import atomic_path, check_output, check_outputs
from bastion.errors import InputError

runner = CliRunner()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits_cnn: nn.Module,
          digits: bn.datasets.Dataset) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("outputs")
    x, y = digits.x_test[:16], digits.y_test[:16]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(digits_cnn, x[:1]).save(str(d / "model.pt"))
    np.savez(d / "test.npz", x=x.numpy(), y=y.numpy())
    np.savez(d / "train.npz", x=digits.x_train[:200].numpy(), y=digits.y_train[:200].numpy())
    torch.save(digits_cnn.state_dict(), d / "ckpt.pt")
    return {"dir": d, "model": d / "model.pt", "data": d / "test.npz", "train": d / "train.npz",
            "ckpt": d / "ckpt.pt"}


# --- the helper ------------------------------------------------------------------------------------------
def test_check_output_refuses_inputs_by_path_link_and_inode(tmp_path: Path) -> None:
    src = tmp_path / "in.npz"
    src.write_bytes(b"x")
    os.link(src, tmp_path / "hard.npz")
    (tmp_path / "soft.npz").symlink_to(src)
    for alias in (src, tmp_path / "." / "in.npz", tmp_path / "hard.npz", tmp_path / "soft.npz"):
        with pytest.raises(InputError, match="not the input"):
            check_output(alias, inputs=[src], force=True)
    # Writing into an input folder changes the input (a model folder being signed, an image folder).
    (tmp_path / "model-dir").mkdir()
    with pytest.raises(InputError, match="outside the input folder"):
        check_output(tmp_path / "model-dir" / "new.sig", inputs=[tmp_path / "model-dir"], force=True)
    assert src.read_bytes() == b"x"


def test_check_output_needs_force_for_existing_files_and_a_writable_folder(tmp_path: Path) -> None:
    old = tmp_path / "old.npz"
    old.write_bytes(b"keep")
    with pytest.raises(InputError, match="--force"):
        check_output(old)
    assert check_output(old, force=True) == old
    with pytest.raises(InputError, match="a folder"):
        check_output(tmp_path)
    with pytest.raises(InputError, match="is a file"):
        check_output(old / "x.npz")
    assert check_output(tmp_path / "new" / "deep" / "x.npz").parent.is_dir()  # folders are created
    with pytest.raises(InputError, match="--report"):
        check_outputs(tmp_path, ["old.npz"], what="--report")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(InputError, match="write"):
            check_output(ro / "x.npz")


def test_atomic_path_never_leaves_half_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.npz"]
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path
        np.savez(tmp, a=np.arange(3))
    assert np.load(target)["a"].tolist() == [0, 1, 2] and os.listdir(tmp_path) == ["out.npz"]


# --- every command that writes ---------------------------------------------------------------------------
def _invoke(*args: object) -> tuple[int, str]:
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


def test_attack_never_overwrites_its_inputs_and_checks_before_attacking(files: dict[str, Path]) -> None:
    before = _digest(files["data"])
    model_link = files["dir"] / "model-link.npz"  # an .npz name that is the model file
    if not model_link.exists():
        model_link.symlink_to(files["model"])
    for target in (files["data"], model_link):
        code, out = _invoke("attack", "-m", files["model"], "-d", files["data"], "--eps", "0.1", "--steps", "2",
                            "--out", target, "--force")
        assert code == 2 and "not the input" in out
    assert _digest(files["data"]) == before
    existing = files["dir"] / "adv.npz"
    existing.write_bytes(b"precious")
    # A huge --steps would take minutes: the refusal must come first.
    code, out = _invoke("attack", "-m", files["model"], "-d", files["data"], "--eps", "0.1", "--steps", "100000",
                        "--out", existing)
    assert code == 2 and "--force" in out and existing.read_bytes() == b"precious"
    code, out = _invoke("attack", "-m", files["model"], "-d", files["data"], "--eps", "0.1", "--steps", "2",
                        "--out", existing, "--force")
    assert code == 0, out
    assert np.load(existing)["x_adv"].shape == (16, 1, 8, 8)


def test_convert_refuses_to_write_over_its_input(files: dict[str, Path], tmp_path: Path) -> None:
    link = tmp_path / "ckpt.safetensors"
    link.symlink_to(files["ckpt"])
    before = _digest(files["ckpt"])
    code, out = _invoke("convert", files["ckpt"], link, "--force")
    assert code == 2 and "not the input" in out and _digest(files["ckpt"]) == before
    code, out = _invoke("convert", files["ckpt"], tmp_path / "w.safetensors")
    assert code == 0, out
    code, out = _invoke("convert", files["ckpt"], tmp_path / "w.safetensors")
    assert code == 2 and "--force" in out


def test_harden_names_the_file_given_and_checks_outputs_before_training(files: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "robust.pt"
    code, text = _invoke("harden", "--data", files["train"], "--test", files["data"], "--arch", "mlp",
                         "--method", "fgsm-rs", "--epochs", "1", "--suite", "fast", "--out", out, "--json")
    assert code == 0, text
    assert out.is_file() and not (tmp_path / "robust.pt.pt").exists()
    assert (tmp_path / "robust.safetensors").is_file() and (tmp_path / "robust.md").is_file()
    md = (tmp_path / "robust.md").read_text()
    assert _digest(files["train"]) in md and _digest(files["data"]) in md and _digest(out) in md
    assert bn.load_model(out).predict(torch.zeros(2, 1, 8, 8)).shape == (2,)
    stamp = out.stat().st_mtime_ns
    # Existing outputs: refused before any training (10,000 epochs would take hours).
    code, text = _invoke("harden", "--data", files["train"], "--epochs", "10000", "--out", out)
    assert code == 2 and "--force" in text and out.stat().st_mtime_ns == stamp


def test_harden_refuses_output_over_the_test_file(files: dict[str, Path], tmp_path: Path) -> None:
    test_md = tmp_path / "t.md"
    test_md.write_text("my notes")
    code, text = _invoke("harden", "--data", files["train"], "--test", test_md, "--epochs", "1", "--force",
                         "--out", tmp_path / "t")
    assert code == 2 and "not the input" in text and test_md.read_text() == "my notes"


def test_harden_validates_labels_like_every_other_command(files: dict[str, Path], tmp_path: Path,
                                                          digits: bn.datasets.Dataset) -> None:
    y = digits.y_train[:200].numpy().copy()
    y[:3] = [10, 42, 42]
    bad = tmp_path / "stray.npz"
    np.savez(bad, x=digits.x_train[:200].numpy(), y=y)
    code, text = _invoke("harden", "--data", bad, "--epochs", "1", "--out", tmp_path / "m")
    assert code == 2 and "--data labels" in text and "0-10, 42" in text and "absent" in text
    assert not (tmp_path / "m.pt").exists()
    np.savez(bad, x=digits.x_train[:200].numpy(), y=np.full(200, 1.5))
    code, text = _invoke("harden", "--data", bad, "--epochs", "1", "--out", tmp_path / "m")
    assert code == 2 and "integer class indices" in text
    # --test labels are checked against the class count of the training labels, as evaluate checks a model.
    np.savez(bad, x=digits.x_test[:16].numpy(), y=np.full(16, 12))
    code, text = _invoke("harden", "--data", files["train"], "--test", bad, "--epochs", "1", "--out", tmp_path / "m")
    assert code == 2 and "label 12" in text and "10-class" in text


def test_evaluate_report_is_checked_first_and_demo_keeps_earlier_files(files: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / "result.json").write_text("{}")
    code, text = _invoke("evaluate", "-m", files["model"], "-d", files["data"], "--eps", "0.1", "--report", report)
    assert code == 2 and "--force" in text and (report / "result.json").read_text() == "{}"
    # The data file given as the report folder: refused, the data file untouched.
    before = _digest(files["data"])
    code, text = _invoke("evaluate", "-m", files["model"], "-d", files["data"], "--eps", "0.1", "--force",
                         "--report", files["data"])
    assert code == 2 and "--report" in text and _digest(files["data"]) == before
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "model.pt").write_bytes(b"my model")
    code, text = _invoke("demo", "--quick", "--out", demo)
    assert code == 2 and "--force" in text and (demo / "model.pt").read_bytes() == b"my model"


# --- reports carry the verdict; `bastion report` rebuilds them --------------------------------------------
def test_evaluate_report_carries_the_verdict_and_report_rebuilds_it(files: dict[str, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["bastion", "evaluate", "-m", str(files["model"]), "--eps", "0.3", "--min-robust-accuracy", "0.9"]
    monkeypatch.setattr(sys, "argv", argv)
    report = tmp_path / "out"
    res = runner.invoke(app, [str(a) for a in ("evaluate", "-m", files["model"], "-d", files["data"], "--eps", "0.3",
                                               "--suite", "fast", "--no-checks", "--min-robust-accuracy", "0.9",
                                               "--report", report, "--json")])
    assert res.exit_code == 1, res.output
    assert json.loads(res.stdout)["verdict"] == "FAIL"
    saved = json.loads((report / "result.json").read_text())
    # An undefended CNN at eps 0.3 on [0, 1] pixels is far below 90 %: the gate fails, and says so on file.
    assert saved["verdict"] == "FAIL" and saved["gate"]["min_robust_accuracy"] == 0.9
    assert saved["gate"]["checks"][0] == {"check": "robust accuracy at ε=0.3", "threshold": ">= 0.9",
                                          "value": saved["robust_accuracy"]["0.3"], "result": "FAIL"}
    prov = saved["provenance"]
    assert prov["model"]["sha256"] == _digest(files["model"]) and prov["data"]["sha256"] == _digest(files["data"])
    assert prov["command"].startswith("bastion evaluate -m ") and prov["bastion_version"] == bn.__version__
    for name in ("report.md", "report.html"):
        body = (report / name).read_text()
        assert "FAIL" in body and _digest(files["model"]) in body and prov["created"] in body
    code, text = _invoke("report", report / "result.json", "--format", "md", "--out", tmp_path / "again.md")
    assert code == 0, text
    assert (tmp_path / "again.md").read_text() == (report / "report.md").read_text()
    code, text = _invoke("report", report / "result.json")
    assert code == 0 and (report / "result.html").read_text() == (report / "report.html").read_text()
    code, text = _invoke("report", report / "result.json")
    assert code == 2 and "--force" in text
    code, text = _invoke("report", report / "result.json", "--out", report / "result.json", "--force")
    assert code == 2 and "not the input" in text
    (tmp_path / "bad.json").write_text("[1, 2")
    code, text = _invoke("report", tmp_path / "bad.json", "--out", tmp_path / "b.md", "--format", "md")
    assert code == 2 and "not JSON" in text
    code, text = _invoke("report", report / "result.json", "--format", "pdf")
    assert code == 2 and "--format" in text


# --- small things ------------------------------------------------------------------------------------------
def test_piped_output_keeps_long_lines_whole(tmp_path: Path) -> None:
    long_name = tmp_path / ("a-rather-long-folder-name-" * 4) / "missing.pt"
    proc = subprocess.run([sys.executable, "-m", "bastion.cli.main", "convert", str(long_name),
                           str(long_name.with_suffix(".safetensors"))], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": ""}, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(long_name) in lines[0]

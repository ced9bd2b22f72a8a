"""A model signature can name its training data's manifest; `bastion verify` reports and checks that link."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.sign import keygen, verify_model
from bastion.sign.api import sign_model_detailed

runner = CliRunner()


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(bytes(range(256)) * 4)
    data = tmp_path / "train.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((20, 4)).astype(np.float32), y=rng.integers(0, 2, 20))
    (tmp_path / "keys").mkdir()
    priv, pub = keygen(tmp_path / "keys" / "release")
    res = runner.invoke(app, ["data", "manifest", str(data), "--source", "unit-test", "--key", str(priv)])
    assert res.exit_code == 0, res.output
    return {"model": model, "data": data, "manifest": tmp_path / "train.npz.manifest.json", "priv": priv, "pub": pub}


def test_signature_names_the_data_manifest_and_verify_checks_it(setup: dict[str, Path], tmp_path: Path) -> None:
    import hashlib

    s = setup
    res = runner.invoke(app, ["sign", str(s["model"]), "--key", str(s["priv"]), "--data-manifest", str(s["manifest"]),
                              "--json"])
    assert res.exit_code == 0, res.output
    digest = hashlib.sha256(s["manifest"].read_bytes()).hexdigest()
    link = json.loads(res.output)["training_data"]
    assert link["sha256"] == digest and link["num_records"] == 20 and link["source"] == "unit-test"

    # verify reports the link, and with --data-manifest checks it
    res = runner.invoke(app, ["verify", str(s["model"]), "--pub", str(s["pub"]), "--data-manifest", str(s["manifest"])])
    assert res.exit_code == 0, res.output
    assert f"training data: train.npz.manifest.json sha256 {digest} (matches --data-manifest)" in res.output
    out = verify_model(s["model"], s["pub"])
    assert out.ok and out.training_data["sha256"] == digest and out.training_data_ok is None

    # another data set's manifest: exit 1, both digests named
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros((20, 4), np.float32), y=np.zeros(20, np.int64))
    assert runner.invoke(app, ["data", "manifest", str(other), "--source", "unit-test"]).exit_code == 0
    res = runner.invoke(app, ["verify", str(s["model"]), "--pub", str(s["pub"]),
                              "--data-manifest", str(tmp_path / "other.npz.manifest.json"), "--json"])
    assert res.exit_code == 1, res.output
    body = json.loads(res.output)
    assert body["training_data_ok"] is False and not body["ok"] and body["signature_ok"]
    assert any(digest in r and "training data" in r for r in body["reasons"])

    # one byte of the named manifest changed: the link no longer holds
    raw = bytearray(s["manifest"].read_bytes())
    raw[-2] ^= 1
    s["manifest"].write_bytes(bytes(raw))
    assert not verify_model(s["model"], s["pub"], data_manifest=s["manifest"]).ok


def test_link_is_signed_and_absent_unless_asked(setup: dict[str, Path]) -> None:
    s = setup
    sign_model_detailed(s["model"], s["priv"])
    out = verify_model(s["model"], s["pub"], data_manifest=s["manifest"])
    assert out.signature_ok and not out.ok and out.training_data == {}
    assert any("names no data manifest" in r for r in out.reasons)
    res = runner.invoke(app, ["verify", str(s["model"]), "--pub", str(s["pub"])])
    assert res.exit_code == 0 and "training data" not in res.output


@pytest.mark.parametrize("case", ["missing", "not-a-manifest", "model-signing"])
def test_bad_data_manifest_is_exit_2(setup: dict[str, Path], tmp_path: Path, case: str) -> None:
    s = setup
    path = tmp_path / "nope.json"
    args = ["sign", str(s["model"]), "--key", str(s["priv"]), "--data-manifest", str(path)]
    if case == "not-a-manifest":
        path.write_text('{"hello": 1}')
    if case == "model-signing":
        args = [*args[:-1], str(s["manifest"]), "--format", "model-signing"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "data_manifest" in res.output or "data-manifest" in res.output
    assert not (s["model"] / "model.sig").exists()

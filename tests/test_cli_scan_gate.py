"""`bastion scan` as a gate: an empty target is an error, not a pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.main import app

runner = CliRunner()


def test_scanning_nothing_is_not_a_pass(tmp_path: Path) -> None:
    empty = tmp_path / "artefacts"
    empty.mkdir()
    res = runner.invoke(app, ["scan", str(empty)])
    assert res.exit_code == 2 and "nothing to scan" in res.output
    (empty / "weights.bin").write_bytes(b"\x00" * 16)
    assert runner.invoke(app, ["scan", str(empty)]).exit_code == 0


def test_a_policy_that_allows_a_denied_call_is_never_silent(tmp_path: Path) -> None:
    import os
    import pickle

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.getcwd, ())  # harmless, but in a namespace that is denied as a whole

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Payload()))
    res = runner.invoke(app, ["scan", str(evil)])
    assert res.exit_code == 1 and "CRITICAL" in res.output
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'allow: ["{os.getcwd.__module__}:getcwd"]\n')
    res = runner.invoke(app, ["scan", "--config", str(policy), str(evil)])
    assert res.exit_code == 0  # the user's choice holds, and the report says what it let through
    assert "INFO BASTION-PICKLE-ALLOWED-BY-POLICY" in res.output and "getcwd" in res.output
    res = runner.invoke(app, ["scan", "--config", str(policy), "--fail-on", "info", str(evil)])
    assert res.exit_code == 1


def test_a_model_named_file_with_no_model_inside_is_a_finding(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(bytes(range(256)) * 8)  # no format: not a zip, pickle or tensor file
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(bytes(range(256)))  # not named like a model: nothing to say
    res = runner.invoke(app, ["scan", "--fail-on", "medium", str(tmp_path)])
    assert res.exit_code == 1
    assert res.output.count("BASTION-UNRECOGNISED") == 2 and "notes.txt" not in res.output
    assert runner.invoke(app, ["scan", str(tmp_path)]).exit_code == 0  # MEDIUM: visible, below the default gate


def test_safe_load_honours_a_users_explicit_carve_out(tmp_path: Path) -> None:
    import os
    import pickle

    import bastion as bn
    from bastion.scan import Policy

    path = tmp_path / "cwd.pkl"
    path.write_bytes(pickle.dumps({"where": os.getcwd}))
    with pytest.raises(bn.errors.ModelLoadError, match="getcwd"):
        bn.safe_load(path, weights_only=False)
    allowed = Policy.default().extended(allow=[f"{os.getcwd.__module__}:getcwd"])
    assert bn.safe_load(path, policy=allowed, weights_only=False) == {"where": os.getcwd}

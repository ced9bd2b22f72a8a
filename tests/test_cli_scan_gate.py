"""`bastion scan` as a gate: an empty target is an error, not a pass."""

from __future__ import annotations

from pathlib import Path

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

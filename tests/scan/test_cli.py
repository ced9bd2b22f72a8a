"""`bastion scan`: exit codes, text/JSON/SARIF output and the YAML allowlist extension."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bastion.cli import scan_cmd

from .conftest import RunsSystem


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    # only this command: the CLI tests do not depend on other command modules
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """bastion"""

    scan_cmd.register(app)
    return app


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "evil": tmp_path / "weights.txt",
        "ok": tmp_path / "ok.pkl",
        "custom": tmp_path / "custom.pkl",
    }
    out["evil"].write_bytes(pickle.dumps(RunsSystem(), protocol=2))
    out["ok"].write_bytes(pickle.dumps({"lr": 0.1, "layers": [1, 2]}))
    out["custom"].write_bytes(b"cmypkg.models\nNet\n)R.")
    return out


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["scan", *args])
    return res.exit_code, res.stdout


def test_exit_codes(app: typer.Typer, files: dict[str, Path], tmp_path: Path) -> None:
    assert run(app, str(files["ok"]))[0] == 0
    code, out = run(app, str(files["evil"]))
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith(f"{files['evil']}:opcode ") and " CRITICAL BASTION-PICKLE-DANGEROUS " in first
    assert "FAILED" in out.splitlines()[-1]
    assert run(app, str(files["custom"]))[0] == 1  # unknown global: HIGH by default
    assert run(app, "--fail-on", "critical", str(files["custom"]))[0] == 0
    assert run(app, str(tmp_path / "missing.pt"))[0] == 2
    assert run(app, "--fail-on", "bogus", str(files["ok"]))[0] == 2


def test_quiet_prints_only_failing_findings(app: typer.Typer, files: dict[str, Path]) -> None:
    code, out = run(app, "--quiet", "--fail-on", "critical", str(files["custom"]), str(files["evil"]))
    assert code == 1
    assert len(out.splitlines()) == 1 and "CRITICAL" in out


def test_json(app: typer.Typer, files: dict[str, Path], tmp_path: Path) -> None:
    code, out = run(app, "--format", "json", str(tmp_path))
    body = json.loads(out)
    assert code == 1 and body["files_scanned"] == 3 and body["passed"] is False
    assert body["max_severity"] == "critical" and body["counts"]["high"] == 1
    f = next(x for x in body["findings"] if x["severity"] == "critical")
    assert set(f) == {"rule_id", "severity", "path", "location", "message", "global_name"}


def test_sarif_shape(app: typer.Typer, files: dict[str, Path]) -> None:
    code, out = run(app, "--format", "sarif", str(files["evil"]), str(files["ok"]))
    sarif = json.loads(out)
    assert code == 1 and sarif["version"] == "2.1.0" and "sarif-2.1.0" in sarif["$schema"]
    (run_,) = sarif["runs"]
    rules = run_["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert "BASTION-PICKLE-DANGEROUS" in ids and len(ids) == len(set(ids))
    assert all({"id", "shortDescription", "defaultConfiguration"} <= set(r) for r in rules)
    (result,) = run_["results"]
    assert result["ruleId"] == "BASTION-PICKLE-DANGEROUS" and result["level"] == "error"
    assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    loc = result["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"].endswith("weights.txt")
    assert loc["logicalLocations"][0]["fullyQualifiedName"].startswith("opcode ")
    assert run_["invocations"][0]["executionSuccessful"] is True


def test_config_extends_the_allowlist(app: typer.Typer, files: dict[str, Path], tmp_path: Path) -> None:
    cfg = tmp_path / "policy.yaml"
    cfg.write_text("allow:\n  - mypkg.models:Net\n")
    assert run(app, "--config", str(cfg), str(files["custom"]))[0] == 0
    assert run(app, "--config", str(cfg), str(files["evil"]))[0] == 1  # the denylist still applies
    cfg.write_text("deny:\n  - {pattern: 'mypkg.*:*', severity: critical}\n")
    code, out = run(app, "--config", str(cfg), str(files["custom"]))
    assert code == 1 and "CRITICAL" in out
    cfg.write_text("allow: [broken\n")
    assert run(app, "--config", str(cfg), str(files["ok"]))[0] == 2
    cfg.write_text("allowlist: []\n")
    assert run(app, "--config", str(cfg), str(files["ok"]))[0] == 2

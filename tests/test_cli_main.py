"""The `bastion` entry point itself: --version and -h."""

from __future__ import annotations

from typer.testing import CliRunner

import bastion as bn
from bastion.cli.main import app

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


def test_version_and_short_help() -> None:
    code, text = _invoke("--version")
    assert code == 0 and text.strip() == bn.__version__
    code, text = _invoke("-h")
    assert code == 0 and "evaluate" in text and "report" in text
    code, text = _invoke("attack", "-h")
    assert code == 0 and "--eps" in text

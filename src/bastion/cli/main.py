"""Entry point: `bastion`. Each capability registers its commands from its own module."""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="bastion",
    help=(
        "Secure ML models across their life: attack them as an adversary would, harden them, scan and sign "
        "their files, and gate releases on the results.\n\n"
        "Exit codes: 0 passed, 1 the model or file failed the check, 2 the check could not run."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from bastion import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", "-V", help="Print Bastion's version and exit.",
                                 callback=_print_version, is_eager=True),
) -> None:
    """Options that come before the command (the app's help text is set on ``app``)."""


# One command group per capability, in the order `bastion --help` lists them, with the commands each adds.
COMMANDS: dict[str, tuple[str, ...]] = {
    "assess_cmd": ("assess",),
    "attack_cmd": ("attack",),
    "evaluate_cmd": ("evaluate", "report"),
    "demo_cmd": ("demo",),
    "scan_cmd": ("scan",),
    "convert_cmd": ("convert",),
    "sign_cmd": ("keygen", "sign", "verify"),
    "harden_cmd": ("harden",),
    "certify_cmd": ("certify",),
    "privacy_cmd": ("privacy",),
    "monitor_cmd": ("monitor",),
    "registry_cmd": ("registry",),
    "incident_cmd": ("incident",),
    "serve_cmd": ("serve",),
    "keys_cmd": ("keys",),
    "audit_cmd": ("audit",),
    "data_cmd": ("data",),
}


def _modules_to_load(argv: list[str]) -> list[str]:
    """Every command module, except when the console script runs one known command: then only its module.

    `bastion scan FILE` in a pre-commit hook should not pay for importing the gateway, the privacy attacks
    and their libraries; `--help`, the Python API (tests, CliRunner) and anything unusual load everything.
    """
    if os.path.basename(argv[0] if argv else "") == "bastion" and len(argv) > 1:
        for module, names in COMMANDS.items():
            if argv[1] in names:
                return [module]
    return list(COMMANDS)


for _name in _modules_to_load(sys.argv):
    importlib.import_module(f"bastion.cli.{_name}").register(app)


@app.command()
def version() -> None:
    """Print Bastion's version."""
    from bastion import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()

"""Entry point: `bastion`. Each capability registers its commands from its own module."""

from __future__ import annotations

import typer

from bastion.cli import (
    assess_cmd,
    attack_cmd,
    audit_cmd,
    certify_cmd,
    convert_cmd,
    data_cmd,
    demo_cmd,
    evaluate_cmd,
    harden_cmd,
    incident_cmd,
    keys_cmd,
    monitor_cmd,
    privacy_cmd,
    registry_cmd,
    scan_cmd,
    serve_cmd,
    sign_cmd,
)

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


# One command group per capability, in the order `bastion --help` lists them.
COMMAND_MODULES = (
    assess_cmd,
    attack_cmd,
    evaluate_cmd,
    demo_cmd,
    scan_cmd,
    convert_cmd,
    sign_cmd,
    harden_cmd,
    certify_cmd,
    privacy_cmd,
    monitor_cmd,
    registry_cmd,
    incident_cmd,
    serve_cmd,
    keys_cmd,
    audit_cmd,
    data_cmd,
)
for module in COMMAND_MODULES:
    module.register(app)


@app.command()
def version() -> None:
    """Print Bastion's version."""
    from bastion import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()

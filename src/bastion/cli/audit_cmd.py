"""`bastion audit`: check the gateway's tamper-evident audit log and export it for forensics."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from bastion.cli.common import EXIT_FAILED, check_output_file, err_console, handle_errors, print_json
from bastion.cli.keys_cmd import DB_HELP
from bastion.errors import InputError

audit_app = typer.Typer(
    name="audit",
    help=(
        "The gateway's audit log: verify its hash chain and signed checkpoints, export records.\n\n"
        "Examples:\n\n"
        "  bastion audit verify --db sqlite:///guard.db --pub audit.pub\n\n"
        "  bastion audit export --db sqlite:///guard.db --since 2026-11-28 --format csv --out audit.csv\n\n"
        "Exit codes (verify): 0 intact, 1 a record was altered, inserted or deleted, 2 could not check."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``bastion audit`` to the app."""
    app.add_typer(audit_app)


def _engine(db: str) -> object:
    import sqlalchemy as sa

    from bastion.guard.db import make_engine

    engine = make_engine(db)
    if db.startswith("sqlite") or "://" not in db:
        path = db.split("///", 1)[-1]
        if not Path(path).is_file():
            raise InputError("db", db, "an existing gateway database (the --db `bastion serve` wrote to)")
    if not sa.inspect(engine).has_table("guard_audit"):
        raise InputError("db", db, "a gateway database with an audit log (run `bastion serve` with it first)")
    return engine


@audit_app.command("verify")
@handle_errors
def verify_command(
    db: str = typer.Option(..., "--db", help=DB_HELP),
    pub: Path | None = typer.Option(None, "--pub", help="Public key whose private half signs the checkpoints "
                                    "(`bastion serve --signing-key`). Without it a rebuilt chain would pass."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """Walk the chain and the signed checkpoints; name the first altered, inserted or deleted record."""
    from bastion.guard.audit import verify

    public_key = None
    if pub is not None:
        from bastion.sign.keys import load_public_key

        public_key = load_public_key(pub)
    rep = verify(_engine(db), public_key)  # type: ignore[arg-type]
    if json_out:
        print_json(rep.to_dict())
    else:
        for seq, problem in rep.problems:
            typer.echo(f"record {seq}: {problem}")
        for w in rep.warnings:
            err_console.print(f"warning: {w}", highlight=False)
        verdict = "INTACT" if rep.ok else f"TAMPERED (first bad record: {rep.first_bad})"
        typer.echo(f"{verdict}: {rep.records} records, {rep.checkpoints} signed checkpoints, "
                   f"{rep.unsigned_tail} records after the last valid checkpoint")
    if not rep.ok:
        raise typer.Exit(EXIT_FAILED)


@audit_app.command("export")
@handle_errors
def export_command(
    db: str = typer.Option(..., "--db", help=DB_HELP),
    since: str | None = typer.Option(None, "--since", help="Only records at or after this ISO time (UTC if no zone)."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    out: Path | None = typer.Option(None, "--out", "-o", help="File to write (default: stdout)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file.", metavar=""),
) -> None:
    """Export audit records (with their chain hashes) as JSON lines or CSV."""
    from bastion.guard.audit import export, normalise_time

    if fmt not in ("jsonl", "csv"):
        raise InputError("format", fmt, "jsonl or csv")
    if since is not None:
        normalise_time(since)
    engine = _engine(db)
    if out is None:
        n = export(engine, sys.stdout, since=since, fmt=fmt)  # type: ignore[arg-type]
    else:
        check_output_file(out, "--out", force=force)
        with out.open("w", newline="") as fh:
            n = export(engine, fh, since=since, fmt=fmt)  # type: ignore[arg-type]
    err_console.print(f"{n} records exported", highlight=False)

"""`bastion registry`: signed, scanned model versions; gated promotion; rollback; encrypted backups.

Exit codes: 0 done, 1 the registry refused (unsigned, signature or scan failed, gate not met), 2 bad input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from bastion.cli.common import EXIT_FAILED, err_console, handle_errors, print_json

DEFAULT_DB = "sqlite:///bastion-registry/registry.db"
DEFAULT_STORE = "bastion-registry/store"

registry_app = typer.Typer(
    name="registry",
    help=(
        "Model versions that passed the gate: push (signature and scan checked on the stored bytes), promote "
        "(policy gate on stored evidence), rollback, checkout, encrypted backups.\n\n"
        "Example:\n\n"
        "  bastion registry push my-model/ --name digits --version 1 --pub keys/release.pub "
        "--evidence out/result.json\n\n"
        "  bastion registry promote digits 1 --to production --policy gate.yaml\n\n"
        "  bastion registry rollback digits\n\n"
        "The database is --db (default sqlite:///bastion-registry/registry.db, or $BASTION_REGISTRY_DB; "
        "PostgreSQL by URL, e.g. postgresql+psycopg://user@host/db) and files live in --store.\n\n"
        "Exit codes: 0 done, 1 refused by the gate, 2 bad input."
    ),
    no_args_is_help=True,
)

DB_OPT = typer.Option(None, "--db", help="SQLAlchemy URL of the registry database (default: $BASTION_REGISTRY_DB or "
                      f"{DEFAULT_DB}).")
STORE_OPT = typer.Option(None, "--store", help="Folder of the content-addressed file store (default: "
                         f"$BASTION_REGISTRY_STORE or {DEFAULT_STORE}).")
JSON_OPT = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar="")


def register(app: typer.Typer) -> None:
    """Add ``bastion registry`` to the app."""
    app.add_typer(registry_app)


def db_url(db: str | None) -> str:
    """The database every stateful command shares: --db, else $BASTION_REGISTRY_DB, else a local SQLite file."""
    url = db or os.environ.get("BASTION_REGISTRY_DB", DEFAULT_DB)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return url


def _open(db: str | None, store: Path | None) -> Any:
    from bastion.registry import Registry

    return Registry(db_url(db), store or Path(os.environ.get("BASTION_REGISTRY_STORE", DEFAULT_STORE)))


def _refused(exc: Any, json_out: bool) -> None:
    if json_out:
        print_json({"refused": True, "reasons": exc.reasons, "exit_code": EXIT_FAILED})
    err_console.print("refused:", style="bold red", highlight=False)
    for r in exc.reasons:
        err_console.print(f"  - {r}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_FAILED)


def _emit(obj: dict[str, Any], json_out: bool, line: str) -> None:
    if json_out:
        print_json(obj)
    else:
        typer.echo(line)


@registry_app.command("push")
@handle_errors
def push_command(
    model_dir: Path = typer.Argument(..., help="Folder with the model's files and its signature (bastion sign)."),
    name: str = typer.Option(..., "--name", help="Model name."),
    version: str = typer.Option(..., "--version", help="New version (versions are immutable)."),
    pub: Path | None = typer.Option(None, "--pub", help="Trusted public key the signature must verify against."),
    ca_bundle: Path | None = typer.Option(None, "--ca-bundle", help="Trusted CA bundle, for certificate signatures."),
    evidence: list[Path] = typer.Option([], "--evidence", help="Result JSON (bastion evaluate, privacy audit); "
                                        "repeatable. Promotion gates are judged on these figures."),
    data_manifest: Path | None = typer.Option(None, "--data-manifest", help="Data manifest of the training data."),
    policy: Path | None = typer.Option(None, "--policy", help="Gate policy YAML (push: signature, scan_fail_on)."),
    db: str | None = DB_OPT,
    store: Path | None = STORE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Register a signed model folder; refused (exit 1) when unsigned, the signature fails, or the scan finds."""
    from bastion.registry import GatePolicy, RegistryRefusal

    pol = GatePolicy.load(policy)
    try:
        info = _open(db, store).push(model_dir, name, version, public_key=pub, ca_bundle=ca_bundle,
                                     evidence=list(evidence), data_manifest=data_manifest, policy=pol)
    except RegistryRefusal as exc:
        _refused(exc, json_out)
        return
    _emit(info.to_dict(), json_out, f"registered {name} {version}: {len(info.files)} files, signature "
          f"{'verified (key ' + info.signature.get('key_id', '')[:16] + ')' if info.signature.get('ok') else 'not checked'}, "
          f"scan worst: {info.scan['worst']}")


@registry_app.command("promote")
@handle_errors
def promote_command(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version to promote."),
    to: str = typer.Option(..., "--to", help="staging | production"),
    policy: Path | None = typer.Option(None, "--policy", help="Gate policy YAML (promote.<stage>: robust_accuracy, "
                                       "max_mia_auc, data_manifest, ...)."),
    db: str | None = DB_OPT,
    store: Path | None = STORE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Move a version to a stage if its stored evidence meets the policy's gate for that stage."""
    from bastion.registry import GatePolicy, RegistryRefusal

    pol = GatePolicy.load(policy)
    try:
        info = _open(db, store).promote(name, version, to, pol)
    except RegistryRefusal as exc:
        _refused(exc, json_out)
        return
    _emit(info.to_dict(), json_out, f"{name} {version} is now in {to}")


@registry_app.command("rollback")
@handle_errors
def rollback_command(
    name: str = typer.Argument(..., help="Model name."),
    db: str | None = DB_OPT,
    store: Path | None = STORE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Move production back to the version that was in production before the current one."""
    info = _open(db, store).rollback(name)
    _emit(info.to_dict(), json_out, f"{name}: production is now version {info.version}")


@registry_app.command("list")
@handle_errors
def list_command(
    name: str | None = typer.Argument(None, help="Only this model."),
    db: str | None = DB_OPT,
    store: Path | None = STORE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """List registered versions and their stages."""
    rows = _open(db, store).versions(name)
    if json_out:
        print_json({"versions": [r.to_dict() for r in rows]})
        return
    for r in rows:
        typer.echo(f"{r.name}\t{r.version}\t{r.stage}\t{r.created_at}\tscan:{r.scan['worst']}\t"
                   f"evidence:{','.join(sorted(r.evidence)) or '-'}")


@registry_app.command("show")
@handle_errors
def show_command(
    name: str = typer.Argument(..., help="Model name."),
    ref: str = typer.Argument(..., help="Version, or a stage: production | staging."),
    db: str | None = DB_OPT,
    store: Path | None = STORE_OPT,
) -> None:
    """Show one version: files and digests, signature, scan, evidence (JSON)."""
    print_json(_open(db, store).resolve(name, ref).to_dict())


@registry_app.command("checkout")
@handle_errors
def checkout_command(
    name: str = typer.Argument(..., help="Model name."),
    ref: str = typer.Argument(..., help="Version, or a stage: production | staging."),
    dest: Path = typer.Option(..., "--dest", help="New folder to write the files into."),
    db: str | None = DB_OPT,
    store: Path | None = STORE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Write a version's files into a new folder, re-checking every digest and the signature."""
    from bastion.registry import RegistryRefusal

    try:
        info, out = _open(db, store).checkout(name, ref, dest)
    except RegistryRefusal as exc:
        _refused(exc, json_out)
        return
    _emit({"name": info.name, "version": info.version, "dest": str(out)}, json_out,
          f"{name} {info.version} written to {out} (digests and signature re-checked)")


@registry_app.command("log")
@handle_errors
def log_command(
    db: str | None = DB_OPT,
    store: Path | None = STORE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Every registry change, and whether the event hash chain is intact (exit 1 when it is not)."""
    reg = _open(db, store)
    events, problems = reg.events(), reg.verify_log()
    if json_out:
        print_json({"events": events, "intact": not problems, "problems": problems})
    else:
        for e in events:
            typer.echo(f"{e['id']}\t{e['time']}\t{e['action']}\t{e['name']}\t{e['version']}")
        typer.echo("event chain intact" if not problems else "event chain BROKEN: " + "; ".join(problems))
    if problems:
        raise typer.Exit(EXIT_FAILED)


@registry_app.command("backup-key")
@handle_errors
def backup_key_command(
    out: Path = typer.Option(..., "--out", help="Where to write a new random 256-bit backup key (mode 0600)."),
) -> None:
    """Create a backup encryption key. Keep it apart from the backups."""
    from bastion.registry.backup import new_key

    typer.echo(f"backup key written to {new_key(out)}")


@registry_app.command("backup")
@handle_errors
def backup_command(
    to: Path = typer.Option(..., "--to", help="Backup file to write (AES-256-GCM sealed, signed index)."),
    key_file: Path = typer.Option(..., "--key-file", help="Backup key (bastion registry backup-key)."),
    sign_key: Path = typer.Option(..., "--sign-key", help="Private key that signs the backup's index."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing backup file.", metavar=""),
    db: str | None = DB_OPT,
    store: Path | None = STORE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Write an encrypted, signed backup of every version, its files and the event log."""
    from bastion.registry.backup import backup

    res = backup(_open(db, store), to, key_file, sign_key, force=force)
    _emit(res, json_out, f"backup of {res['versions']} versions ({res['objects']} files) written to {to}")


@registry_app.command("restore")
@handle_errors
def restore_command(
    source: Path = typer.Argument(..., help="Backup file."),
    key_file: Path = typer.Option(..., "--key-file", help="Backup key it was sealed with."),
    pub: Path = typer.Option(..., "--pub", help="Public key the backup's index must be signed with."),
    db: str | None = DB_OPT,
    store: Path | None = STORE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Restore a backup into an empty registry, after checking its signature, every tag and every digest."""
    from bastion.registry.backup import restore

    res = restore(_open(db, store), source, key_file, pub)
    _emit(res, json_out, f"restored {res['restored_versions']} versions ({res['objects']} files) "
          f"from a backup made {res['created']}")

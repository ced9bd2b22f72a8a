"""`bastion incident`: what the playbooks did, and closing it (lifting routes, offline modes and throttles)."""

from __future__ import annotations

import typer

from bastion.cli.common import handle_errors, print_json
from bastion.cli.registry_cmd import DB_OPT, JSON_OPT, db_url

incident_app = typer.Typer(
    name="incident",
    help=(
        "Incidents raised by playbooks (monitor or detector firings) and the actions each ran.\n\n"
        "Example:\n\n"
        "  bastion incident list --open\n\n"
        "  bastion incident show 3f2a\n\n"
        "  bastion incident resolve 3f2a --note 'false alarm: retrained scanner'   # lifts route/offline/throttle\n\n"
        "Same database as the registry (--db or $BASTION_REGISTRY_DB). Exit codes: 0 done, 2 bad input."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``bastion incident`` to the app."""
    app.add_typer(incident_app)


@incident_app.command("list")
@handle_errors
def list_command(
    open_only: bool = typer.Option(False, "--open", help="Only incidents not yet resolved.", metavar=""),
    db: str | None = DB_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """List incidents, oldest first."""
    from bastion.respond import ResponseState

    rows = ResponseState(db_url(db)).incidents("open" if open_only else None)
    if json_out:
        print_json({"incidents": rows})
        return
    for r in rows:
        acts = ", ".join(a["action"] + ("" if a["ok"] else " (failed)") for a in r["actions"])
        typer.echo(f"{r['id'][:12]}\t{r['created']}\t{r['severity']}\t{r['status']}\t{r['title']}\t[{acts}]")
    if not rows:
        typer.echo("no incidents")


@incident_app.command("show")
@handle_errors
def show_command(
    incident: str = typer.Argument(..., help="Incident id or a unique prefix of it."),
    db: str | None = DB_OPT,
) -> None:
    """Show one incident as JSON: what fired, for which key and model, and every action's outcome."""
    from bastion.respond import ResponseState

    print_json(ResponseState(db_url(db)).incident(incident))


@incident_app.command("resolve")
@handle_errors
def resolve_command(
    incident: str = typer.Argument(..., help="Incident id or a unique prefix of it."),
    note: str = typer.Option("", "--note", help="Why it is closed (kept with the incident)."),
    keep_actions: bool = typer.Option(False, "--keep-actions", help="Close it but leave routes, offline modes "
                                      "and throttles in place.", metavar=""),
    db: str | None = DB_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Close an incident; by default also undo what can be undone (route-to, offline, throttle)."""
    from bastion.respond import ResponseState, resolve

    out = resolve(ResponseState(db_url(db)), incident, note, undo=not keep_actions)
    if json_out:
        print_json(out)
        return
    undone = [a["action"] for a in out["actions"] if a.get("undone")]
    typer.echo(f"incident {out['id'][:12]} resolved" + (f"; undone: {', '.join(undone)}" if undone else ""))

"""`bastion keys`: API keys of the guarded gateway (`bastion serve`): create, list, revoke."""

from __future__ import annotations

import typer

from bastion.cli.common import err_console, handle_errors, print_json
from bastion.errors import InputError

keys_app = typer.Typer(
    name="keys",
    help=(
        "API keys for `bastion serve`: scopes infer, read-audit, admin; only a salted scrypt hash is stored.\n\n"
        "Examples:\n\n"
        "  bastion keys create --db sqlite:///guard.db --name alice --scope infer --rate 20 --daily-budget 5000\n\n"
        "  bastion keys list --db sqlite:///guard.db\n\n"
        "  bastion keys revoke --db sqlite:///guard.db 3f2a9c0d1e4b5a6f\n\n"
        "A revoked key is refused on the next request by every worker."
    ),
    no_args_is_help=True,
)

DB_HELP = "Gateway database: sqlite:///path.db (or a path) or postgresql+psycopg://user@host/db."


def register(app: typer.Typer) -> None:
    """Add ``bastion keys`` to the app."""
    app.add_typer(keys_app)


def _store(db: str, redis_url: str | None = None) -> object:
    from bastion.guard.db import make_engine, migrate
    from bastion.guard.keys import KeyStore
    from bastion.guard.ratelimit import connect_redis

    engine = make_engine(db)
    migrate(engine)
    return KeyStore(engine, connect_redis(redis_url))


def parse_policy(text: str | None) -> dict[str, object] | None:
    """``top_k:3``, ``round:2``, ``label``, ``reverse_sigmoid:0.5``, ``noise:0.05`` or ``full``."""
    if text is None:
        return None
    kind, _, arg = text.partition(":")
    field = {"top_k": "k", "round": "decimals", "reverse_sigmoid": "beta", "noise": "sigma"}.get(kind)
    expected = "full, label, top_k:K, round:DECIMALS, reverse_sigmoid:BETA or noise:SIGMA"
    if kind not in ("full", "label") and field is None:
        raise InputError("policy", text, expected)
    out: dict[str, object] = {"kind": kind}
    if field and arg:
        try:
            out[field] = int(arg) if field in ("k", "decimals") else float(arg)
        except ValueError:
            raise InputError("policy", text, expected) from None
    return out


@keys_app.command("create")
@handle_errors
def create_command(
    db: str = typer.Option(..., "--db", help=DB_HELP),
    name: str = typer.Option(..., "--name", help="Who the key is for (shown in listings and audit exports)."),
    scope: list[str] = typer.Option(["infer"], "--scope", help="infer, read-audit or admin; repeat for several."),
    rate: float | None = typer.Option(None, "--rate", help="Requests per second (token bucket)."),
    burst: int | None = typer.Option(None, "--burst", help="Requests allowed at once (bucket size)."),
    daily_budget: int | None = typer.Option(None, "--daily-budget", help="Examples per UTC day (extraction defence)."),
    policy: str | None = typer.Option(None, "--policy", help="Output policy: full, label, top_k:K, round:D, "
                                      "reverse_sigmoid:BETA or noise:SIGMA (default: the config's)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """Create a key and print it once (only its hash is stored: it cannot be shown again)."""
    store = _store(db)
    key, info = store.create(name, scope, rate=rate, burst=burst, daily_budget=daily_budget,  # type: ignore[attr-defined]
                             output_policy=parse_policy(policy))
    if json_out:
        print_json({"key": key, **info.to_dict()})
        return
    typer.echo(key)
    err_console.print(f"key id {info.key_id} for {info.name} ({', '.join(info.scopes)}); store the key now, "
                      "it is not shown again", highlight=False)


@keys_app.command("list")
@handle_errors
def list_command(
    db: str = typer.Option(..., "--db", help=DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """List keys (ids, names, scopes, limits, revocation), never the keys themselves."""
    keys = store_list = _store(db).list()  # type: ignore[attr-defined]
    if json_out:
        print_json({"keys": [k.to_dict() for k in store_list]})
        return
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        typer.echo(f"{k.key_id}  {k.name:<20} {','.join(k.scopes):<22} {state}")
    if not keys:
        err_console.print("no keys yet: bastion keys create --db ... --name NAME --scope infer")


@keys_app.command("revoke")
@handle_errors
def revoke_command(
    key_id: str = typer.Argument(..., help="The key id (from `bastion keys list`)."),
    db: str = typer.Option(..., "--db", help=DB_HELP),
    redis_url: str | None = typer.Option(None, "--redis", help="The gateway's Redis URL, so workers drop cached "
                                         "key state at once (without it they re-read within about a second)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """Revoke a key: every gateway worker refuses it from its next request on."""
    info = _store(db, redis_url).revoke(key_id)  # type: ignore[attr-defined]
    if json_out:
        print_json(info.to_dict())
        return
    typer.echo(f"revoked {info.key_id} ({info.name})")

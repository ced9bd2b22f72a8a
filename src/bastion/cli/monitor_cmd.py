"""`bastion monitor`: fit a traffic baseline on clean data, then check batches of traffic against it.

The same monitors the gateway will run on live traffic, offline: drift of the inputs (Kolmogorov-Smirnov per
feature), of the model's outputs (MMD), of the predicted-class mix (chi-square), a confidence drop, and a
rise of inputs near the decision boundary (evasion and probing campaigns). Exit codes: 0 no window drifted,
1 at least one did, 2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bastion.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    FACTORY_HELP,
    check_output_file,
    err_console,
    handle_errors,
    print_json,
)
from bastion.errors import InputError

monitor_app = typer.Typer(
    name="monitor",
    help=(
        "Watch a model's traffic for drift and attack: fit a baseline on clean data, check batches against it.\n\n"
        "Example:\n\n"
        "  bastion monitor fit --model bastion-demo/model.pt --reference bastion-demo/train.npz "
        "--out baseline.npz\n\n"
        "  bastion monitor check --model bastion-demo/model.pt --baseline baseline.npz "
        "--data bastion-demo/test.npz --window 100\n\n"
        "Exit codes: 0 no window drifted, 1 a window drifted, 2 the check could not run."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``bastion monitor`` to the app."""
    app.add_typer(monitor_app)


def _load(model: Path, data: Path, factory: str | None, trust_pickle: bool, argument: str) -> tuple[Any, Any]:
    from bastion.core.loading import load_model
    from bastion.datasets import load_data

    m = load_model(model, factory=factory, trust_pickle=trust_pickle)
    x, _ = load_data(data, label_column=None)
    if len(x) == 0:
        raise InputError(argument, f"{data} with no examples", "a data file with examples")
    return m, x


def _secret(env: str | None) -> bytes | None:
    import os

    if env is None:
        return None
    value = os.environ.get(env)
    if not value:
        raise InputError("--webhook-secret-env", env, "the name of a set, non-empty environment variable")
    return value.encode()


#: monitors whose alarm looks like an evasion or probing campaign rather than natural drift
_ATTACK_LIKE = {"boundary": "AML.T0043", "confidence": "AML.T0015"}


def _incident(model: Path, data: Path, reports: list[Any], drifted: list[int], window: int) -> Any:
    from bastion.monitor.alerts import Incident

    fired = sorted({m for i in drifted for m in reports[i].fired})
    attack = [m for m in fired if m in _ATTACK_LIKE]
    return Incident(
        title=f"{model.name}: {len(drifted)} of {len(reports)} traffic windows drifted ({', '.join(fired)})",
        severity="high" if attack else "medium", source="bastion monitor check", model=str(model),
        details={"data": str(data), "window": window, "windows": len(reports), "drifted_windows": len(drifted),
                 "first_drifted_window": drifted[0], "monitors": ", ".join(fired)},
        atlas=tuple(sorted({_ATTACK_LIKE[m] for m in attack})))


def _respond(books: Any, db: str | None, model: Path, reports: list[Any], webhook: str | None, fmt: str,
             secret: bytes | None) -> list[str]:
    """Feed every monitor firing to the playbooks, in window order; returns the incidents raised."""
    from bastion.cli.registry_cmd import db_url
    from bastion.monitor.webhooks import WebhookSender
    from bastion.respond import Event, Responder, ResponseState

    sender = WebhookSender(webhook, fmt=fmt, secret=secret, retries=3, backoff=0.5) if webhook else None  # type: ignore[arg-type]
    responder = Responder(books, ResponseState(db_url(db)), send_alert=sender.send if sender else None)
    ids: list[str] = []
    import time

    t0 = time.time()
    for i, r in enumerate(reports):
        for name in r.fired:
            ids += responder.observe(Event(name, t0 + i * 1e-3, None, model.stem, {"window": i}))
    if sender is not None:
        sender.close()
    return ids


@monitor_app.command("fit")
@handle_errors
def fit_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model file (TorchScript, ONNX, skops, safetensors)."),
    reference: Path = typer.Option(..., "--reference", "-r", help="Clean reference data (.npz/.npy/.csv/images); "
                                   "labels are not needed. Use data the model did not train on if you can."),
    out: Path = typer.Option(..., "--out", "-o", help="Baseline file to write (.npz, no pickles)."),
    alpha: float = typer.Option(0.01, "--alpha", help="False-alarm rate per window for all monitors together."),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle model files (they can run code).",
                                      metavar=""),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file.", metavar=""),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """Fit a baseline: the reference distribution of the model's inputs, outputs, confidence and margins."""
    from bastion.monitor import Baseline

    check_output_file(out, "--out", force=force, inputs=(model, reference))
    m, x = _load(model, reference, factory, trust_pickle, "--reference")
    base = Baseline(alpha=alpha).fit_model(m, x)
    base.save(out)
    summary = {"baseline": str(out), "reference_examples": len(x), "alpha": alpha, "monitors": list(base.monitors)}
    if json_out:
        print_json(summary)
    else:
        err_console.print(f"baseline of {len(x)} examples written to {out} (false-alarm rate per window <= {alpha})",
                          highlight=False, soft_wrap=True, markup=False)


@monitor_app.command("check")
@handle_errors
def check_command(
    model: Path = typer.Option(..., "--model", "-m", help="The model the baseline was fitted for."),
    baseline: Path = typer.Option(..., "--baseline", "-b", help="Baseline written by `bastion monitor fit`."),
    data: Path = typer.Option(..., "--data", "-d", help="Traffic to check, in arrival order."),
    window: int = typer.Option(200, "--window", "-w", help="Requests per window (at least 20); a last window "
                               "shorter than this is not checked."),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle model files (they can run code).",
                                      metavar=""),
    webhook: str | None = typer.Option(None, "--webhook", help="POST one incident here when any window drifted."),
    webhook_format: str = typer.Option("generic", "--webhook-format", help="generic (signed JSON) | xsoar "
                                       "(Cortex XSOAR incident: name, type, severity, occurred, labels, rawJSON)."),
    webhook_secret_env: str | None = typer.Option(None, "--webhook-secret-env", help="Name of the environment "
                                                  "variable holding the HMAC-SHA256 secret that signs the body."),
    playbooks: Path | None = typer.Option(None, "--playbooks", help="Playbook YAML: run its actions for the "
                                          "monitors that fired (incidents land in --db; see `bastion incident`)."),
    db: str | None = typer.Option(None, "--db", help="Database for incidents and serving state (default: "
                                  "$BASTION_REGISTRY_DB or sqlite:///bastion-registry/registry.db)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """Check traffic window by window; exit 1 when any window drifted, naming the monitors that fired."""
    from bastion.monitor import Baseline

    if window < 20:
        raise InputError("--window", window, "at least 20 requests per window")
    secret = _secret(webhook_secret_env)
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise InputError("--webhook", webhook, "an http:// or https:// URL")
    if webhook_format not in ("generic", "xsoar"):
        raise InputError("--webhook-format", webhook_format, "generic or xsoar")
    books = None
    if playbooks is not None:
        from bastion.respond import load_playbooks

        books = load_playbooks(playbooks)
    base = Baseline.load(baseline)
    m, x = _load(model, data, factory, trust_pickle, "--data")
    width = base.reference_inputs_.shape[1]
    if x[0].numel() != width:
        raise InputError("--data", f"examples of {x[0].numel()} values", f"{width} values, as in the baseline")
    # Whole windows in arrival order; a shorter tail is not checked (its test would have less power).
    reports = [base.check_model(m, x[i:i + window]) for i in range(0, len(x) - window + 1, window)]
    if not reports:
        raise InputError("--data", f"{len(x)} examples", f"at least one full window of {window} (or lower --window)")
    drifted = [i for i, r in enumerate(reports) if r.drift]
    delivery: dict[str, Any] | None = None
    if webhook is not None and drifted:
        from bastion.monitor.webhooks import deliver_now

        incident = _incident(model, data, reports, drifted, window)
        (d,) = deliver_now(webhook, [incident], fmt=webhook_format, secret=secret,
                           retries=3, backoff=0.5)
        delivery = {"incident": incident.id, "ok": d.ok, "status": d.status, "attempts": d.attempts, "error": d.error}
        if not d.ok:
            err_console.print(f"warning: the incident was not delivered to {webhook}: {d.error}", highlight=False,
                              markup=False, soft_wrap=True)
    incidents = _respond(books, db, model, reports, webhook, webhook_format, secret) if books and drifted else []
    if json_out:
        print_json({"windows": len(reports), "drifted": drifted, "window": window, "webhook": delivery,
                    "incidents": incidents, "reports": [r.to_dict() for r in reports]})
    else:
        for i, r in enumerate(reports):
            mark = "DRIFT" if r.drift else "ok   "
            detail = ", ".join(f"{res.monitor} p={res.p_value:.2g}" for res in r.results if res.drift)
            typer.echo(f"window {i} (requests {i * window}-{(i + 1) * window - 1}): {mark} {detail}".rstrip())
        typer.echo(f"{len(drifted)} of {len(reports)} windows drifted (false-alarm rate per window <= {base.alpha})")
        for inc in incidents:
            typer.echo(f"incident {inc[:12]} raised (bastion incident show {inc[:12]})")
    raise typer.Exit(EXIT_FAILED if drifted else EXIT_OK)


@monitor_app.command("status")
@handle_errors
def status_command(
    url: str | None = typer.Option(None, "--url", help="A running gateway (e.g. http://127.0.0.1:8080): ask it "
                                   "for its live monitors, serving state and fallbacks (GET /monitor/status)."),
    key_env: str = typer.Option("BASTION_API_KEY", "--key-env", help="Variable holding an API key with the "
                                "read-audit scope, for --url."),
    db: str | None = typer.Option(None, "--db", help="Or read the shared database the gateways write to: serving "
                                  "state, throttles, monitor windows, incidents (default: $BASTION_REGISTRY_DB or "
                                  "sqlite:///bastion-registry/registry.db)."),
    model: str | None = typer.Option(None, "--model", help="Model name, with --db (default: every model)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """What the live monitors and the playbooks are doing: serving mode, throttles, windows, incidents."""
    doc = _status_from_url(url, key_env) if url else _status_from_db(db, model)
    if json_out:
        print_json(doc)
        return
    serving = doc.get("serving") or {}
    typer.echo(f"model {doc.get('model') or 'all'}" + (f" version {doc['version']}" if doc.get("version") else "")
               + f": {serving.get('mode', 'normal')}"
               + (f" -> {serving['route_to']}" if serving.get("route_to") else "")
               + (f" (incident {str(serving['incident'])[:12]})" if serving.get("incident") else ""))
    for key, rate in (doc.get("throttled_keys") or serving.get("throttled_keys") or {}).items():
        typer.echo(f"throttled key {key}: {rate:g} requests/s")
    if "windows" in doc:
        w = doc["windows"]
        typer.echo(f"windows checked: {w['global']} global ({w['global_alarms']} alarmed), {w['keys']} per key "
                   f"({w['key_alarms']} alarmed)")
    last = doc.get("last_global")
    if last:
        typer.echo("last global window: " + ", ".join(f"{m} p={p:.2g}" for m, p in last["p_values"].items()))
    for inc in doc.get("incidents", [])[:10]:
        typer.echo(f"incident {inc['id'][:12]}\t{inc['status']}\t{inc['severity']}\t{inc['title']}")


def _status_from_url(url: str, key_env: str) -> dict[str, Any]:
    import os

    import httpx

    if not url.startswith(("http://", "https://")):
        raise InputError("--url", url, "the gateway's http:// or https:// address")
    key = os.environ.get(key_env)
    if not key:
        raise InputError("--key-env", key_env, "the name of a set variable holding a key with the read-audit scope")
    try:
        resp = httpx.get(url.rstrip("/") + "/monitor/status", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    except httpx.HTTPError as exc:
        raise InputError("--url", url, f"a reachable Bastion gateway ({type(exc).__name__}: {exc})") from None
    if resp.status_code != 200:
        raise InputError("--url", f"{url} answered HTTP {resp.status_code}: {resp.text[:200]}",
                         "200 from /monitor/status (a key with the read-audit scope)")
    return dict(resp.json())


def _status_from_db(db: str | None, model: str | None) -> dict[str, Any]:
    from bastion.cli.registry_cmd import db_url
    from bastion.respond import ResponseState

    state = ResponseState(db_url(db))
    serving = state.serving(model) if model else None
    incidents = state.incidents()
    if model:
        incidents = [i for i in incidents if i["model"] == model]
    last = state.windows(model, "global", 1)
    return {"model": model, "serving": serving or {"mode": "normal"}, "all_models": state.serving_all(),
            "throttled_keys": state.throttles(), "windows": state.window_counts(model),
            "last_global": last[-1] if last else None, "incidents": incidents[::-1][:50]}

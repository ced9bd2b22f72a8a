"""`bastion serve`: the guarded inference gateway (KServe v2 API) in front of a model file."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from bastion.cli.common import FACTORY_HELP, err_console, handle_errors, parse_shape
from bastion.cli.keys_cmd import DB_HELP


def register(app: typer.Typer) -> None:
    """Add ``bastion serve`` to the app."""
    app.command("serve", help=SERVE_HELP)(serve_command)


SERVE_HELP = (
    "Serve a model behind API keys, rate limits, input validation, detectors and a tamper-evident audit log.\n\n"
    "Endpoints: GET /v2/health/live|ready, GET /v2/models/NAME, POST /v2/models/NAME/infer (Open Inference "
    "Protocol), /metrics (Prometheus), /docs and /openapi.json.\n\n"
    "Example:\n\n"
    "  bastion keygen audit  # signs the audit checkpoints\n\n"
    "  bastion keys create --db sqlite:///guard.db --name alice --scope infer\n\n"
    "  bastion serve --model bastion-demo/model.pt --db sqlite:///guard.db --reference bastion-demo/test.npz "
    "--config guard.yaml --signing-key audit\n\n"
    "  curl -H 'Authorization: Bearer bst_...' -d @request.json localhost:8080/v2/models/model/infer\n\n"
    "guard.yaml sets limits, output policy and detectors (e.g. detectors: [{kind: squeeze, fpr: 0.01, "
    "action: reject}]); their thresholds come from --reference at the stated false-positive rate. It can also "
    "run live monitors (monitor: {window: 50}) and playbooks (playbooks: [...]: alert, throttle, revoke, route-to, "
    "offline, rollback); GET /ui is a status page, GET /monitor/status its JSON.\n\n"
    "  bastion serve --model registry://digits@production --config guard.yaml --reference clean.npz"
)


@handle_errors
def serve_command(
    model: str = typer.Option(..., "--model", "-m", help="Model file (TorchScript, ONNX, skops, safetensors), or "
                              "registry://NAME@production (also @staging or @VERSION): served from the registry, its "
                              "signature and scan re-checked at load, promotions and rollbacks followed without a "
                              "restart."),
    config: Path | None = typer.Option(None, "--config", "-c", help="guard.yaml: limits, policy, detectors."),
    db: str | None = typer.Option(None, "--db", help=DB_HELP + " Default: MODEL.audit.db next to the model."),
    redis_url: str | None = typer.Option(None, "--redis", help="Redis URL: rate limits and key revocations "
                                         "shared by all workers and replicas (default: in-process)."),
    reference: Path | None = typer.Option(None, "--reference", "-r", help="Clean data (.npz ...) to fit the "
                                          "detectors and set their thresholds."),
    signing_key: Path | None = typer.Option(None, "--signing-key", help="Private key (`bastion keygen`) signing "
                                            "audit checkpoints."),
    password_env: str | None = typer.Option(None, "--password-env", help="Variable holding the key's password."),
    input_shape: str | None = typer.Option(None, "--input-shape", help="Input shape without the batch, e.g. 1,8,8 "
                                           "(default: declared by the model or taken from --reference)."),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle model files (they can run code).",
                                      metavar=""),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (each loads the model)."),
    registry_db: str | None = typer.Option(None, "--registry-db", help="Registry database: registry:// models, "
                                           "route-to fallbacks, incidents and serving state (default: "
                                           "$BASTION_REGISTRY_DB or sqlite:///bastion-registry/registry.db)."),
    registry_store: str | None = typer.Option(None, "--registry-store", help="Registry file store (default: "
                                              "$BASTION_REGISTRY_STORE or bastion-registry/store)."),
) -> None:
    import uvicorn

    from bastion.guard import create_app
    from bastion.guard.live import REGISTRY_SCHEME
    from bastion.guard.serve import ENV, ServeOptions, build_gateway, options_env

    files = [(config, "--config"), (reference, "--reference"), (signing_key, "--signing-key")]
    if not model.startswith(REGISTRY_SCHEME):
        files.append((Path(model), "--model"))
    for p, name in files:
        if p is not None and not p.is_file():
            from bastion.errors import InputError

            raise InputError(name, str(p), "an existing file")
    shape = parse_shape(input_shape)
    opts = ServeOptions(model=model, config=str(config) if config else None, db=db, redis=redis_url,
                        reference=str(reference) if reference else None,
                        signing_key=str(signing_key) if signing_key else None, signing_password_env=password_env,
                        input_shape=list(shape) if shape else None, factory=factory, trust_pickle=trust_pickle,
                        registry_db=registry_db, registry_store=registry_store)
    gateway = build_gateway(opts)  # fails here, with one line, before any worker starts
    live = gateway.live
    extra = ""
    if live is not None:
        extra = (f", {len(live.responder.matcher.playbooks) if live.responder else 0} playbooks"
                 + (f", live monitors (windows of {live.settings.window})" if live.settings else "")
                 + (f", following registry {live.follow[0]}@{live.follow[1]}" if live.follow else ""))
    err_console.print(f"serving {gateway.model_name} (version {gateway.model_version}) on http://{host}:{port} "
                      f"with {len(gateway.detectors)} detectors{extra}, {workers} worker(s); status page /ui",
                      highlight=False)
    if workers <= 1:
        uvicorn.run(create_app(gateway), host=host, port=port, access_log=False, log_level="warning")
        return
    if live is not None:
        live.stop()  # the workers build their own; this one only checked that the options load
    os.environ[ENV] = options_env(opts)
    uvicorn.run("bastion.guard.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_level="warning")

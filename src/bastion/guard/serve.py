"""Assemble a :class:`~bastion.guard.app.Gateway` from files and URLs (what ``bastion serve`` does per worker)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bastion.errors import InputError
from bastion.guard.app import Gateway, create_app
from bastion.guard.audit import AuditLog
from bastion.guard.batching import MicroBatcher
from bastion.guard.config import GuardConfig
from bastion.guard.db import default_url, make_engine, migrate
from bastion.guard.detectors import build
from bastion.guard.keys import KeyStore
from bastion.guard.live import REGISTRY_SCHEME, Live, Slot, load_from_registry, parse_registry_ref
from bastion.guard.ratelimit import LocalLimiter, RateLimiter, RedisLimiter, connect_redis
from bastion.guard.spec import InputSpec

if TYPE_CHECKING:
    from bastion.registry import Registry

#: environment variable carrying :class:`ServeOptions` (JSON) to uvicorn worker processes
ENV = "BASTION_GUARD_OPTIONS"


@dataclass
class ServeOptions:
    model: str
    config: str | None = None
    db: str | None = None
    redis: str | None = None
    reference: str | None = None
    signing_key: str | None = None
    signing_password_env: str | None = None
    input_shape: list[int] | None = None
    factory: str | None = None
    trust_pickle: bool = False
    registry_db: str | None = None
    registry_store: str | None = None


def model_version(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def registry_urls(opts: ServeOptions) -> tuple[str, str]:
    """The registry database and file store: the options, else $BASTION_REGISTRY_DB / $BASTION_REGISTRY_STORE,
    else the defaults every ``bastion registry`` command uses."""
    from bastion.cli.registry_cmd import DEFAULT_STORE, db_url

    return db_url(opts.registry_db), opts.registry_store or os.environ.get("BASTION_REGISTRY_STORE", DEFAULT_STORE)


def build_gateway(opts: ServeOptions) -> Gateway:
    from bastion.core.loading import load_model

    cfg = GuardConfig.load(opts.config)
    x_ref = None
    if opts.reference:
        from bastion.datasets import load_data

        x, _ = load_data(Path(opts.reference), label_column=None)
        x_ref = torch.as_tensor(x, dtype=torch.float32)
    registry: Registry | None = None
    follow: tuple[str, str] | None = None
    # The registry (and its database for incidents and serving state) is opened when something needs it; a
    # plain file served with monitors only keeps its state in the gateway's own database.
    use_registry = opts.model.startswith(REGISTRY_SCHEME) or bool(opts.registry_db) \
        or bool(os.environ.get("BASTION_REGISTRY_DB")) \
        or any(a.kind in ("route-to", "rollback") for b in cfg.playbooks for a in b.actions)
    reg_db = ""
    if use_registry:
        from bastion.registry import Registry

        reg_db, reg_store = registry_urls(opts)
        registry = Registry(reg_db, reg_store)
    if opts.model.startswith(REGISTRY_SCHEME):
        assert registry is not None
        name, ref = parse_registry_ref(opts.model)
        model, version = load_from_registry(registry, name, ref, factory=opts.factory, trust_pickle=opts.trust_pickle)
        follow = (name, ref) if ref in ("production", "staging") else None
        default_name = name
    else:
        model = load_model(opts.model, factory=opts.factory, trust_pickle=opts.trust_pickle)
        version, default_name = model_version(opts.model), Path(opts.model).stem
    shape = tuple(opts.input_shape or ()) or cfg.input_shape or _declared_shape(model)
    baseline_file = None
    if cfg.monitor is not None and cfg.monitor.baseline:
        from bastion.monitor import Baseline

        baseline_file = Baseline.load(cfg.monitor.baseline)
    if shape is None and x_ref is not None:
        shape = tuple(x_ref.shape[1:])
    if shape is None:
        raise InputError("input_shape", "nothing", "the model's input shape without the batch: --input-shape 1,8,8, "
                                                   "input_shape in guard.yaml, or --reference data")
    spec = InputSpec(tuple(int(s) for s in shape), tuple(model.bounds), cfg.max_batch)  # type: ignore[arg-type]
    if cfg.detectors and x_ref is None:
        raise InputError("reference", "nothing", "clean reference data (--reference clean.npz) to fit the detectors "
                                                 "in the config and set their thresholds")
    if cfg.monitor is not None and x_ref is None and baseline_file is None:
        raise InputError("reference", "nothing", "clean reference data (--reference clean.npz) or monitor.baseline "
                                                 "(bastion monitor fit) to fit the live monitors' baseline")
    monitor_ref = x_ref
    if monitor_ref is None and baseline_file is not None:
        monitor_ref = torch.as_tensor(baseline_file.reference_inputs_, dtype=torch.float32).reshape(-1, *spec.shape)

    def make_slot(m: Any, v: str, ref: str) -> Slot:
        """Fit the detectors and the monitors' baseline on ``m`` (every model served gets its own)."""
        m.probe(torch.full((1, *spec.shape), float(spec.bounds[0])), "input_shape")
        detectors = [build(d, spec.bounds) for d in cfg.detectors]
        for det in detectors:
            det.fit(m, x_ref)  # type: ignore[arg-type]
        baseline = None
        if cfg.monitor is not None:
            from bastion.monitor import Baseline

            if baseline_file is not None and m is model:
                # the file's reference outputs are this model's: use them as fitted, with the configured monitors
                ref_x, ref_p = baseline_file.reference_inputs_, baseline_file.reference_probs_
            else:
                from bastion.monitor.baseline import model_probabilities

                assert monitor_ref is not None
                ref_x, ref_p = monitor_ref.reshape(len(monitor_ref), -1).numpy(), model_probabilities(m, monitor_ref)
            baseline = Baseline(cfg.monitor.alpha, cfg.monitor.monitors, cfg.monitor.n_permutations).fit(ref_x, ref_p)
        return Slot(m, v, detectors, baseline, ref)

    slot = make_slot(model, version, opts.model)
    db = opts.db or (reg_db if opts.model.startswith(REGISTRY_SCHEME) else default_url(opts.model))
    engine = make_engine(db, cfg.audit_sync.upper())
    migrate(engine)
    redis = connect_redis(opts.redis)
    limiter: RateLimiter = RedisLimiter(redis) if redis is not None else LocalLimiter()
    signing_key = None
    if opts.signing_key:
        from bastion.sign.keys import load_private_key

        password = os.environ.get(opts.signing_password_env) if opts.signing_password_env else None
        signing_key = load_private_key(opts.signing_key, password)
    audit = AuditLog(engine, signing_key, checkpoint_every=cfg.checkpoint_every,
                     checkpoint_seconds=cfg.checkpoint_seconds, sync=cfg.audit_sync, flush_seconds=cfg.audit_flush_s)
    gw = Gateway(model=slot.model, spec=spec, config=cfg, keys=KeyStore(engine, redis), limiter=limiter, audit=audit,
                 model_name=cfg.model_name or default_name, model_version=slot.version, detectors=slot.detectors,
                 batcher=MicroBatcher(cfg.micro_batch_max, cfg.micro_batch))
    if cfg.monitor is not None or cfg.playbooks or registry is not None:
        gw.live = _build_live(gw, cfg, slot, registry, follow, make_slot, opts, reg_db if use_registry else db)
    return gw


def _build_live(gw: Gateway, cfg: GuardConfig, slot: Slot, registry: Registry | None, follow: tuple[str, str] | None,
                make_slot: Any, opts: ServeOptions, state_db: str) -> Live:
    """The live loop: response state in the registry's database (or the gateway's, without a registry)."""
    from bastion.respond import ResponseState

    sender = None
    if cfg.alerts is not None:
        from bastion.monitor.webhooks import WebhookSender

        secret = None
        if cfg.alerts.secret_env:
            value = os.environ.get(cfg.alerts.secret_env)
            if not value:
                raise InputError("alerts.secret_env", cfg.alerts.secret_env, "a set, non-empty environment variable "
                                                                              "holding the webhook's HMAC secret")
            secret = value.encode()
        sender = WebhookSender(cfg.alerts.url, fmt=cfg.alerts.format, secret=secret,  # type: ignore[arg-type]
                               retries=cfg.alerts.retries, backoff=cfg.alerts.backoff, timeout=cfg.alerts.timeout)

    def load_ref(name: str, ref: str) -> tuple[Any, str]:
        assert registry is not None
        return load_from_registry(registry, name, ref, factory=opts.factory, trust_pickle=opts.trust_pickle)

    live = Live(gw, state=ResponseState(state_db), monitor=cfg.monitor, playbooks=cfg.playbooks, sender=sender,
                registry=registry, follow=follow, make_slot=make_slot, load_ref=load_ref if registry else None,
                poll_s=cfg.poll_s)
    if sender is not None:
        sender.on_delivery = live.on_delivery
    live.primary = slot
    # Fallbacks are loaded (and verified) now, so routing to one is instant when a playbook fires.
    for ref in sorted({str(a.argument) for b in cfg.playbooks for a in b.actions if a.kind == "route-to"}):
        live.load_fallback(ref)
    return live


def _declared_shape(model: Any) -> tuple[int, ...] | None:
    shape = getattr(model, "input_shape", None)
    if shape and all(isinstance(s, int) and s > 0 for s in shape[1:]):
        return tuple(shape[1:])
    return None


def app_from_env() -> Any:
    """Uvicorn factory for worker processes: the options come from ``$BASTION_GUARD_OPTIONS``."""
    opts = ServeOptions(**json.loads(os.environ[ENV]))
    return create_app(build_gateway(opts))


def options_env(opts: ServeOptions) -> str:
    return json.dumps(asdict(opts))

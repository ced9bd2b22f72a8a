"""Assemble a :class:`~bastion.guard.app.Gateway` from files and URLs (what ``bastion serve`` does per worker)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bastion.errors import InputError
from bastion.guard.app import Gateway, create_app
from bastion.guard.audit import AuditLog
from bastion.guard.config import GuardConfig
from bastion.guard.db import default_url, make_engine, migrate
from bastion.guard.detectors import build
from bastion.guard.keys import KeyStore
from bastion.guard.ratelimit import LocalLimiter, RateLimiter, RedisLimiter
from bastion.guard.spec import InputSpec

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


def connect_redis(url: str | None) -> Any:
    if not url:
        return None
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise InputError("redis", url, f"a reachable Redis server ({exc})") from None
    return client


def model_version(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def build_gateway(opts: ServeOptions) -> Gateway:
    from bastion.core.loading import load_model

    cfg = GuardConfig.load(opts.config)
    model = load_model(opts.model, factory=opts.factory, trust_pickle=opts.trust_pickle)
    x_ref = None
    if opts.reference:
        from bastion.datasets import load_data

        x, _ = load_data(Path(opts.reference), label_column=None)
        x_ref = torch.as_tensor(x, dtype=torch.float32)
    shape = tuple(opts.input_shape or ()) or cfg.input_shape or _declared_shape(model)
    if shape is None and x_ref is not None:
        shape = tuple(x_ref.shape[1:])
    if shape is None:
        raise InputError("input_shape", "nothing", "the model's input shape without the batch: --input-shape 1,8,8, "
                                                   "input_shape in guard.yaml, or --reference data")
    spec = InputSpec(tuple(int(s) for s in shape), tuple(model.bounds), cfg.max_batch)  # type: ignore[arg-type]
    model.probe(torch.full((1, *spec.shape), float(spec.bounds[0])), "input_shape")
    detectors = [build(d, spec.bounds) for d in cfg.detectors]
    if detectors and x_ref is None:
        raise InputError("reference", "nothing", "clean reference data (--reference clean.npz) to fit the detectors "
                                                 "in the config and set their thresholds")
    for det in detectors:
        det.fit(model, x_ref)  # type: ignore[arg-type]
    engine = make_engine(opts.db or default_url(opts.model), cfg.audit_sync.upper())
    migrate(engine)
    redis = connect_redis(opts.redis)
    limiter: RateLimiter = RedisLimiter(redis) if redis is not None else LocalLimiter()
    signing_key = None
    if opts.signing_key:
        from bastion.sign.keys import load_private_key

        password = os.environ.get(opts.signing_password_env) if opts.signing_password_env else None
        signing_key = load_private_key(opts.signing_key, password)
    audit = AuditLog(engine, signing_key, checkpoint_every=cfg.checkpoint_every,
                     checkpoint_seconds=cfg.checkpoint_seconds)
    return Gateway(model=model, spec=spec, config=cfg, keys=KeyStore(engine, redis), limiter=limiter, audit=audit,
                   model_name=cfg.model_name or Path(opts.model).stem, model_version=model_version(opts.model),
                   detectors=detectors)


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

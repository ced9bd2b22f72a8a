"""guard.yaml: what the gateway enforces. Every field has a safe default, so no file is needed to start.

Example::

    model_name: digits
    max_batch: 64            # examples per request
    max_body_bytes: 1000000  # larger requests get 413 before they are parsed
    store_inputs: false      # audit records keep the input's SHA-256; true also keeps the input
    audit_sync: full         # SQLite: full survives power loss; normal survives kill -9, one fsync less
    checkpoint: {every: 1000, seconds: 60}
    defaults:                # for keys created without their own limits
      rate: 50               # requests per second ...
      burst: 100             # ... with this burst
      daily_budget: 100000   # examples per UTC day
      output_policy: {kind: top_k, k: 3}
    detectors:
      - {kind: mahalanobis, fpr: 0.01, action: flag}
      - {kind: squeeze, fpr: 0.01, action: reject}
      - {kind: prada, threshold: 0.9, min_queries: 100, action: flag}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.errors import InputError

_TOP = {"audit_sync", "model_name", "input_shape", "max_batch", "max_body_bytes", "store_inputs", "checkpoint", "defaults",
        "detectors", "fpr"}


@dataclass
class GuardConfig:
    model_name: str | None = None
    input_shape: tuple[int, ...] | None = None
    max_batch: int = 64
    max_body_bytes: int = 1_000_000
    store_inputs: bool = False
    audit_sync: str = "full"
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    rate: float | None = None
    burst: int | None = None
    daily_budget: int | None = None
    output_policy: dict[str, Any] = field(default_factory=lambda: {"kind": "full"})
    detectors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GuardConfig:
        if not isinstance(raw, dict):
            raise InputError("config", type(raw).__name__, "a YAML mapping (see `bastion serve --help`)")
        unknown = set(raw) - _TOP
        if unknown:
            raise InputError("config", ", ".join(sorted(unknown)), f"known keys: {', '.join(sorted(_TOP))}")
        cp = raw.get("checkpoint") or {}
        defaults = raw.get("defaults") or {}
        cfg = cls(
            model_name=raw.get("model_name"),
            input_shape=tuple(int(s) for s in raw["input_shape"]) if raw.get("input_shape") else None,
            max_batch=int(raw.get("max_batch", 64)),
            max_body_bytes=int(raw.get("max_body_bytes", 1_000_000)),
            store_inputs=bool(raw.get("store_inputs", False)),
            audit_sync=str(raw.get("audit_sync", "full")).lower(),
            checkpoint_every=int(cp.get("every", 1000)),
            checkpoint_seconds=float(cp.get("seconds", 60.0)),
            rate=defaults.get("rate"),
            burst=defaults.get("burst"),
            daily_budget=defaults.get("daily_budget"),
            output_policy=dict(defaults.get("output_policy") or {"kind": "full"}),
            detectors=[dict(d) for d in raw.get("detectors") or []],
        )
        if cfg.audit_sync not in ("full", "normal"):
            raise InputError("audit_sync", cfg.audit_sync, "full (survives power loss) or normal (survives kill -9)")
        if cfg.max_batch < 1:
            raise InputError("max_batch", cfg.max_batch, "an integer >= 1")
        if cfg.checkpoint_every < 1 or cfg.checkpoint_seconds <= 0:
            raise InputError("checkpoint", cp, "every >= 1 record and seconds > 0")
        from bastion.defenses.coarsening import OutputPolicy

        OutputPolicy(**cfg.output_policy)
        return cfg

    @classmethod
    def load(cls, path: str | Path | None) -> GuardConfig:
        if path is None:
            return cls()
        import yaml

        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError("config", str(p), f"valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(raw)

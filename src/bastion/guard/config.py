"""guard.yaml: what the gateway enforces. Every field has a safe default, so no file is needed to start.

Example::

    model_name: digits
    max_batch: 64            # examples per request
    micro_batch: {max_examples: 256}   # concurrent requests share a forward pass (false: one pass each)
    max_body_bytes: 1000000  # larger requests get 413 before they are parsed
    store_inputs: false      # audit records keep the input's SHA-256; true also keeps the input
    audit_sync: normal       # normal: a 2xx's record survives kill -9 at once and power loss within
    audit_flush_s: 1.0       #   audit_flush_s (the WAL is fsynced off the request path); full: an fsync
                             #   before every answer (power-loss durable at once, ~3 ms p50 on this disk)
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
    monitor:                 # live windows of traffic tested against a baseline fitted on --reference
      window: 50             # requests per window (per key and global)
      alpha: 0.001           # false-alarm rate per window, all monitors together
      monitors: [predictions, confidence, boundary]   # any of inputs, outputs, predictions, confidence, boundary
      per_key: true          # also a window per API key (what per_key playbooks act on)
    playbooks:               # monitor or detector firings -> actions (see bastion.respond.playbook)
      - name: evasion-from-one-key
        when: {source: boundary, per_key: true, count: 1}
        severity: high
        actions: [alert, revoke, {route-to: "digits@staging"}]
    alerts: {url: "https://xsoar.example/incident", format: xsoar, secret_env: BASTION_WEBHOOK_SECRET}
    poll_s: 1.0              # how often each worker re-reads serving state, throttles and registry stages
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.errors import InputError

_TOP = {"audit_sync", "audit_flush_s", "micro_batch", "model_name", "input_shape", "max_batch", "max_body_bytes", "store_inputs", "checkpoint", "defaults",
        "detectors", "fpr", "monitor", "playbooks", "alerts", "poll_s"}
_MONITOR_KEYS = {"window", "alpha", "monitors", "per_key", "global", "baseline", "n_permutations"}
_ALERT_KEYS = {"url", "format", "secret_env", "retries", "backoff", "timeout"}


@dataclass(frozen=True)
class MonitorSettings:
    """Live monitoring: tumbling windows of ``window`` examples, globally and per API key."""

    window: int = 50
    alpha: float = 0.001
    monitors: tuple[str, ...] = ("predictions", "confidence", "boundary")
    per_key: bool = True
    global_window: bool = True
    baseline: str | None = None  # a `bastion monitor fit` file; default: fitted on --reference
    n_permutations: int = 100

    @classmethod
    def from_dict(cls, raw: Any) -> MonitorSettings:
        from bastion.monitor.baseline import MONITORS

        if raw is True:
            raw = {}
        if not isinstance(raw, dict):
            raise InputError("monitor", repr(raw), "a mapping such as {window: 50, alpha: 0.001}")
        unknown = sorted(set(raw) - _MONITOR_KEYS)
        if unknown:
            raise InputError("monitor", ", ".join(unknown), f"known keys: {', '.join(sorted(_MONITOR_KEYS))}")
        mons = raw.get("monitors", cls.monitors)
        if isinstance(mons, str) or not isinstance(mons, list | tuple) or not mons or set(mons) - set(MONITORS):
            raise InputError("monitor.monitors", repr(mons), f"a non-empty list among {', '.join(MONITORS)}")
        try:
            out = cls(window=int(raw.get("window", 50)), alpha=float(raw.get("alpha", 0.001)), monitors=tuple(mons),
                      per_key=bool(raw.get("per_key", True)), global_window=bool(raw.get("global", True)),
                      baseline=str(raw["baseline"]) if raw.get("baseline") else None,
                      n_permutations=int(raw.get("n_permutations", 100)))
        except (TypeError, ValueError) as exc:
            raise InputError("monitor", repr(raw), f"numbers for window, alpha, n_permutations ({exc})") from None
        if out.window < 20:
            raise InputError("monitor.window", out.window, "at least 20 examples per window")
        if not 0.0 < out.alpha < 0.5:
            raise InputError("monitor.alpha", out.alpha, "a false-alarm rate in (0, 0.5), e.g. 0.001")
        if not (out.per_key or out.global_window):
            raise InputError("monitor", "per_key: false and global: false", "at least one kind of window")
        return out


@dataclass(frozen=True)
class AlertSettings:
    url: str
    format: str = "xsoar"
    secret_env: str | None = None
    retries: int = 5
    backoff: float = 0.5
    timeout: float = 5.0

    @classmethod
    def from_dict(cls, raw: Any) -> AlertSettings:
        if not isinstance(raw, dict) or "url" not in raw:
            raise InputError("alerts", repr(raw), "a mapping with url (and format: xsoar|generic, secret_env)")
        unknown = sorted(set(raw) - _ALERT_KEYS)
        if unknown:
            raise InputError("alerts", ", ".join(unknown), f"known keys: {', '.join(sorted(_ALERT_KEYS))}")
        url, fmt = str(raw["url"]), str(raw.get("format", "xsoar"))
        if not url.startswith(("http://", "https://")):
            raise InputError("alerts.url", url, "an http:// or https:// URL")
        if fmt not in ("xsoar", "generic"):
            raise InputError("alerts.format", fmt, "xsoar or generic")
        return cls(url, fmt, raw.get("secret_env"), int(raw.get("retries", 5)), float(raw.get("backoff", 0.5)),
                   float(raw.get("timeout", 5.0)))


@dataclass
class GuardConfig:
    model_name: str | None = None
    input_shape: tuple[int, ...] | None = None
    max_batch: int = 64
    micro_batch: bool = True
    micro_batch_max: int = 256
    max_body_bytes: int = 1_000_000
    store_inputs: bool = False
    audit_sync: str = "normal"
    audit_flush_s: float = 1.0
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    rate: float | None = None
    burst: int | None = None
    daily_budget: int | None = None
    output_policy: dict[str, Any] = field(default_factory=lambda: {"kind": "full"})
    detectors: list[dict[str, Any]] = field(default_factory=list)
    monitor: MonitorSettings | None = None
    playbooks: list[Any] = field(default_factory=list)  # bastion.respond.Playbook
    alerts: AlertSettings | None = None
    poll_s: float = 1.0

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
            audit_sync=str(raw.get("audit_sync", "normal")).lower(),
            audit_flush_s=float(raw.get("audit_flush_s", 1.0)),
            checkpoint_every=int(cp.get("every", 1000)),
            checkpoint_seconds=float(cp.get("seconds", 60.0)),
            rate=defaults.get("rate"),
            burst=defaults.get("burst"),
            daily_budget=defaults.get("daily_budget"),
            output_policy=dict(defaults.get("output_policy") or {"kind": "full"}),
            detectors=[dict(d) for d in raw.get("detectors") or []],
            monitor=MonitorSettings.from_dict(raw["monitor"]) if raw.get("monitor") else None,
            alerts=AlertSettings.from_dict(raw["alerts"]) if raw.get("alerts") else None,
            poll_s=float(raw.get("poll_s", 1.0)),
        )
        mb = raw.get("micro_batch", True)
        if isinstance(mb, bool):
            cfg.micro_batch = mb
        elif isinstance(mb, dict) and set(mb) <= {"max_examples"}:
            cfg.micro_batch_max = int(mb.get("max_examples", 256))
        else:
            raise InputError("micro_batch", mb, "true, false or {max_examples: N}")
        if cfg.micro_batch_max < 1:
            raise InputError("micro_batch.max_examples", cfg.micro_batch_max, "an integer >= 1")
        if raw.get("playbooks"):
            from bastion.respond.playbook import parse_playbooks

            cfg.playbooks = parse_playbooks(raw["playbooks"], "config: playbooks")
        if not 0.01 <= cfg.poll_s <= 3600:
            raise InputError("poll_s", cfg.poll_s, "seconds between state polls, 0.01 to 3600")
        if cfg.audit_sync not in ("full", "normal"):
            raise InputError("audit_sync", cfg.audit_sync, "normal (a record survives kill -9 at once, power loss "
                             "within audit_flush_s) or full (an fsync before every answer)")
        if not 0.01 <= cfg.audit_flush_s <= 60:
            raise InputError("audit_flush_s", cfg.audit_flush_s, "seconds between fsyncs of the audit log, 0.01 to 60")
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

"""The gateway's live loop: monitors over live traffic, playbooks, and the serving state every worker follows.

What the request path pays is a few attribute reads and list appends (O(µs)): it reads ``Live.view``
(offline? routed? throttles?) and hands each answered batch to ``observe``, which only appends to the
open windows. Everything slow runs on one background thread per worker:

- full windows are tested against the baseline (:class:`bastion.monitor.Baseline`), globally and per API
  key; the verdicts go to Prometheus gauges, to the database (for ``/ui`` and ``bastion monitor status``)
  and, when a monitor fired, to the playbooks (:class:`bastion.respond.Responder`);
- detector firings from the request path go to the same playbooks;
- every ``poll_s`` seconds the serving state (offline, routed, throttled keys), which any worker, replica
  or ``bastion incident resolve`` may have changed, is re-read from the database into a new ``view``; and a
  ``registry://NAME@stage`` model is re-resolved, so a promotion or rollback is served without a restart.

A worker that runs a playbook re-reads the state at once, so its own next request already obeys it; other
workers follow within ``poll_s`` (default 1 s). Revocations need no poll: every request checks its key
(:mod:`.keys`).
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bastion.errors import BastionError, InputError

if TYPE_CHECKING:
    from bastion.core.adapters import Model
    from bastion.guard.app import Gateway
    from bastion.guard.config import MonitorSettings
    from bastion.guard.detectors import Detector
    from bastion.monitor.baseline import Baseline, WindowReport
    from bastion.monitor.webhooks import Delivery, WebhookSender
    from bastion.registry import Registry
    from bastion.respond import Playbook, Responder, ResponseState

log = logging.getLogger("bastion.guard.live")

REGISTRY_SCHEME = "registry://"
#: file suffixes taken as the model file of a registry version (the signature and metadata are not)
MODEL_SUFFIXES = (".pt", ".pth", ".ts", ".onnx", ".skops", ".safetensors", ".pkl", ".joblib")


@dataclass(frozen=True)
class Slot:
    """One servable model with what was fitted on it: detectors and the monitors' baseline."""

    model: Model
    version: str
    detectors: list[Detector]
    baseline: Baseline | None = None
    ref: str = ""


@dataclass(frozen=True)
class View:
    """The serving state one worker obeys, replaced whole (never mutated) so a request reads it atomically."""

    mode: str = "normal"  # normal | offline | routed
    route_to: str | None = None
    retry_after: int = 300
    incident: str | None = None
    throttles: Mapping[str, float] = field(default_factory=dict)


def parse_registry_ref(model: str) -> tuple[str, str]:
    """``registry://NAME@stage`` (or ``@version``) -> (name, ref)."""
    body = model[len(REGISTRY_SCHEME):] if model.startswith(REGISTRY_SCHEME) else model
    name, sep, ref = body.partition("@")
    if not name or not sep or not ref or "/" in ref:
        raise InputError("--model", model, "registry://NAME@production, registry://NAME@staging or registry://NAME@VERSION")
    return name, ref


def load_from_registry(registry: Registry, name: str, ref: str, *, factory: str | None = None,
                       trust_pickle: bool = False) -> tuple[Model, str]:
    """Check out ``name@ref``, re-verify digests, signature and scan on the checked-out bytes, load the model.

    Returns the model and its registry version. Refused (:class:`~bastion.registry.RegistryRefusal`) when the
    version was registered without a verified signature, no longer verifies, or the scan now finds something
    at or above the threshold it was registered under (the scanner's rules may have grown since).
    """
    from bastion.core.loading import load_model
    from bastion.registry import RegistryRefusal
    from bastion.scan import scan_path
    from bastion.scan.findings import Severity
    from bastion.sign.api import SIGNATURE_NAME

    info = registry.resolve(name, ref)
    if not info.signature.get("ok") or not info.signature.get("public_key_pem"):
        raise RegistryRefusal(f"serving {name}@{ref} (version {info.version})",
                              ["it was registered without a verified signature, so it cannot be re-verified at load"])
    tmp = Path(tempfile.mkdtemp(prefix="bastion-serve-"))
    try:
        info, folder = registry.checkout(name, info.version, tmp / "model")  # digests and signature re-checked
        report = scan_path(folder)
        limit = Severity.parse(str(info.scan.get("fail_on", "high")))
        bad = [f for f in report.findings if f.severity >= limit]
        if bad or report.errors:
            reasons = [f"scan: {f.location}: {f.message}" for f in bad[:3]] + list(report.errors[:3])
            raise RegistryRefusal(f"serving {name} {info.version}", reasons)
        candidates = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != SIGNATURE_NAME
                      and p.suffix.lower() in MODEL_SUFFIXES]
        if len(candidates) != 1:
            raise InputError("--model", f"{name} {info.version} with model files {[p.name for p in candidates]}",
                             f"exactly one model file ({', '.join(MODEL_SUFFIXES)}) in the version")
        model = load_model(candidates[0], factory=factory, trust_pickle=trust_pickle)
    finally:
        # Every supported format is read into memory at load; the checked-out copy is not needed after.
        shutil.rmtree(tmp, ignore_errors=True)
    return model, info.version


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.windows = Counter("bastion_monitor_windows", "Live traffic windows checked", ["scope"],
                               registry=self.registry)
        self.alarms = Counter("bastion_monitor_alarms", "Windows in which a monitor fired", ["monitor", "scope"],
                              registry=self.registry)
        self.p_value = Gauge("bastion_monitor_p_value", "p-value of the last global window per monitor", ["monitor"],
                             registry=self.registry)
        self.statistic = Gauge("bastion_monitor_statistic", "Test statistic of the last global window per monitor",
                               ["monitor"], registry=self.registry)
        self.actions = Counter("bastion_response_actions", "Playbook actions run", ["action", "ok"],
                               registry=self.registry)
        self.incidents = Counter("bastion_response_incidents", "Incidents raised by playbooks", ["playbook"],
                                 registry=self.registry)
        self.mode = Gauge("bastion_serving_mode", "1 for the current serving mode of this worker", ["mode"],
                          registry=self.registry)
        self.throttled = Gauge("bastion_throttled_keys", "Keys throttled by a playbook", registry=self.registry)
        self.swaps = Counter("bastion_model_swaps", "Models swapped in after a registry promotion or rollback",
                             registry=self.registry)


class Live:
    """Per worker: open windows, the background thread, and the :class:`View` the request path obeys."""

    def __init__(self, gw: Gateway, *, state: ResponseState | None = None, monitor: MonitorSettings | None = None,
                 playbooks: list[Playbook] | None = None, sender: WebhookSender | None = None,
                 registry: Registry | None = None, follow: tuple[str, str] | None = None,
                 make_slot: Callable[[Model, str, str], Slot] | None = None,
                 load_ref: Callable[[str, str], tuple[Model, str]] | None = None, poll_s: float = 1.0,
                 history: int = 120) -> None:
        from bastion.respond import Responder

        self.gw = gw
        self.state, self.settings, self.sender, self.registry = state, monitor, sender, registry
        self.follow = follow  # (registry name, stage) the primary model tracks
        self.make_slot, self.load_ref, self.poll_s = make_slot, load_ref, float(poll_s)
        self.metrics = _Metrics()
        self.view = View()
        self.primary: Slot | None = None
        self.fallbacks: dict[str, Slot] = {}
        self.load_errors: dict[str, str] = {}
        self.responder: Responder | None = None
        if playbooks:
            if state is None:
                raise InputError("playbooks", "no response database", "--registry-db (incidents and serving state)")
            reg_name = follow[0] if follow else gw.model_name
            from bastion.guard.keys import KeyStore

            # The revocation takes SQLite's write lock at BEGIN (bastion.database): as a deferred transaction it
            # reads the key's row first and then fails with "database is locked" whenever the audit log wrote
            # in between, which under attack traffic is most of the time.
            keys = KeyStore(gw.keys.engine.execution_options(write=True), gw.keys.redis)
            self.responder = Responder(playbooks, state, send_alert=sender.send if sender else None,
                                       revoke_key=keys.revoke,  # type: ignore[arg-type]
                                       rollback_model=(lambda _m: registry.rollback(reg_name)) if registry else None)
        self.window = monitor.window if monitor else 0
        # scope -> (key, inputs, probabilities, [count], [model version the window holds answers of])
        self._bufs: dict[str, tuple[str | None, list[np.ndarray], list[np.ndarray], list[int], list[str]]] = {}
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._pending = 0  # jobs queued and not yet handled (for drain)
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.history_len = history
        self.incident_ids: list[str] = []
        self.first_action_at: float | None = None
        self.refreshed_at = 0.0

    # -- request path (event-loop thread): nothing here may block ------------------------------------------
    def observe(self, key_id: str | None, x: np.ndarray, probs: torch.Tensor, version: str = "") -> None:
        """Add a batch the primary model (``version``) answered to the global and the key's open window."""
        if not self.window:
            return
        xf = x.reshape(len(x), -1)
        p = probs.numpy()  # computed under no_grad: no graph to detach from
        settings = self.settings
        assert settings is not None
        if settings.global_window:
            self._add("global", None, xf, p, version)
        if settings.per_key and key_id is not None:
            self._add("key:" + key_id, key_id, xf, p, version)

    def _add(self, scope: str, key: str | None, x: np.ndarray, p: np.ndarray, version: str) -> None:
        buf = self._bufs.get(scope)
        if buf is None or buf[4][0] != version:
            # A new model answers from here on: a window mixing two models' outputs would alarm on the swap
            # itself (its baseline is the new model's), so the open window starts again.
            buf = self._bufs[scope] = (key, [], [], [0], [version])
        buf[1].append(x)
        buf[2].append(p)
        buf[3][0] += len(x)
        if buf[3][0] >= self.window:
            xs, ps = np.concatenate(buf[1]), np.concatenate(buf[2])
            w = self.window
            full = len(xs) // w * w
            buf[1][:], buf[2][:] = [xs[full:]], [ps[full:]]
            buf[3][0] = len(xs) - full
            for i in range(0, full, w):
                self._put(("window", scope, key, xs[i:i + w], ps[i:i + w], time.time(), version))

    def detector_fired(self, kind: str, key_id: str | None) -> None:
        if self.responder is not None:
            self._put(("event", kind, key_id, time.time()))

    def _put(self, job: tuple[Any, ...]) -> None:
        with self._pending_lock:
            self._pending += 1
        self._jobs.put(job)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> Live:
        if self._thread is None:
            self.refresh()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="bastion-live", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        if self.sender is not None:
            self.sender.close(timeout=10)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued window and event is handled (tests, benchmarks); False on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._pending_lock:
                if self._pending == 0:
                    return True
            time.sleep(0.005)
        return False

    def _run(self) -> None:
        next_poll = time.monotonic() + self.poll_s
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                job = None
            if job is not None:
                try:
                    self._handle(job)
                except Exception:  # one bad window must not stop monitoring
                    log.exception("live monitor job failed")
                finally:
                    with self._pending_lock:
                        self._pending -= 1
            if time.monotonic() >= next_poll:
                try:
                    self.refresh()
                except Exception:  # the database may be briefly unavailable; the last view stays in force
                    log.exception("serving state refresh failed")
                next_poll = time.monotonic() + self.poll_s

    # -- background thread ---------------------------------------------------------------------------------
    def _handle(self, job: tuple[Any, ...]) -> None:
        from bastion.respond import Event

        if job[0] == "event":
            _, source, key, t = job
            self._respond(Event(source, t, key, self.gw.model_name, {"detector": source}))
            return
        _, scope, key, x, p, t, version = job
        slot = self.primary
        if slot is None or slot.baseline is None or (version and version != slot.version):
            return  # answered by a model swapped out since: not what this baseline describes
        report = slot.baseline.check(x, p)
        self._record(scope, report, t)
        for name in report.fired:
            res = next(r for r in report.results if r.monitor == name)
            self._respond(Event(name, t, key, self.gw.model_name,
                                {"scope": scope, "p_value": round(res.p_value, 8), "window": len(x),
                                 "statistic": round(float(res.statistic), 6)}))

    def _record(self, scope: str, report: WindowReport, t: float) -> None:
        import datetime as dt

        kind = "global" if scope == "global" else "key"
        self.metrics.windows.labels(kind).inc()
        p_values = {r.monitor: float(r.p_value) for r in report.results}
        for r in report.results:
            if r.drift:
                self.metrics.alarms.labels(r.monitor, kind).inc()
            if kind == "global":
                self.metrics.p_value.labels(r.monitor).set(r.p_value)
                self.metrics.statistic.labels(r.monitor).set(float(r.statistic))
        when = dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()
        row = {"time": when, "model": self.gw.model_name, "scope": scope, "drift": report.drift,
               "fired": report.fired, "p_values": p_values, "n": report.results[0].n_window if report.results else 0}
        self.history.setdefault(scope, deque(maxlen=self.history_len)).append(row)
        if len(self.history) > 10_000:  # many one-off keys: keep the global history and the newest keys
            for old in [s for s in list(self.history)[:1000] if s != "global"]:
                self.history.pop(old, None)
        if self.state is not None:
            try:
                self.state.add_windows([row])
            except Exception:  # the status row is lost, not the response to what the window showed
                log.exception("monitor window not recorded")

    def _respond(self, event: Any) -> None:
        if self.responder is None:
            return
        ids = self.responder.observe(event)
        if not ids:
            return
        if self.first_action_at is None:
            self.first_action_at = time.time()
        assert self.state is not None
        for incident_id in ids:
            inc = self.state.incident(incident_id)
            self.incident_ids.append(incident_id)
            self.metrics.incidents.labels(inc["playbook"]).inc()
            for i, a in enumerate(inc["actions"]):
                self.metrics.actions.labels(a["action"], str(a["ok"]).lower()).inc()
                self._audit(f"{incident_id}:{i}", inc["key"], "response", 0 if a["ok"] else 1,
                            f"{inc['playbook']}: {a['action']}" + (f" {a['argument']}" if a["argument"] is not None
                                                                   else "") + (f": {a['note']}" if a["note"] else ""),
                            {"incident": incident_id, "playbook": inc["playbook"], "source": inc["source"],
                             "action": a["action"], "argument": a["argument"], "ok": a["ok"]})
        self.refresh()  # this worker obeys the new state from its next request on

    def _audit(self, request_id: str, key: str | None, decision: str, status: int, reason: str,
               output: dict[str, Any]) -> None:
        """An audit record for something the gateway did on its own (response action, alert delivery)."""
        try:
            self.gw.audit.append_sync({"request_id": request_id, "key_id": key, "client": "bastion-respond",
                                       "model_name": self.gw.model_name, "model_version": self.gw.model_version,
                                       "decision": decision, "status": status, "reason": reason[:200],
                                       "output": json.dumps(output, separators=(",", ":"), default=str)})
        except Exception:  # recorded in the incident either way; the log must not stop the response
            log.exception("audit record of a response action failed")

    def on_delivery(self, d: Delivery) -> None:
        """Webhook delivery outcome (called on the sender's thread): an audit record."""
        self._audit(f"{d.incident_id}:alert", None, "alert-delivery", d.status or 0,
                    f"alert to {d.url}: {'delivered' if d.ok else 'FAILED ' + d.error} after {d.attempts} attempt(s)",
                    {"incident": d.incident_id, "ok": d.ok, "attempts": d.attempts, "history": d.history})

    def refresh(self) -> None:
        """Re-read the serving state (and the registry stage this worker follows); publish a new view."""
        if self.state is not None:
            s = self.state.serving(self.gw.model_name)
            throttles = self.state.throttles()
            view = View(throttles=throttles) if s is None else View(s["mode"], s["route_to"], s["retry_after"] or 300,
                                                                   s["incident"], throttles)
            if view.mode == "routed" and view.route_to and view.route_to not in self.fallbacks:
                self.load_fallback(view.route_to)
            old = self.view
            self.view = view
            if self.refreshed_at and (old.mode, old.route_to) != (view.mode, view.route_to):
                # what this worker now does, in the audit log: a route lifted by `incident resolve` shows there
                self._audit(f"serving:{view.incident or old.incident or ''}", None, "serving-state", 0,
                            f"now {view.mode}" + (f" -> {view.route_to}" if view.route_to else "")
                            + f" (was {old.mode}" + (f" -> {old.route_to}" if old.route_to else "") + ")",
                            {"mode": view.mode, "route_to": view.route_to, "incident": view.incident,
                             "previous": {"mode": old.mode, "route_to": old.route_to, "incident": old.incident}})
            for mode in ("normal", "offline", "routed"):
                self.metrics.mode.labels(mode).set(1.0 if view.mode == mode else 0.0)
            self.metrics.throttled.set(len(throttles))
        if self.follow is not None and self.registry is not None and self.load_ref is not None:
            name, stage = self.follow
            try:
                version = self.registry.resolve(name, stage).version
            except InputError:
                version = None  # nothing in that stage right now: keep serving what is loaded
            if version is not None and version != self.gw.model_version and self.load_errors.get("primary") != version:
                self._swap(name, stage, version)
        self.refreshed_at = time.time()

    def load_fallback(self, ref: str) -> Slot | None:
        if self.load_ref is None or self.make_slot is None:
            self.load_errors[ref] = "no registry configured"
            return None
        name, _, stage = ref.partition("@")
        try:
            model, version = self.load_ref(name, stage)
            slot = self.make_slot(model, f"{name}@{version}", ref)
        except (BastionError, OSError, ValueError, RuntimeError) as exc:
            self.load_errors[ref] = str(exc)
            log.error("fallback %s not loaded: %s", ref, exc)
            return None
        self.fallbacks[ref] = slot
        self.load_errors.pop(ref, None)
        return slot

    def _swap(self, name: str, stage: str, expected: str) -> None:
        assert self.load_ref is not None and self.make_slot is not None
        try:
            model, version = self.load_ref(name, stage)
            slot = self.make_slot(model, version, f"{name}@{stage}")
        except (BastionError, OSError, ValueError, RuntimeError) as exc:
            # Keep serving the verified model already loaded; try again only when the stage moves again.
            self.load_errors["primary"] = expected
            log.error("new %s@%s not loaded, still serving %s: %s", name, stage, self.gw.model_version, exc)
            self.load_errors[f"{name}@{stage}"] = str(exc)
            return
        self.install(slot)
        self.metrics.swaps.inc()
        self._audit(f"swap:{version}", None, "model-swap", 0, f"now serving {name} {version} ({name}@{stage})",
                    {"name": name, "stage": stage, "version": version})

    def install(self, slot: Slot) -> None:
        """Make ``slot`` the primary model. Plain attribute stores: a request reads them all at its start."""
        gw = self.gw
        gw.model, gw.detectors, gw.model_version = slot.model, slot.detectors, slot.version
        self.primary = slot

    # -- what /monitor/status, /ui and `bastion monitor status` show --------------------------------------
    def status(self) -> dict[str, Any]:
        v = self.view
        last = {scope: h[-1] for scope, h in self.history.items() if h}
        return {"model": self.gw.model_name, "version": self.gw.model_version,
                "follows": f"{self.follow[0]}@{self.follow[1]}" if self.follow else None,
                "serving": {"mode": v.mode, "route_to": v.route_to, "retry_after": v.retry_after,
                            "incident": v.incident, "throttled_keys": dict(v.throttles)},
                "fallbacks": {ref: s.version for ref, s in self.fallbacks.items()},
                "load_errors": dict(self.load_errors),
                "monitor": None if self.settings is None else {
                    "window": self.settings.window, "alpha": self.settings.alpha,
                    "monitors": list(self.settings.monitors), "per_key": self.settings.per_key,
                    "windows_checked": sum(len(h) for h in self.history.values()),
                    "global": list(self.history.get("global", ())),
                    "alarming_keys": {s: r for s, r in last.items() if s != "global" and r["drift"]}},
                "playbooks": [b.name for b in self.responder.matcher.playbooks] if self.responder else [],
                "incidents_raised": list(self.incident_ids), "refreshed_at": self.refreshed_at}

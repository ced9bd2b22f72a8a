"""The responder: events in, playbooks matched, incidents recorded, actions run in order and undone on resolve."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bastion.errors import InputError
from bastion.monitor.alerts import Incident
from bastion.respond.playbook import ACTIONS, Action, Event, Matcher, Playbook
from bastion.respond.state import IncidentRow, ResponseState

#: MITRE ATLAS techniques a firing source most likely means
ATLAS_BY_SOURCE = {"boundary": "AML.T0043", "confidence": "AML.T0015", "prada": "AML.T0024",
                   "extraction": "AML.T0024", "ood": "AML.T0015", "squeeze": "AML.T0043"}


class Responder:
    """``observe(event)`` runs every playbook the event triggers; ``resolve(id)`` undoes what can be undone.

    ``alert`` goes to ``send_alert`` (e.g. a :class:`~bastion.monitor.webhooks.WebhookSender`'s ``send``,
    which never blocks), ``revoke`` to ``revoke_key`` (the gateway's key store), ``rollback`` to
    ``rollback_model`` (e.g. ``Registry.rollback``); throttles, routes and offline modes are written to the
    shared :class:`ResponseState`. A failing action is recorded and the next one still runs: a playbook
    that stops at its first error leaves the model exposed.
    """

    def __init__(self, playbooks: list[Playbook], state: ResponseState, *,
                 send_alert: Callable[[Incident], None] | None = None,
                 revoke_key: Callable[[str], None] | None = None,
                 rollback_model: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.matcher = Matcher(playbooks)
        self.state = state
        self.send_alert, self.revoke_key, self.rollback_model = send_alert, revoke_key, rollback_model
        self.clock = clock

    def observe(self, event: Event) -> list[str]:
        ids = []
        for book in self.matcher.observe(event):
            ids.append(self._fire(book, event))
        return ids

    def fire(self, source: str, *, key: str | None = None, model: str = "", **details: Any) -> list[str]:
        return self.observe(Event(source, self.clock(), key, model, details))

    def _fire(self, book: Playbook, event: Event) -> str:
        who = f" from key {event.key}" if event.key else ""
        incident = Incident(f"{book.name}: {event.source} fired{who}" + (f" on {event.model}" if event.model else ""),
                            book.severity, event.source, model=event.model,
                            details={"playbook": book.name, "key": event.key or "", **event.details},
                            atlas=(ATLAS_BY_SOURCE[event.source],) if event.source in ATLAS_BY_SOURCE else ())
        self.state.add_incident(IncidentRow(
            id=incident.id, created=incident.occurred, playbook=book.name, severity=book.severity,
            source=event.source, key=event.key, model=event.model, title=incident.title,
            details=dict(incident.details), actions=[], status="open"))
        outcomes = []
        for action in book.actions:
            try:
                note = self._run(action, event, incident)
                outcomes.append({"action": action.kind, "argument": action.argument, "ok": True, "note": note})
            except Exception as exc:  # recorded; the rest of the playbook still runs
                outcomes.append({"action": action.kind, "argument": action.argument, "ok": False,
                                 "note": f"{type(exc).__name__}: {exc}"})
        self.state.update_actions(incident.id, outcomes)
        return incident.id

    def _run(self, action: Action, event: Event, incident: Incident) -> str:
        kind, arg = action.kind, action.argument
        if kind == "alert":
            if self.send_alert is None:
                raise RuntimeError("no alert channel configured (webhook)")
            self.send_alert(incident)
            return "queued for delivery"
        if kind == "throttle":
            rate = float(arg) if arg is not None else 1.0
            assert event.key is not None
            self.state.set_throttle(event.key, rate, incident.id)
            return f"key {event.key} limited to {rate} requests/s"
        if kind == "revoke":
            if self.revoke_key is None:
                raise RuntimeError("no key store configured")
            assert event.key is not None
            self.revoke_key(event.key)
            return f"key {event.key} revoked"
        if kind == "route-to":
            self.state.set_serving(event.model, "routed", incident.id, route_to=str(arg))
            return f"traffic routed to {arg}"
        if kind == "offline":
            retry = int(arg) if arg is not None else 300
            self.state.set_serving(event.model, "offline", incident.id, retry_after=retry)
            return f"model offline (503, Retry-After {retry})"
        if kind == "rollback":
            if self.rollback_model is None:
                raise RuntimeError("no registry configured")
            out = self.rollback_model(event.model)
            return f"rolled back to version {getattr(out, 'version', out)}"
        raise InputError("action", kind, "a known action")  # parse_playbooks already refuses these


def resolve(state: ResponseState, incident_id: str, note: str = "", *, undo: bool = True) -> dict[str, Any]:
    """Close an incident; with ``undo``, lift the routes, offline modes and throttles it set."""
    inc = state.incident(incident_id)
    if inc["status"] == "resolved":
        raise InputError("INCIDENT", inc["id"], "an open incident (this one is already resolved)")
    actions = [dict(a) for a in inc["actions"]]
    for a in reversed(actions):
        if not (undo and a.get("ok") and ACTIONS.get(a["action"], False)):
            continue
        if a["action"] in ("route-to", "offline"):
            a["undone"] = state.clear_serving(inc["model"], inc["id"])
        elif a["action"] == "throttle" and inc["key"]:
            a["undone"] = state.clear_throttle(inc["key"], inc["id"])
    state.mark_resolved(inc["id"], note, actions)
    return state.incident(inc["id"])

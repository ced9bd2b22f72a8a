"""Playbooks: when a monitor or detector fires often enough, run actions in order.

    playbooks:
      - name: evasion-campaign
        when: {source: boundary, count: 1}                 # any window the boundary monitor flags
        severity: high
        actions: [alert, {route-to: "digits@staging"}]
      - name: extraction
        when: {source: prada, per_key: true, count: 3, within_s: 600}
        severity: critical
        actions: [alert, {throttle: 1.0}, revoke]

``source`` (one name, or a list: any of them) names a monitor (inputs, outputs, predictions, confidence, boundary) or a detector (e.g. prada,
ood, squeeze); ``per_key`` counts each API key apart (the actions then target that key); ``count`` events
within ``within_s`` seconds trigger the playbook once, and it re-arms after ``cooldown_s``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bastion.errors import InputError

#: actions a playbook may run, and whether resolving the incident can undo them
ACTIONS = {"alert": False, "throttle": True, "revoke": False, "route-to": True, "offline": True, "rollback": False}
SEVERITIES = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True)
class Action:
    kind: str
    argument: str | float | None = None


@dataclass(frozen=True)
class Playbook:
    name: str
    source: str | tuple[str, ...]
    actions: tuple[Action, ...]
    severity: str = "high"
    per_key: bool = False
    count: int = 1
    within_s: float = 300.0
    cooldown_s: float = 300.0


@dataclass(frozen=True)
class Event:
    """One firing of a monitor or detector; ``key`` is the API key id it came from, if any."""

    source: str
    time: float
    key: str | None = None
    model: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _action(raw: Any, where: str) -> Action:
    if isinstance(raw, str):
        kind, arg = raw, None
    elif isinstance(raw, dict) and len(raw) == 1:
        ((kind, arg),) = raw.items()
    else:
        raise InputError(where, repr(raw), "an action name or a one-key mapping such as {route-to: NAME@stage}")
    if kind not in ACTIONS:
        raise InputError(where, kind, f"one of {sorted(ACTIONS)}")
    if kind == "route-to" and not (isinstance(arg, str) and "@" in arg):
        raise InputError(where, repr(arg), "route-to: NAME@stage or NAME@version of a registry model")
    if kind == "throttle" and arg is not None and not (isinstance(arg, int | float) and arg > 0):
        raise InputError(where, repr(arg), "throttle: requests per second, a positive number")
    if kind == "offline" and arg is not None and not (isinstance(arg, int) and arg > 0):
        raise InputError(where, repr(arg), "offline: Retry-After seconds, a positive integer")
    return Action(kind, arg)


def parse_playbooks(raw: Any, source: str = "playbooks") -> list[Playbook]:
    if isinstance(raw, dict):
        raw = raw.get("playbooks")
    if not isinstance(raw, list) or not raw:
        raise InputError(source, type(raw).__name__, "a non-empty list of playbooks under 'playbooks:'")
    books, names = [], set()
    for i, item in enumerate(raw):
        where = f"{source}: playbook {i + 1}"
        if not isinstance(item, dict):
            raise InputError(where, repr(item), "a mapping with name, when, actions")
        unknown = sorted(set(item) - {"name", "when", "actions", "severity"})
        if unknown:
            raise InputError(where, unknown, "keys among name, when, actions, severity")
        name = str(item.get("name") or f"playbook-{i + 1}")
        if name in names:
            raise InputError(where, name, "a name no other playbook uses")
        names.add(name)
        when = item.get("when")
        if not isinstance(when, dict) or "source" not in when:
            raise InputError(f"{where}.when", repr(when), "a mapping with at least 'source'")
        bad = sorted(set(when) - {"source", "per_key", "count", "within_s", "cooldown_s"})
        if bad:
            raise InputError(f"{where}.when", bad, "keys among source, per_key, count, within_s, cooldown_s")
        actions = item.get("actions")
        if not isinstance(actions, list) or not actions:
            raise InputError(f"{where}.actions", repr(actions), "a non-empty list of actions")
        severity = str(item.get("severity", "high"))
        if severity not in SEVERITIES:
            raise InputError(f"{where}.severity", severity, f"one of {list(SEVERITIES)}")
        try:
            count, within, cooldown = int(when.get("count", 1)), float(when.get("within_s", 300)), \
                float(when.get("cooldown_s", 300))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}.when", repr(when), "numbers for count, within_s, cooldown_s") from exc
        if count < 1 or within <= 0 or cooldown < 0:
            raise InputError(f"{where}.when", repr(when), "count >= 1, within_s > 0, cooldown_s >= 0")
        acts = tuple(_action(a, f"{where}.actions[{j}]") for j, a in enumerate(actions))
        per_key = bool(when.get("per_key", False))
        if not per_key and any(a.kind in ("throttle", "revoke") for a in acts):
            raise InputError(f"{where}.actions", [a.kind for a in acts],
                             "throttle and revoke only in a per_key playbook (they act on the offending key)")
        src = when["source"]
        if isinstance(src, list):
            if not src or not all(isinstance(x, str) and x for x in src):
                raise InputError(f"{where}.when.source", repr(src), "a monitor or detector name, or a list of them")
            watched: str | tuple[str, ...] = tuple(src)
        else:
            watched = str(src)
        books.append(Playbook(name, watched, acts, severity, per_key, count, within, cooldown))
    return books


def load_playbooks(path: str | Path) -> list[Playbook]:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError("--playbooks", str(p), f"a readable YAML file ({exc})") from exc
    return parse_playbooks(raw, str(p))


class Matcher:
    """Counts events per playbook (and per key) in a sliding time window; says which playbooks trigger."""

    def __init__(self, playbooks: list[Playbook]) -> None:
        self.playbooks = playbooks
        self._seen: dict[tuple[str, str | None], deque[float]] = {}
        self._last_fired: dict[tuple[str, str | None], float] = {}

    def observe(self, event: Event) -> list[Playbook]:
        fired = []
        for book in self.playbooks:
            sources = (book.source,) if isinstance(book.source, str) else book.source
            if event.source not in sources or (book.per_key and event.key is None):
                continue
            slot = (book.name, event.key if book.per_key else None)
            times = self._seen.setdefault(slot, deque())
            times.append(event.time)
            while times and times[0] < event.time - book.within_s:
                times.popleft()
            last = self._last_fired.get(slot)
            if len(times) >= book.count and (last is None or event.time - last >= book.cooldown_s):
                self._last_fired[slot] = event.time
                times.clear()
                fired.append(book)
        return fired

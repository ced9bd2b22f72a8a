"""Incidents and the serving state that response actions change, in the registry's SQLAlchemy database.

Actions do not reach into a running server: they write state (a model offline, routed to a fallback, a key
throttled) that every gateway worker reads, so a response reaches all workers and replicas, survives a
restart, and is undone by resolving its incident from any machine.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

from sqlalchemy import JSON, Boolean, Float, Integer, String, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion import database
from bastion.errors import InputError


class Base(DeclarativeBase):
    pass


class IncidentRow(Base):
    __tablename__ = "bastion_incidents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[str] = mapped_column(String(40))
    playbook: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(100))
    key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(500))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="open")
    resolved: Mapped[str | None] = mapped_column(String(40), nullable=True)
    resolution: Mapped[str | None] = mapped_column(String(1000), nullable=True)


class ServingStateRow(Base):
    """Per model: normal, offline (503 with Retry-After) or routed to a fallback registry model."""

    __tablename__ = "bastion_serving_state"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    mode: Mapped[str] = mapped_column(String(20))  # offline | routed
    route_to: Mapped[str | None] = mapped_column(String(300), nullable=True)
    retry_after: Mapped[int | None] = mapped_column(Integer, nullable=True)
    incident: Mapped[str] = mapped_column(String(32))
    since: Mapped[str] = mapped_column(String(40))


class ThrottleRow(Base):
    __tablename__ = "bastion_key_throttles"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    rate: Mapped[float] = mapped_column(Float)
    incident: Mapped[str] = mapped_column(String(32))
    since: Mapped[str] = mapped_column(String(40))


class MonitorWindowRow(Base):
    """One live monitor window a gateway worker checked: what the status page and `monitor status` show."""

    __tablename__ = "bastion_monitor_windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[str] = mapped_column(String(40), index=True)
    model: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(220))  # "global" or "key:<key id>"
    drift: Mapped[bool] = mapped_column(Boolean)
    fired: Mapped[list[str]] = mapped_column(JSON)
    p_values: Mapped[dict[str, float]] = mapped_column(JSON)
    n: Mapped[int] = mapped_column(Integer)


_Row = TypeVar("_Row", ServingStateRow, ThrottleRow)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


class ResponseState:
    """Reads and writes incidents, serving modes and throttles (one object per process)."""

    def __init__(self, engine_or_url: Engine | str) -> None:
        self.engine = database.make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
        Base.metadata.create_all(self.engine)
        # Writers take SQLite's write lock at BEGIN (bastion.database): a deferred transaction that read first
        # fails at once with "database is locked" when another connection wrote meanwhile (WAL snapshots).
        self.writer = self.engine.execution_options(write=True)

    # -- serving state, read by the gateway on each request (through a short cache) ---------------------
    def serving(self, model: str) -> dict[str, Any] | None:
        with Session(self.engine) as s:
            row = s.get(ServingStateRow, model)
            return None if row is None else {"mode": row.mode, "route_to": row.route_to,
                                             "retry_after": row.retry_after, "incident": row.incident}

    def set_serving(self, model: str, mode: str, incident: str, *, route_to: str | None = None,
                    retry_after: int | None = None) -> None:
        self._put(ServingStateRow(model=model, mode=mode, route_to=route_to, retry_after=retry_after,
                                  incident=incident, since=now()))

    def clear_serving(self, model: str, incident: str) -> bool:
        """Back to normal, only if this incident set the current state (a later incident's state stays)."""
        return self._clear(ServingStateRow, model, incident)

    def throttle(self, key: str) -> float | None:
        with Session(self.engine) as s:
            row = s.get(ThrottleRow, key)
            return None if row is None else row.rate

    def throttles(self) -> dict[str, float]:
        """Every throttled key and its rate (one small query; the gateway's poller reads it)."""
        with Session(self.engine) as s:
            return {r.key: r.rate for r in s.scalars(select(ThrottleRow))}

    def set_throttle(self, key: str, rate: float, incident: str) -> None:
        self._put(ThrottleRow(key=key, rate=rate, incident=incident, since=now()))

    def clear_throttle(self, key: str, incident: str) -> bool:
        return self._clear(ThrottleRow, key, incident)

    def _put(self, row: ServingStateRow | ThrottleRow) -> None:
        """Insert, or replace the row with the same primary key (one model's state, one key's throttle)."""
        with Session(self.writer) as s, s.begin():
            s.merge(row)

    def _clear(self, table: type[_Row], key: str, incident: str) -> bool:
        with Session(self.writer) as s, s.begin():
            row = s.get(table, key)
            if row is None or row.incident != incident:
                return False
            s.delete(row)
            return True

    # -- live monitor windows ---------------------------------------------------------------------------
    def add_windows(self, rows: list[dict[str, Any]], keep: int = 5000) -> None:
        """Record checked windows (``time, model, scope, drift, fired, p_values, n``); keep the newest ``keep``."""
        if not rows:
            return
        with Session(self.writer) as s, s.begin():
            s.add_all([MonitorWindowRow(**r) for r in rows])
            s.flush()
            newest = s.scalars(select(MonitorWindowRow.id).order_by(MonitorWindowRow.id.desc()).offset(keep)
                               .limit(1)).first()
            if newest is not None:
                s.execute(delete(MonitorWindowRow).where(MonitorWindowRow.id <= newest))

    def windows(self, model: str | None = None, scope: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` windows, oldest first; ``scope`` "global", "key:<id>" or "keys" (every key)."""
        with Session(self.engine) as s:
            q = select(MonitorWindowRow).order_by(MonitorWindowRow.id.desc()).limit(limit)
            if model is not None:
                q = q.where(MonitorWindowRow.model == model)
            if scope == "keys":
                q = q.where(MonitorWindowRow.scope.startswith("key:"))
            elif scope is not None:
                q = q.where(MonitorWindowRow.scope == scope)
            rows = [{"id": r.id, "time": r.time, "model": r.model, "scope": r.scope, "drift": r.drift,
                     "fired": r.fired, "p_values": r.p_values, "n": r.n} for r in s.scalars(q)]
        return rows[::-1]

    def window_counts(self, model: str | None = None) -> dict[str, int]:
        """How many windows were checked (global, per key) and how many alarmed, over what is kept."""
        from sqlalchemy import func

        with Session(self.engine) as s:
            q = select(MonitorWindowRow.scope.startswith("key:"), MonitorWindowRow.drift, func.count()) \
                .group_by(MonitorWindowRow.scope.startswith("key:"), MonitorWindowRow.drift)
            if model is not None:
                q = q.where(MonitorWindowRow.model == model)
            out = {"global": 0, "keys": 0, "global_alarms": 0, "key_alarms": 0}
            for is_key, drift, n in s.execute(q):
                out["keys" if is_key else "global"] += n
                if drift:
                    out["key_alarms" if is_key else "global_alarms"] += n
            return out

    def serving_all(self) -> dict[str, dict[str, Any]]:
        with Session(self.engine) as s:
            return {r.model: {"mode": r.mode, "route_to": r.route_to, "retry_after": r.retry_after,
                              "incident": r.incident, "since": r.since} for r in s.scalars(select(ServingStateRow))}

    # -- incidents ------------------------------------------------------------------------------------
    def add_incident(self, row: IncidentRow) -> None:
        with Session(self.writer) as s, s.begin():
            s.add(row)

    def update_actions(self, incident: str, actions: list[dict[str, Any]]) -> None:
        with Session(self.writer) as s, s.begin():
            row = s.get(IncidentRow, incident)
            if row is not None:
                row.actions = list(actions)

    def incidents(self, status: str | None = None) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            q = select(IncidentRow).order_by(IncidentRow.created)
            if status is not None:
                q = q.where(IncidentRow.status == status)
            return [_as_dict(r) for r in s.scalars(q)]

    def incident(self, incident: str) -> dict[str, Any]:
        with Session(self.engine) as s:
            row = s.get(IncidentRow, incident)
            if row is None:
                matches = [r for r in s.scalars(select(IncidentRow)) if r.id.startswith(incident)] if incident else []
                if len(matches) != 1:
                    raise InputError("INCIDENT", incident, "the id (or a unique prefix) of a recorded incident")
                row = matches[0]
            return _as_dict(row)

    def mark_resolved(self, incident: str, note: str, actions: list[dict[str, Any]]) -> None:
        with Session(self.writer) as s, s.begin():
            row = s.get(IncidentRow, incident)
            assert row is not None
            row.status, row.resolved, row.resolution, row.actions = "resolved", now(), note, list(actions)


def _as_dict(r: IncidentRow) -> dict[str, Any]:
    return {"id": r.id, "created": r.created, "playbook": r.playbook, "severity": r.severity, "source": r.source,
            "key": r.key, "model": r.model, "title": r.title, "details": r.details, "actions": r.actions,
            "status": r.status, "resolved": r.resolved, "resolution": r.resolution}

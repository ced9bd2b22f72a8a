"""Registry metadata in SQLAlchemy: SQLite by default, PostgreSQL (or any SQLAlchemy URL) by URL.

Two tables: versions (files, signature, scan, evidence, stage) and events, a hash chain in which every
change is a record holding the hash of the one before, so a deleted or edited event is detectable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, UniqueConstraint, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion import database

STAGES = ("none", "staging", "production", "archived")


class Base(DeclarativeBase):
    pass


class VersionRow(Base):
    __tablename__ = "bastion_registry_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(100))
    stage: Mapped[str] = mapped_column(String(20), default="none")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    files: Mapped[dict[str, Any]] = mapped_column(JSON)  # relative path -> {"sha256", "size"}
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)  # key id, root digest, format, signature object
    scan: Mapped[dict[str, Any]] = mapped_column(JSON)  # worst severity, counts, findings
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)  # figures extracted from the results given


class EventRow(Base):
    __tablename__ = "bastion_registry_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


GENESIS = "0" * 64


def event_hash(prev_hash: str, time: str, action: str, name: str, version: str, details: dict[str, Any]) -> str:
    body = json.dumps({"prev": prev_hash, "time": time, "action": action, "name": name, "version": version,
                       "details": details}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def make_engine(url: str) -> Engine:
    """The registry's engine (:func:`bastion.database.make_engine`), with its tables created."""
    engine = database.make_engine(url)
    Base.metadata.create_all(engine)
    return engine


def append_event(session: Session, action: str, name: str, version: str, details: dict[str, Any]) -> EventRow:
    last = session.scalars(select(EventRow).order_by(EventRow.id.desc()).limit(1)).first()
    prev = last.hash if last is not None else GENESIS
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    row = EventRow(time=now, action=action, name=name, version=version, details=details, prev_hash=prev,
                   hash=event_hash(prev, now, action, name, version, details))
    session.add(row)
    return row


def verify_events(session: Session) -> list[str]:
    """Problems in the event chain, first one first (empty when intact)."""
    problems: list[str] = []
    prev = GENESIS
    for row in session.scalars(select(EventRow).order_by(EventRow.id)):
        if row.prev_hash != prev:
            problems.append(f"event {row.id}: does not follow the event before it (one was deleted or inserted)")
        if event_hash(row.prev_hash, row.time, row.action, row.name, row.version, row.details) != row.hash:
            problems.append(f"event {row.id}: its content was altered after it was written")
        prev = row.hash
    return problems

"""The gateway's store: API keys, audit records and signed checkpoints in one SQLAlchemy database.

SQLite (the default, a file next to the model; no server) runs in WAL mode, with ``synchronous`` set by
the guard config's ``audit_sync`` (see :mod:`.audit` for what each setting survives); PostgreSQL is used
by URL (``postgresql+psycopg://...``). The schema is created and upgraded by the Alembic migrations shipped
in this package (:func:`migrate`), never by ``create_all``, so a database written by an older Bastion is
upgraded in place.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bastion import database
from bastion.errors import InputError

SQLITE_BUSY_TIMEOUT_MS = database.SQLITE_BUSY_TIMEOUT_MS


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "guard_api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[str] = mapped_column(String(200))  # comma-separated
    salt: Mapped[bytes] = mapped_column(LargeBinary(32))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)  # requests per second
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_budget: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    output_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class AuditRecord(Base):
    __tablename__ = "guard_audit"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(String(40))  # ISO 8601 UTC, hashed as written
    request_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    client: Mapped[str] = mapped_column(String(100))
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(100))
    input_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    input_data: Mapped[str | None] = mapped_column(Text, nullable=True)  # opt-in
    output: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    decision: Mapped[str] = mapped_column(String(40))
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    scores: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON {detector: score}
    latency_ms: Mapped[float] = mapped_column(Float)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChainHead(Base):
    """One row: the chain's last sequence number and hash. Writers lock it to append in order."""

    __tablename__ = "guard_audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class Checkpoint(Base):
    __tablename__ = "guard_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)  # base64


def default_url(model_path: str | Path) -> str:
    """``sqlite:///<model>.audit.db`` next to the model file."""
    p = Path(model_path)
    return f"sqlite:///{p.with_name(p.name + '.audit.db')}"


def make_engine(url: str, sqlite_synchronous: str = "FULL") -> Engine:
    """The gateway's database: SQLite or PostgreSQL only (:func:`bastion.database.make_engine`)."""
    if sqlite_synchronous not in ("FULL", "NORMAL"):
        raise InputError("audit_sync", sqlite_synchronous, "full or normal")
    if "://" in url and not url.startswith(("sqlite", "postgresql")):
        raise InputError("db", url, "a database URL: sqlite:///path.db or postgresql+psycopg://user@host/db")
    return database.make_engine(url, sqlite_synchronous)


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration shipped with Bastion."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()

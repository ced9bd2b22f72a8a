"""One SQLAlchemy engine factory for every store Bastion keeps: gateway keys and audit log, registry, incidents.

SQLite by default (a path or ``sqlite:///...``), tuned for durable WAL commits; PostgreSQL by URL
(``postgresql://`` is taken as ``postgresql+psycopg://``). Pure SQLAlchemy: the registry and the response
state use it without the gateway's web stack.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

#: milliseconds a SQLite writer waits for another process's write lock before failing
SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: str, sqlite_synchronous: str = "FULL") -> Engine:
    """An engine for ``url`` (a SQLite file path is accepted as is).

    ``sqlite_synchronous``: FULL (default) makes a commit survive power loss; NORMAL survives the process
    being killed (the WAL is written before the commit returns) but not the machine losing power, and saves
    an fsync per commit.
    """
    if "://" not in url:
        url = f"sqlite:///{url}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        # No pool_pre_ping: it costs a round trip on every checkout, twice per request; stale connections
        # are recycled instead.
        kwargs["pool_recycle"] = 1800
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _tune_sqlite(engine, sqlite_synchronous)
    return engine


def _tune_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN; let SQLAlchemy's events issue it instead.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit that returned survives power loss (WAL + NORMAL may lose the last commits then).
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: two writers never deadlock upgrading a read lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

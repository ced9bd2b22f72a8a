"""API keys: scopes, salted scrypt hashes, revocation that every worker sees on the next request.

A key reads ``bst_<key id>_<secret>``. Only the key id and ``scrypt(secret, salt)`` are stored; the key is
shown once, at creation. scrypt costs tens of milliseconds by design, so a worker remembers the keys it has
already verified (by a SHA-256 of the presented key, in memory only) and pays scrypt once per key per
process. Whether a key is revoked is never cached: without Redis each request reads the key's
``revoked_at``, scopes and limits (one primary-key lookup on a connection the worker thread keeps open,
outside SQLAlchemy's pool and transaction events: tens of µs on SQLite, against hundreds through the
ORM) and re-reads the full row only when they changed; with Redis a worker re-reads rows after
``cache_ttl`` seconds or as soon as the revocation counter in Redis changed, which ``revoke`` bumps, so
the cache is invalidated everywhere at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bastion.errors import InputError
from bastion.guard.db import ApiKey

SCOPES = ("infer", "read-audit", "admin")
PREFIX = "bst"
#: scrypt cost: N=2**14, r=8, p=1 (about 16 MiB, tens of ms), the interactive-login setting of the paper
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
#: the Redis key holding the revocation counter
REVOCATION_COUNTER = "bastion:guard:keys:revocations"


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    rate: float | None = None
    burst: int | None = None
    daily_budget: int | None = None
    output_policy: dict[str, Any] | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "scopes": list(self.scopes),
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "rate": self.rate, "burst": self.burst, "daily_budget": self.daily_budget,
                "output_policy": self.output_policy}


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.key_id, row.name, tuple(s for s in row.scopes.split(",") if s), row.created_at,
                   row.revoked_at, row.rate, row.burst, row.daily_budget, row.output_policy)


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InputError("scope", ",".join(scopes) or "nothing", f"one or more of {', '.join(SCOPES)}")
    return tuple(dict.fromkeys(scopes))


class KeyStore:
    """Create, list, revoke and check API keys kept in the gateway database."""

    def __init__(self, engine: Engine, redis: Any = None) -> None:
        self.engine = engine
        # Writers take SQLite's write lock at BEGIN: a revoke that upgrades a read lock under traffic fails
        # with "database is locked" instead of waiting its turn.
        self.writer = engine.execution_options(write=True)
        self.redis = redis

    def create(self, name: str, scopes: list[str] | tuple[str, ...], *, rate: float | None = None,
               burst: int | None = None, daily_budget: int | None = None,
               output_policy: dict[str, Any] | None = None) -> tuple[str, KeyInfo]:
        """Store a new key; return the key (shown once) and its record."""
        if not name.strip():
            raise InputError("name", repr(name), "a non-empty name for the key's owner")
        scopes = check_scopes(scopes)
        if rate is not None and not rate > 0:
            raise InputError("rate", rate, "requests per second > 0")
        if burst is not None and burst < 1:
            raise InputError("burst", burst, "an integer >= 1")
        if daily_budget is not None and daily_budget < 1:
            raise InputError("daily_budget", daily_budget, "an integer >= 1")
        if output_policy is not None:
            from bastion.defenses.coarsening import OutputPolicy

            OutputPolicy(**output_policy)  # refuse a bad policy now, not on the first request
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        row = ApiKey(key_id=key_id, name=name, scopes=",".join(scopes), salt=salt, secret_hash=_hash(secret, salt),
                     created_at=datetime.now(timezone.utc), revoked_at=None, rate=rate, burst=burst,
                     daily_budget=daily_budget, output_policy=output_policy)
        with Session(self.writer) as s, s.begin():
            s.add(row)
            info = _info(row)
        return f"{PREFIX}_{key_id}_{secret}", info

    def list(self) -> list[KeyInfo]:
        with Session(self.engine) as s:
            return [_info(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.created_at))]

    def get(self, key_id: str) -> KeyInfo | None:
        with Session(self.engine) as s:
            row = s.get(ApiKey, key_id)
            return None if row is None else _info(row)

    def revoke(self, key_id: str) -> KeyInfo:
        with Session(self.writer) as s, s.begin():
            row = s.get(ApiKey, key_id)
            if row is None:
                raise InputError("key_id", key_id, "the id of an existing key (see `bastion keys list`)")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(timezone.utc)
            info = _info(row)
        if self.redis is not None:
            self.redis.incr(REVOCATION_COUNTER)
        return info


@dataclass
class Authenticator:
    """Turn a presented key into a :class:`KeyInfo` (or None), per worker, fast after the first time."""

    store: KeyStore
    #: seconds a key's row is trusted without re-reading it, when Redis announces revocations (without
    #: Redis the row's mutable columns are read on every request)
    cache_ttl: float = 1.0
    _verified: dict[bytes, str] = field(default_factory=dict)
    _rows: dict[str, tuple[float, KeyInfo | None]] = field(default_factory=dict)
    _raw_rows: dict[str, tuple[tuple[Any, ...], KeyInfo | None]] = field(default_factory=dict)
    _counter: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def _key_row(self, key_id: str) -> tuple[Any, ...] | None:
        """The key's mutable columns (revoked_at first), read now on this thread's own connection."""
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            try:
                if conn is None:
                    conn = self._local.conn = self._connect()
                cur = conn.cursor()
                try:
                    cur.execute(self._local.sql, (key_id,))
                    row = cur.fetchone()
                finally:
                    cur.close()
                return None if row is None else tuple(row)
            except Exception:
                # a dropped connection (database restarted): reconnect once, then let the error out
                self._local.conn = None
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _connect(self) -> Any:
        engine = self.store.engine
        raw = engine.raw_connection()
        raw.detach()  # its own connection from now on: changed settings never go back to the pool
        dbapi: Any = raw.dbapi_connection
        if engine.dialect.name == "sqlite":
            dbapi.isolation_level = None  # autocommit: no transaction to open or end
        else:
            dbapi.autocommit = True  # a SELECT outside a transaction, never idle in one
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._local.sql = (f"SELECT revoked_at, scopes, rate, burst, daily_budget, output_policy "
                           f"FROM {ApiKey.__tablename__} WHERE key_id = {mark}")
        return raw

    def authenticate(self, presented: str) -> KeyInfo | None:
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
            return None
        key_id, secret = parts[1], parts[2]
        info = self._row(key_id)
        if info is None or info.revoked:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        if self._verified.get(digest) == key_id:
            return info
        row_hash = self._secret_hash(key_id)
        if row_hash is None or not hmac.compare_digest(_hash(secret, row_hash[0]), row_hash[1]):
            return None
        with self._lock:
            self._verified[digest] = key_id
        return info

    def _secret_hash(self, key_id: str) -> tuple[bytes, bytes] | None:
        with Session(self.store.engine) as s:
            row = s.get(ApiKey, key_id)
            return None if row is None else (row.salt, row.secret_hash)

    def _row(self, key_id: str) -> KeyInfo | None:
        redis = self.store.redis
        if redis is None:
            # No Redis to announce revocations: read the key's mutable columns on every request (one
            # primary-key lookup) and rebuild its KeyInfo (an ORM read) only when they changed, so a
            # revocation or a new limit holds from the next request on, without a periodic re-read.
            raw = self._key_row(key_id)
            if raw is None:
                return None
            seen = self._raw_rows.get(key_id)
            if seen is not None and seen[0] == raw:
                return seen[1]
            info = self.store.get(key_id)
            with self._lock:
                self._raw_rows[key_id] = (raw, info)
            if info is not None and raw[0] is not None and info.revoked_at is None:
                return None  # revoked between the two reads: refuse
            return info
        counter = redis.get(REVOCATION_COUNTER)
        now = time.monotonic()
        if counter != self._counter:
            with self._lock:
                self._rows.clear()
                self._counter = counter
        cached = self._rows.get(key_id)
        if cached is not None and now - cached[0] < self.cache_ttl:
            return cached[1]
        info = self.store.get(key_id)
        with self._lock:
            self._rows[key_id] = (now, info)
        return info

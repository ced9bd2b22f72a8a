"""Tamper-evident audit log: one record per request, hash-chained, with signed checkpoints of the head.

Each record stores the hash of the record before it and its own hash over its content and that link
(SHA-256 of canonical JSON), so changing, inserting or deleting a record breaks the chain at that place.
Someone with write access to the database could rebuild the whole chain; the signed checkpoints stop
that: every ``checkpoint_every`` records or ``checkpoint_seconds`` seconds the head (sequence number and
hash) is signed with the operator's Ed25519 key (``bastion keygen``), whose private half the database
never sees. :func:`verify` names the first record that was altered, inserted or deleted.

Durability with low latency (group commit): request handlers queue their record and wait on a future;
one writer thread per process takes everything queued at that moment, appends it in one transaction with
one durable commit, and only then resolves the futures (``loop.call_soon_threadsafe``, one wake-up of the
event loop per commit, not per request). The writer sleeps on a condition variable and is woken by the
first record queued, so an idle gateway pays no polling delay; while it commits (the fsync releases the
GIL), the event loop keeps serving and the requests that arrive meanwhile form the next batch. A 2xx
therefore always has a committed record, and concurrent requests share one fsync instead of paying one
each. Several processes (workers, replicas) append to the same chain: the head row is locked inside the
transaction.

How durable "committed" is, is the operator's choice (``audit_sync``). ``full``: every group commit
fsyncs before anyone is answered, so a 2xx's record survives power loss at once; on a virtual disk that
fsync costs milliseconds (p50 ~3 ms, p99 ~15 ms measured here), more than the whole rest of the request.
``normal`` (the default): the commit reaches the operating system before anyone is answered (SQLite's
WAL with ``synchronous=NORMAL``; PostgreSQL's ``synchronous_commit=off`` on the writer's session), so
the record survives the gateway being killed at any moment, and a flusher thread fsyncs the WAL every
``flush_seconds`` off the request path (PostgreSQL's own WAL writer does the same), so a power loss or
kernel crash loses at most that window; the chain stays consistent either way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from bastion.guard.db import AuditRecord, ChainHead, Checkpoint
from bastion.guard.turns import TurnBatches

log = logging.getLogger(__name__)

GENESIS = "0" * 64
#: fields hashed into a record, in this order of meaning (the JSON itself is key-sorted)
HASHED_FIELDS = ("time", "request_id", "key_id", "client", "model_name", "model_version", "input_sha256",
                 "input_data", "output", "decision", "status", "reason", "scores", "latency_ms")
_CHECKPOINT_CONTEXT = b"bastion-audit-checkpoint-v1\n"


_RECORD_COLUMNS = tuple(c.name for c in AuditRecord.__table__.columns)
_CHECKPOINT_COLUMNS = ("seq", "hash", "time", "key_id", "signature")
_SQL: dict[str, dict[str, str]] = {}


def _sql(engine: Engine) -> dict[str, str]:
    """The writer's statements in the driver's parameter style. Touching the head row first takes the write
    lock (row lock in PostgreSQL; SQLite is locked by BEGIN IMMEDIATE), so processes sharing the chain
    append one after another; RETURNING reads it in the same statement."""
    style = engine.dialect.paramstyle
    if style not in _SQL:
        mark = "?" if style == "qmark" else "%s"
        head, rec, cp = ChainHead.__tablename__, AuditRecord.__tablename__, Checkpoint.__tablename__
        _SQL[style] = {
            "lock_head": f"UPDATE {head} SET seq = seq WHERE id = 1 RETURNING seq, hash",
            "insert": f"INSERT INTO {rec} ({', '.join(_RECORD_COLUMNS)}) "
                      f"VALUES ({', '.join([mark] * len(_RECORD_COLUMNS))})",
            "set_head": f"UPDATE {head} SET seq = {mark}, hash = {mark} WHERE id = 1",
            "checkpoint": f"INSERT INTO {cp} ({', '.join(_CHECKPOINT_COLUMNS)}) "
                          f"VALUES ({', '.join([mark] * len(_CHECKPOINT_COLUMNS))})",
        }
    return _SQL[style]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def record_hash(fields: dict[str, Any], prev_hash: str) -> str:
    body = {k: fields.get(k) for k in HASHED_FIELDS}
    body["prev_hash"] = prev_hash
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(data.encode()).hexdigest()


def checkpoint_message(seq: int, head_hash: str, at: str) -> bytes:
    return _CHECKPOINT_CONTEXT + f"{seq}\n{head_hash}\n{at}".encode()


def _clean(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: entry.get(k) for k in HASHED_FIELDS}
    out["time"] = out["time"] or now_iso()
    out["client"] = str(out["client"] or "")[:100]
    out["reason"] = None if out["reason"] is None else str(out["reason"])[:200]
    out["latency_ms"] = round(float(out["latency_ms"] or 0.0), 3)
    out["status"] = int(out["status"] or 0)
    return out


class AuditLog:
    """Append records durably (group commit) to the chain in ``engine``; sign checkpoints with ``signing_key``."""

    def __init__(self, engine: Engine, signing_key: Any = None, *, checkpoint_every: int = 1000,
                 checkpoint_seconds: float = 60.0, max_batch: int = 1024, sync: str = "full",
                 flush_seconds: float = 1.0) -> None:
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
        self.engine = engine
        self.sync = sync
        self.flush_seconds = flush_seconds
        self._flusher: threading.Thread | None = None
        self._flush_stop = threading.Event()  # its own: the writer's condition must wake only the writer
        self._flushed_records = 0
        self._dir_synced = False
        #: SQLite without a per-commit fsync commits on the event loop itself (see append)
        self.inline = sync == "normal" and engine.dialect.name == "sqlite"
        self._turns: TurnBatches[dict[str, Any], int] = TurnBatches(self._commit_inline)
        self._inline_lock = threading.Lock()
        self._inline_conn: Any = None
        self._inline_pid = 0
        self.signing_key = signing_key
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.max_batch = max_batch
        self._queue: list[tuple[dict[str, Any], asyncio.Future[int], asyncio.AbstractEventLoop]] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._conn: Any = None  # the writer thread's own DB-API connection
        self._last_checkpoint = time.monotonic()
        self.commits = 0
        self.records = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> AuditLog:
        """Start the writer thread (it also signs a checkpoint after ``checkpoint_seconds`` without one)."""
        with self._wake:
            # a thread does not survive fork: a worker process forked after start() starts its own
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._stopping = False
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="bastion-audit-writer", daemon=True)
                self._thread.start()
                if self.sync == "normal" and self._wal_path() is not None:
                    self._flush_stop.clear()
                    self._flusher = threading.Thread(target=self._flush_loop, name="bastion-audit-flusher",
                                                     daemon=True)
                    self._flusher.start()
        return self

    def stop(self) -> None:
        """Commit what is queued, sign a last checkpoint, and end the writer thread."""
        with self._wake:
            thread, self._thread = self._thread, None
            flusher, self._flusher = self._flusher, None
            self._stopping = True
            self._wake.notify()
        self._flush_stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=30)
        self.flush()  # before the connection closes: closing the last one may checkpoint and remove the WAL
        with self._inline_lock:
            conn, self._inline_conn = self._inline_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # -- durability of `sync: normal` --------------------------------------------------------------
    def _wal_path(self) -> str | None:
        """The SQLite write-ahead log's path; None for PostgreSQL or an in-memory database."""
        if self.engine.dialect.name != "sqlite":
            return None
        db = self.engine.url.database
        return None if not db or db == ":memory:" else db + "-wal"

    def flush(self) -> None:
        """fsync what is committed to the WAL (``sync: normal``): records committed so far survive power loss."""
        wal = self._wal_path()
        if self.sync != "normal" or wal is None:
            return
        records = self.records
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:  # nothing written since the last checkpoint removed it
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if not self._dir_synced:  # a new WAL file's directory entry must be durable too, once
            dfd = os.open(os.path.dirname(os.path.abspath(wal)), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self._dir_synced = True
        self._flushed_records = records

    def _flush_loop(self) -> None:
        """Every ``flush_seconds`` that saw a commit, fsync the WAL, then copy it into the database (the
        inline connection never checkpoints); the request path waits for neither. A PASSIVE checkpoint
        takes no lock a commit needs, and keeps the WAL at about one interval's worth of commits."""
        conn: Any = None
        try:
            while not self._flush_stop.wait(self.flush_seconds):
                if self.records == self._flushed_records:
                    continue
                try:
                    self.flush()
                    if self.inline:
                        if conn is None:
                            conn = self.engine.raw_connection()
                            conn.detach()
                        cur = conn.cursor()
                        try:
                            cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
                            cur.fetchall()
                        finally:
                            cur.close()
                except Exception:
                    log.exception("audit log fsync or WAL checkpoint failed")
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    timeout = None
                    if self.signing_key is not None:
                        timeout = max(0.0, self.checkpoint_seconds - (time.monotonic() - self._last_checkpoint))
                        if timeout == 0.0:
                            break
                    self._wake.wait(timeout)
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
                stopping = self._stopping and not self._queue
            if batch:
                self._commit(batch)
            elif self.signing_key is not None and not stopping and \
                    time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
                self._idle_checkpoint()
            if stopping:
                self._idle_checkpoint()
                conn, self._conn = self._conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                return

    def _commit(self, batch: list[tuple[dict[str, Any], asyncio.Future[int],
                                        asyncio.AbstractEventLoop]]) -> None:
        seqs: list[int] | None = None
        error: BaseException | None = None
        try:
            seqs = self._write([e for e, _, _ in batch])
        except Exception as exc:  # the database is down or refused: every waiting request fails (503)
            log.exception("audit write failed")
            error = exc
        # One wake-up per event loop (one per worker process in practice) for the whole batch.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | None]]] = {}
        for i, (_, fut, loop) in enumerate(batch):
            by_loop.setdefault(loop, []).append((fut, None if seqs is None else seqs[i]))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle_all, items, error)

    # -- appending -------------------------------------------------------------------------------
    async def append(self, entry: dict[str, Any], alone: bool = False) -> int:
        """Append ``entry``; return its sequence number once it is committed (group commit).

        Inline (SQLite, ``sync: normal``): the commit costs ~0.1 ms of CPU and no fsync, so it runs on the
        event loop, once per loop iteration for every record queued in it; a hop to the writer thread would
        cost more in wake-ups and GIL hand-overs than the commit itself. Otherwise the writer thread commits
        (an fsync or a network round trip must not stall the loop). ``alone``: the caller knows no other
        request is in flight, so the inline commit need not wait for the turn's end."""
        if self.inline:
            return await self._turns.submit(None, entry, defer=not alone)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        with self._wake:
            self._queue.append((entry, fut, loop))
            self._wake.notify()
        if self._thread is None or self._pid != os.getpid():
            self.start()
        return await fut

    def _commit_inline(self, _key: Hashable, batch: list[tuple[dict[str, Any], asyncio.Future[int]]]) -> None:
        seqs: list[int] | None = None
        error: BaseException | None = None
        try:
            with self._inline_lock:  # one connection, possibly several event loops (threads)
                seqs = self._write([e for e, _ in batch], conn=self._inline_connection())
        except Exception as exc:  # the database is locked for too long or broken: those requests get 503
            log.exception("audit write failed")
            error = exc
        _settle_all([(fut, None if seqs is None else seqs[i]) for i, (_, fut) in enumerate(batch)], error)

    def _inline_connection(self) -> Any:
        if self._inline_conn is None or self._inline_pid != os.getpid():
            conn = self.engine.raw_connection()
            conn.detach()
            # SQLite checkpoints the WAL into the database from whichever commit passes 1000 pages, with
            # two fsyncs (3-15 ms each on a cloud disk): on the event loop, that stall is every request's
            # p99. The flusher thread checkpoints instead (see _flush_loop).
            cur = conn.cursor()
            try:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            finally:
                cur.close()
            self._inline_conn, self._inline_pid = conn, os.getpid()
        return self._inline_conn

    def append_sync(self, entry: dict[str, Any]) -> int:
        """Append ``entry`` from synchronous code (CLI, tests); returns once committed."""
        return self._write([entry], own=True)[0]

    def _write(self, entries: list[dict[str, Any]], own: bool = False, conn: Any = None) -> list[int]:
        """Append ``entries`` in one transaction with one durable commit; return their sequence numbers.

        Plain DB-API statements on a connection the writer thread keeps (``own``: a pooled one for this
        call): through SQLAlchemy's Core the same four statements cost about five times the CPU, which the
        writer takes from the event loop (it holds the GIL for all but the fsync)."""
        rows = [_clean(e) for e in entries]
        raw = conn if conn is not None else self.engine.raw_connection() if own else self._writer_connection()
        sqlite = self.engine.dialect.name == "sqlite"
        sql = _sql(self.engine)
        try:
            cur = raw.cursor()
            try:
                if sqlite:
                    # IMMEDIATE takes the write lock up front (other processes append to the same chain)
                    cur.execute("BEGIN IMMEDIATE")
                cur.execute(sql["lock_head"])
                head = cur.fetchone()
                if head is None:
                    raise RuntimeError("the audit chain head row is missing: run the migrations (bastion.guard.db.migrate)")
                seq, prev = head
                start = seq
                for row in rows:
                    seq += 1
                    row["seq"] = seq
                    row["prev_hash"] = prev
                    row["hash"] = prev = record_hash(row, prev)
                cur.executemany(sql["insert"], [tuple(row[c] for c in _RECORD_COLUMNS) for row in rows])
                cur.execute(sql["set_head"], (seq, prev))
                if self.signing_key is not None and (seq // self.checkpoint_every > start // self.checkpoint_every):
                    cp = self._checkpoint_values(seq, prev)
                    cur.execute(sql["checkpoint"], tuple(cp[c] for c in _CHECKPOINT_COLUMNS))
                if sqlite:
                    cur.execute("COMMIT")
                else:
                    raw.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    if sqlite:
                        cur.execute("ROLLBACK")
                    else:
                        raw.rollback()
                if conn is not None:  # the connection may be broken: the next batch opens a new one
                    self._inline_conn = None
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                elif not own:
                    self._close_writer_connection()
                raise
            finally:
                with contextlib.suppress(Exception):
                    cur.close()
        finally:
            if own:
                raw.close()  # back to the pool
        self.commits += 1
        self.records += len(rows)
        return [r["seq"] for r in rows]

    def _writer_connection(self) -> Any:
        if self._conn is None:
            conn = self.engine.raw_connection()
            conn.detach()  # the writer's own, outside the pool, for the life of the thread
            if self.sync == "normal" and self.engine.dialect.name == "postgresql":
                # the server holds the commit when it returns; its WAL writer flushes it within ~0.6 s
                cur = conn.cursor()
                cur.execute("SET synchronous_commit TO off")
                cur.close()
                conn.commit()
            self._conn = conn
        return self._conn

    def _close_writer_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()

    def _checkpoint_values(self, seq: int, head_hash: str) -> dict[str, Any]:
        from bastion.sign.keys import key_id, sign_bytes

        at = now_iso()
        sig = sign_bytes(self.signing_key, checkpoint_message(seq, head_hash, at))
        self._last_checkpoint = time.monotonic()
        return {"seq": seq, "hash": head_hash, "time": at, "key_id": key_id(self.signing_key.public_key()),
                "signature": base64.b64encode(sig).decode()}

    def _checkpoint(self, conn: Connection, seq: int, head_hash: str) -> None:
        conn.execute(insert(Checkpoint).values(**self._checkpoint_values(seq, head_hash)))

    def _idle_checkpoint(self) -> None:
        self._last_checkpoint = time.monotonic()
        if self.signing_key is not None:
            try:
                self.checkpoint_now()
            except Exception:
                log.exception("audit checkpoint failed")

    def checkpoint_now(self) -> int | None:
        """Sign the current head unless the newest checkpoint already covers it; return its seq."""
        if self.signing_key is None:
            return None
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            conn.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=ChainHead.seq))
            seq, head_hash = conn.execute(select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == 1)).one()
            last = conn.execute(select(Checkpoint.seq).order_by(Checkpoint.seq.desc()).limit(1)).scalar()
            if seq == 0 or (last is not None and last >= seq):
                return None
            self._checkpoint(conn, seq, head_hash)
            return int(seq)


def _settle_all(items: list[tuple[asyncio.Future[int], int | None]], exc: BaseException | None) -> None:
    for fut, seq in items:
        if fut.done():  # the request was cancelled (client went away); its record is committed anyway
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(int(seq or 0))


# -- verification ---------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    records: int = 0
    checkpoints: int = 0
    #: (seq, message) of every problem, the first by sequence number first
    problems: list[tuple[int, str]] = field(default_factory=list)
    #: records after the newest valid checkpoint (their chain is consistent but not yet signed)
    unsigned_tail: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> int | None:
        return min(s for s, _ in self.problems) if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "checkpoints": self.checkpoints,
                "first_bad_record": self.first_bad, "problems": [{"seq": s, "problem": m} for s, m in
                                                                  sorted(self.problems)],
                "unsigned_tail": self.unsigned_tail, "warnings": self.warnings}


def _rows(engine: Engine, since: str | None = None) -> Iterator[dict[str, Any]]:
    cols = list(AuditRecord.__table__.columns)
    stmt = select(*cols).order_by(AuditRecord.seq)
    if since is not None:
        stmt = stmt.where(AuditRecord.time >= normalise_time(since))
    names = [c.name for c in cols]
    with engine.connect() as conn:
        for r in conn.execution_options(yield_per=2000).execute(stmt):
            yield dict(zip(names, r, strict=True))


def normalise_time(text: str) -> str:
    """An ISO 8601 time (naive means UTC) in the form records are written, so strings compare as times."""
    from bastion.errors import InputError

    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError("since", repr(text), "an ISO 8601 time such as 2026-11-28 or 2026-11-28T06:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds")


def verify(engine: Engine, public_key: Any = None) -> VerifyReport:
    """Walk the chain and the checkpoints; report the first altered, inserted or deleted record."""
    from cryptography.exceptions import InvalidSignature

    from bastion.sign.keys import key_id, verify_bytes

    rep = VerifyReport()
    hashes: dict[int, str] = {}
    prev: dict[str, Any] | None = None
    prevprev: dict[str, Any] | None = None
    for row in _rows(engine):
        rep.records += 1
        seq = row["seq"]
        hashes[seq] = row["hash"]
        if record_hash(row, row["prev_hash"]) != row["hash"]:
            rep.problems.append((seq, f"record {seq} altered: its content no longer matches its hash"))
        expected_prev = GENESIS if prev is None else prev["hash"]
        last_seq = 0 if prev is None else prev["seq"]
        if row["prev_hash"] != expected_prev:
            if seq != last_seq + 1:
                rep.problems.append((last_seq + 1, f"record(s) {last_seq + 1}..{seq - 1} deleted: record {seq} "
                                                   f"follows record {last_seq or 'none (start)'}"))
            elif prev is not None and row["prev_hash"] == (GENESIS if prevprev is None else prevprev["hash"]):
                rep.problems.append((prev["seq"], f"record {prev['seq']} inserted: record {seq} chains to "
                                                  f"the record before it"))
            elif prev is not None:
                rep.problems.append((prev["seq"], f"record {prev['seq']} altered and re-hashed, or records "
                                                  f"deleted after it: record {seq} does not chain to it"))
            else:
                rep.problems.append((seq, f"record(s) before {seq} deleted: record {seq} does not start the chain"))
        prevprev, prev = prev, row
    last_seq = 0 if prev is None else prev["seq"]
    with engine.connect() as conn:
        head = conn.execute(select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == 1)).one_or_none()
        cps = conn.execute(select(Checkpoint).order_by(Checkpoint.seq)).all()
    if head is not None and head.seq > last_seq:
        rep.problems.append((last_seq + 1, f"record(s) {last_seq + 1}..{head.seq} deleted from the end: "
                                           f"the chain head says {head.seq}"))
    rep.checkpoints = len(cps)
    newest_valid = 0
    if public_key is None:
        rep.warnings.append("no public key given: checkpoint signatures not checked, so a chain rebuilt "
                            "by someone with database access would pass")
    else:
        want = key_id(public_key)
        for cp in cps:
            if cp.key_id != want:
                rep.problems.append((cp.seq, f"checkpoint at record {cp.seq} signed by another key ({cp.key_id[:16]})"))
                continue
            try:
                verify_bytes(public_key, base64.b64decode(cp.signature), checkpoint_message(cp.seq, cp.hash, cp.time))
            except (InvalidSignature, ValueError):
                rep.problems.append((cp.seq, f"checkpoint at record {cp.seq}: signature does not verify"))
                continue
            if cp.seq not in hashes:
                rep.problems.append((cp.seq, f"record {cp.seq} deleted: a signed checkpoint covers it"))
            elif hashes[cp.seq] != cp.hash:
                rep.problems.append((_first_divergence(cp.seq, rep), f"records up to {cp.seq} rewritten: the "
                                     f"chain head there differs from the signed checkpoint"))
            else:
                newest_valid = max(newest_valid, cp.seq)
        if not cps:
            rep.warnings.append("no signed checkpoints yet: only the chain's internal consistency was checked")
    rep.unsigned_tail = max(0, last_seq - newest_valid) if public_key is not None else last_seq
    rep.problems.sort()
    return rep


def _first_divergence(cp_seq: int, rep: VerifyReport) -> int:
    earlier = [s for s, _ in rep.problems if s <= cp_seq]
    return min(earlier) if earlier else cp_seq


# -- export ---------------------------------------------------------------------------------------
EXPORT_FIELDS = ("seq", *HASHED_FIELDS, "prev_hash", "hash")


def export(engine: Engine, out: io.TextIOBase | Any, *, since: str | None = None, fmt: str = "jsonl") -> int:
    """Write records (from ``since``, an ISO time) as JSON lines or CSV; return how many."""
    n = 0
    writer = csv.DictWriter(out, fieldnames=list(EXPORT_FIELDS)) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for row in _rows(engine, since):
        rec = {k: row[k] for k in EXPORT_FIELDS}
        if writer is not None:
            writer.writerow(rec)
        else:
            out.write(json.dumps(rec, sort_keys=True) + "\n")
        n += 1
    return n

"""Tamper-evident audit log: one record per request, hash-chained, with signed checkpoints of the head.

Each record stores the hash of the record before it and its own hash over its content and that link
(SHA-256 of canonical JSON), so changing, inserting or deleting a record breaks the chain at that place.
Someone with write access to the database could rebuild the whole chain; the signed checkpoints stop
that: every ``checkpoint_every`` records or ``checkpoint_seconds`` seconds the head (sequence number and
hash) is signed with the operator's Ed25519 key (``bastion keygen``), whose private half the database
never sees. :func:`verify` names the first record that was altered, inserted or deleted.

Durability with low latency (group commit): request handlers queue their record and wait; one flush per
turn of the event loop takes every record queued at that moment, appends them in one transaction with one
durable commit, and only then wakes the handlers, which answer (no thread hop on the request path: under
load, handing work to a thread and back costs more than the commit). A 2xx therefore always has a
committed record, and concurrent requests share one fsync instead of paying one each. Several processes
(workers, replicas) append to the same chain: the head row is locked inside the transaction.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine

from bastion.guard.db import AuditRecord, ChainHead, Checkpoint

log = logging.getLogger(__name__)

GENESIS = "0" * 64
#: fields hashed into a record, in this order of meaning (the JSON itself is key-sorted)
HASHED_FIELDS = ("time", "request_id", "key_id", "client", "model_name", "model_version", "input_sha256",
                 "input_data", "output", "decision", "status", "reason", "scores", "latency_ms")
_CHECKPOINT_CONTEXT = b"bastion-audit-checkpoint-v1\n"


# Built once: SQLAlchemy then reuses their compiled form on every request.
# Touching the head row first takes the write lock (row lock in PostgreSQL, BEGIN IMMEDIATE in SQLite), so
# processes sharing the chain append one after another; RETURNING reads it in the same statement.
_LOCK_HEAD = (update(ChainHead).where(ChainHead.id == 1).values(seq=ChainHead.seq)
              .returning(ChainHead.seq, ChainHead.hash))
_INSERT = insert(AuditRecord)
_SET_HEAD = update(ChainHead).where(ChainHead.id == 1).values(seq=bindparam("s"), hash=bindparam("h"))


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
                 checkpoint_seconds: float = 60.0, max_batch: int = 1024) -> None:
        self.engine = engine
        self.signing_key = signing_key
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.max_batch = max_batch
        self._pending: list[tuple[dict[str, Any], asyncio.Future[int]]] = []
        self._flush_scheduled = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_checkpoint = time.monotonic()
        self.commits = 0
        self.records = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> AuditLog:
        """Start the thread that signs a checkpoint after ``checkpoint_seconds`` without one."""
        if self._thread is None and self.signing_key is not None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="bastion-audit-checkpoints", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(max(0.05, self.checkpoint_seconds - (time.monotonic() - self._last_checkpoint))):
            if time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
                self._idle_checkpoint()
        self._idle_checkpoint()

    # -- appending -------------------------------------------------------------------------------
    async def append(self, entry: dict[str, Any]) -> int:
        """Append ``entry``; return its sequence number once it is durably committed.

        Group commit on the event loop, without a thread hop: the first request that finds no flush
        scheduled schedules one for the loop's next turn; every request handled until then joins it.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._pending.append((entry, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def append_sync(self, entry: dict[str, Any]) -> int:
        """Append ``entry`` from synchronous code (CLI, tests); returns once committed."""
        return self._write([entry])[0]

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        if self._pending:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            seqs = self._write([e for e, _ in batch])
        except Exception as exc:  # the database is down or refused: every waiting request fails (503)
            log.exception("audit write failed")
            for _, fut in batch:
                _settle(fut, None, exc)
            return
        for (_, fut), seq in zip(batch, seqs, strict=True):
            _settle(fut, seq, None)

    def _write(self, entries: list[dict[str, Any]]) -> list[int]:
        rows = [_clean(e) for e in entries]
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            seq, prev = conn.execute(_LOCK_HEAD).one()
            start = seq
            for row in rows:
                seq += 1
                row["seq"] = seq
                row["prev_hash"] = prev
                row["hash"] = prev = record_hash(row, prev)
            conn.execute(_INSERT, rows)
            conn.execute(_SET_HEAD, {"s": seq, "h": prev})
            if self.signing_key is not None and (seq // self.checkpoint_every > start // self.checkpoint_every):
                self._checkpoint(conn, seq, prev)
        self.commits += 1
        self.records += len(rows)
        return [r["seq"] for r in rows]

    def _checkpoint(self, conn: Connection, seq: int, head_hash: str) -> None:
        from bastion.sign.keys import key_id, sign_bytes

        at = now_iso()
        sig = sign_bytes(self.signing_key, checkpoint_message(seq, head_hash, at))
        conn.execute(insert(Checkpoint).values(seq=seq, hash=head_hash, time=at,
                                               key_id=key_id(self.signing_key.public_key()),
                                               signature=base64.b64encode(sig).decode()))
        self._last_checkpoint = time.monotonic()

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


def _settle(fut: asyncio.Future[int], seq: int | None, exc: BaseException | None) -> None:
    if fut.done():
        return
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

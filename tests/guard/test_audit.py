"""Audit log: hash chain and signed checkpoints name the first altered, inserted or deleted record, on SQLite
and PostgreSQL; concurrent requests share durable commits; the CLI verifies and exports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from bastion.cli.main import app as cli
from bastion.guard.audit import AuditLog, record_hash, verify
from bastion.guard.db import AuditRecord, ChainHead, make_engine, migrate
from bastion.sign.keys import keygen, load_private_key, load_public_key


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    priv, pub = keygen(tmp_path_factory.mktemp("audit-key") / "audit")
    return priv, pub


def _entry(i: int) -> dict[str, Any]:
    return {"request_id": f"r{i}", "key_id": "k1", "client": "127.0.0.1", "model_name": "digits",
            "model_version": "v1", "input_sha256": f"{i:064x}", "output": json.dumps({"label": [i % 10]}),
            "decision": "allow", "status": 200, "scores": None, "latency_ms": 0.5 + i / 1000}


def _log(db_url: str, keypair: tuple[Path, Path], every: int = 4) -> AuditLog:
    engine = make_engine(db_url)
    migrate(engine)
    return AuditLog(engine, load_private_key(keypair[0]), checkpoint_every=every, checkpoint_seconds=3600)


def _fill(log: AuditLog, n: int) -> None:
    for i in range(1, n + 1):
        assert log.append_sync(_entry(i)) == i


def test_intact_chain_verifies(db_url: str, keypair: tuple[Path, Path]) -> None:
    log = _log(db_url, keypair)
    _fill(log, 10)
    rep = verify(log.engine, load_public_key(keypair[1]))
    assert rep.ok and rep.records == 10 and rep.checkpoints == 2 and rep.unsigned_tail == 2
    assert log.checkpoint_now() == 10
    assert verify(log.engine, load_public_key(keypair[1])).unsigned_tail == 0
    log.engine.dispose()


@pytest.mark.parametrize("tamper", ["alter", "insert", "delete", "delete-tail", "rewrite"])
def test_tampering_names_first_bad_record(db_url: str, keypair: tuple[Path, Path], tamper: str) -> None:
    log = _log(db_url, keypair)
    _fill(log, 10)
    e = log.engine
    with e.begin() as conn:
        if tamper == "alter":
            conn.execute(update(AuditRecord).where(AuditRecord.seq == 6).values(decision="reject"))
            want, word = 6, "altered"
        elif tamper == "insert":
            # a forged record slipped in after record 5, chained to it, later records shifted up by one
            rows = conn.execute(select(AuditRecord).where(AuditRecord.seq > 5).order_by(AuditRecord.seq.desc())).all()
            for r in rows:
                conn.execute(update(AuditRecord).where(AuditRecord.seq == r.seq).values(seq=r.seq + 1))
            prev = conn.execute(select(AuditRecord.hash).where(AuditRecord.seq == 5)).scalar_one()
            forged = {**_entry(99), "time": "2026-01-01T00:00:00.000000+00:00", "input_data": None, "reason": None}
            conn.execute(insert(AuditRecord).values(seq=6, prev_hash=prev, hash=record_hash(forged, prev), **forged))
            want, word = 6, "inserted"
        elif tamper == "delete":
            conn.execute(delete(AuditRecord).where(AuditRecord.seq == 3))
            want, word = 3, "deleted"
        elif tamper == "delete-tail":
            conn.execute(delete(AuditRecord).where(AuditRecord.seq >= 9))
            conn.execute(update(ChainHead).values(seq=8))  # the attacker hides the tail from the head too
            want, word = 8, "deleted"  # the signed checkpoint at 8 still holds; 9..10 were never signed
        else:
            # rebuild the whole chain consistently after changing record 2: only the signatures catch it
            rows = conn.execute(select(AuditRecord).order_by(AuditRecord.seq)).all()
            prev = "0" * 64
            for r in rows:
                fields = dict(r._mapping)
                if r.seq == 2:
                    fields["decision"] = "flag"
                h = record_hash(fields, prev)
                conn.execute(update(AuditRecord).where(AuditRecord.seq == r.seq).values(
                    decision=fields["decision"], prev_hash=prev, hash=h))
                prev = h
            conn.execute(update(ChainHead).values(hash=prev))
            want, word = 4, "rewritten"
    rep = verify(e, load_public_key(keypair[1]))
    if tamper == "delete-tail":
        # Deleting records nobody has signed yet is only visible as a shorter unsigned tail: say so.
        assert rep.ok and rep.records == 8 and rep.unsigned_tail == 0
        e.dispose()
        return
    assert not rep.ok
    assert rep.first_bad == want, rep.problems
    assert word in rep.problems[0][1], rep.problems
    e.dispose()


def test_group_commit_shares_durable_commits(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    log = _log(f"sqlite:///{tmp_path / 'g.db'}", keypair, every=1000).start()

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(log.append(_entry(i)) for i in range(200))))

    seqs = asyncio.run(burst())
    log.stop()
    assert sorted(seqs) == list(range(1, 201))
    assert log.records == 200 and log.commits < 100  # requests that arrived together shared commits
    assert verify(log.engine).ok
    log.engine.dispose()


def test_two_writers_share_one_chain(db_url: str, keypair: tuple[Path, Path]) -> None:
    """Two processes' writers (two engines) append to the same chain without forking it."""
    a, b = _log(db_url, keypair), _log(db_url, keypair)
    a.start()
    b.start()

    async def both() -> None:
        await asyncio.gather(*(w.append(_entry(i)) for i in range(60) for w in (a, b)))

    asyncio.run(both())
    a.stop()
    b.stop()
    rep = verify(a.engine, load_public_key(keypair[1]))
    assert rep.ok and rep.records == 120, rep.problems
    a.engine.dispose()
    b.engine.dispose()


def test_cli_verify_and_export(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    log = _log(db, keypair)
    _fill(log, 5)
    runner = CliRunner()
    r = runner.invoke(cli, ["audit", "verify", "--db", db, "--pub", str(keypair[1])])
    assert r.exit_code == 0 and "INTACT: 5 records" in r.output, r.output
    out = tmp_path / "a.csv"
    r = runner.invoke(cli, ["audit", "export", "--db", db, "--format", "csv", "--out", str(out)])
    assert r.exit_code == 0 and out.read_text().count("\n") == 6
    assert runner.invoke(cli, ["audit", "export", "--db", db, "--format", "csv", "--out", str(out)]).exit_code == 2
    r = runner.invoke(cli, ["audit", "export", "--db", db, "--since", "2999-01-01"])
    assert r.exit_code == 0 and r.stdout == ""
    r = runner.invoke(cli, ["audit", "export", "--db", db])
    assert [json.loads(line)["seq"] for line in r.stdout.splitlines()] == [1, 2, 3, 4, 5]
    with log.engine.begin() as conn:
        conn.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(status=500))
    r = runner.invoke(cli, ["audit", "verify", "--db", db, "--pub", str(keypair[1]), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["first_bad_record"] == 2
    r = runner.invoke(cli, ["audit", "verify", "--db", str(tmp_path / "missing.db")])
    assert r.exit_code == 2 and "existing gateway database" in r.output
    r = runner.invoke(cli, ["audit", "export", "--db", db, "--format", "xml"])
    assert r.exit_code == 2
    log.engine.dispose()


_CRASH_CHILD = """
import asyncio, json, sys
from bastion.guard.audit import AuditLog
from bastion.guard.db import make_engine

log = AuditLog(make_engine(sys.argv[1], sys.argv[2].upper()), sync=sys.argv[2]).start()

async def one(i):
    seq = await log.append({"request_id": f"c{i}", "key_id": "k", "client": "127.0.0.1", "model_name": "m",
                            "model_version": "v", "decision": "allow", "status": 200, "latency_ms": 0.1})
    # printed only once append returned: what a 2xx answer would be sent after
    sys.stdout.write(f"{seq} c{i}\\n")
    sys.stdout.flush()

async def main():
    i = 0
    while True:
        await asyncio.gather(*(one(i + j) for j in range(8)))
        i += 8

asyncio.run(main())
"""


@pytest.mark.parametrize("sync", ["normal", "full"])
def test_answered_records_survive_kill_9(tmp_path: Path, sync: str) -> None:
    """Every append that returned (the point a 2xx is sent) is in the database after SIGKILL mid-stream,
    and the chain verifies: the future is resolved only after the commit (inline on the event loop with
    ``normal``, on the writer thread with ``full``)."""
    import signal
    import subprocess
    import sys
    import time

    db = f"sqlite:///{tmp_path / 'crash.db'}"
    migrate(make_engine(db))
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_CHILD, db, sync], stdout=subprocess.PIPE, text=True)
    acked: list[tuple[int, str]] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while len(acked) < 200 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seq, rid = line.split()
        acked.append((int(seq), rid))
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    acked += [(int(s), r) for s, r in (ln.split() for ln in rest.splitlines() if ln.strip())]
    assert len(acked) >= 200, f"the writer acknowledged only {len(acked)} records in 60 s"
    engine = make_engine(db)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(AuditRecord.seq, AuditRecord.request_id)).all())
    missing = [(s, r) for s, r in acked if stored.get(s) != r]
    assert not missing, f"{len(missing)} answered records lost, e.g. {missing[:3]}"
    assert verify(engine).ok
    engine.dispose()


@pytest.mark.parametrize("sync", ["normal", "full"])
def test_failed_commit_fails_its_requests_and_the_writer_recovers(tmp_path: Path, sync: str) -> None:
    """A commit that fails raises in every request waiting on it (the gateway answers 503, never a 2xx
    without a record); the writer (thread, or the inline path) survives and the next commit works."""
    from sqlalchemy import text

    engine = make_engine(f"sqlite:///{tmp_path / 'f.db'}", sync.upper())
    migrate(engine)
    log = AuditLog(engine, sync=sync).start()
    assert log.inline == (sync == "normal")

    async def some(n: int, base: int) -> list[Any]:
        return list(await asyncio.gather(*(log.append(_entry(base + i)) for i in range(n)), return_exceptions=True))

    assert asyncio.run(some(3, 1)) == [1, 2, 3]
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE guard_audit_head RENAME TO moved_away"))
    failed = asyncio.run(some(4, 10))
    assert all(isinstance(r, Exception) for r in failed), failed
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE moved_away RENAME TO guard_audit_head"))
    assert asyncio.run(some(2, 20)) == [4, 5]
    log.stop()
    assert verify(engine).ok and verify(engine).records == 5
    engine.dispose()


def test_normal_sync_fsyncs_the_wal_off_the_request_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sync: normal`` answers after the commit reaches the OS; the flusher thread then fsyncs the WAL
    within ``flush_seconds``, and stop() flushes what is left: the window a power loss can cost is bounded."""
    import os
    import time

    import bastion.guard.audit as audit_module

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(audit_module.os, "fsync", spy)
    engine = make_engine(f"sqlite:///{tmp_path / 'n.db'}", "NORMAL")
    migrate(engine)
    log = AuditLog(engine, sync="normal", flush_seconds=0.05).start()

    async def some(n: int) -> list[int]:
        return list(await asyncio.gather(*(log.append(_entry(i)) for i in range(n))))

    assert asyncio.run(some(5)) == [1, 2, 3, 4, 5]
    deadline = time.monotonic() + 10
    while not any(p.endswith("n.db-wal") for p in synced) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any(p.endswith("n.db-wal") for p in synced), synced
    assert log._flushed_records == 5
    quiet = len(synced)
    time.sleep(0.3)  # nothing new committed: nothing to fsync
    assert len(synced) == quiet
    assert asyncio.run(some(2)) == [6, 7]
    log.stop()
    assert log._flushed_records == 7 and verify(engine).ok
    engine.dispose()

"""Model registry: only signed, clean versions get in; gated promotion; rollback; encrypted backups."""

from __future__ import annotations

import json
import os
import pickle
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import bastion as bn
from bastion.cli.main import app
from bastion.registry import GatePolicy, Registry, RegistryRefusal, StoreIntegrityError
from bastion.registry.backup import BackupError, backup, new_key, restore

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return bn.sign.keys.keygen(tmp_path / "keys" / "release")


def _model(folder: Path, keys: tuple[Path, Path] | None, scale: float = 1.0) -> Path:
    folder.mkdir(parents=True)
    torch.save({"w": torch.ones(3) * scale}, folder / "ckpt.pt")
    (folder / "config.json").write_text(json.dumps({"arch": "mlp", "scale": scale}))
    if keys is not None:
        bn.sign.sign_model(folder, keys[0])
    return folder


def _evidence(path: Path, robust: float, upper_bound: bool = False) -> Path:
    body = {"norm": "linf", "clean_accuracy": 0.97, "curve": [{"epsilon": 0.1, "label": "0.1", "robust_accuracy": robust}]}
    if upper_bound:
        body["upper_bound"] = True
    path.write_text(json.dumps(body))
    return path


GATE = {"promote": {"production": {"robust_accuracy": {"norm": "linf", "eps": 0.1, "min": 0.5}}}}


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'reg' / 'registry.db'}", tmp_path / "reg" / "store")


def test_push_accepts_a_signed_clean_folder_and_refuses_everything_else(reg: Registry, keys: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    good = _model(tmp_path / "good", keys)
    info = reg.push(good, "digits", "1", public_key=keys[1])
    assert info.signature["ok"] and info.scan["worst"] in ("none", "info", "low")
    assert set(info.files) == {"ckpt.pt", "config.json", "model.sig"}
    with pytest.raises(bn.InputError, match="immutable"):
        reg.push(good, "digits", "1", public_key=keys[1])
    with pytest.raises(RegistryRefusal, match="unsigned"):
        reg.push(_model(tmp_path / "unsigned", None), "digits", "2", public_key=keys[1])
    with pytest.raises(RegistryRefusal, match="trusted key"):
        reg.push(good, "digits", "3")
    other = bn.sign.keys.keygen(tmp_path / "keys" / "other")
    with pytest.raises(RegistryRefusal, match="does not verify"):
        reg.push(good, "digits", "4", public_key=other[1])
    altered = _model(tmp_path / "altered", keys)
    (altered / "config.json").write_text("{}")
    with pytest.raises(RegistryRefusal, match="does not verify"):
        reg.push(altered, "digits", "5", public_key=keys[1])

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.pkl").write_bytes(pickle.dumps(Evil()))
    bn.sign.sign_model(bad, keys[0])
    with pytest.raises(RegistryRefusal, match="scan"):
        reg.push(bad, "digits", "6", public_key=keys[1])
    assert [v.version for v in reg.versions()] == ["1"]
    refused = [e for e in reg.events() if e["action"] == "push-refused"]
    assert len(refused) == 5 and reg.verify_log() == []
    # An unsigned folder is accepted only where the policy says signatures are optional.
    relaxed = GatePolicy.from_dict({"push": {"signature": "optional"}})
    assert reg.push(_model(tmp_path / "unsigned2", None), "digits", "7", policy=relaxed).signature["present"] is False


def test_promotion_is_gated_on_evidence_and_rollback_returns_to_the_last_good(reg: Registry, keys: tuple[Path, Path],
                                                                              tmp_path: Path) -> None:
    gate = GatePolicy.from_dict(GATE)
    reg.push(_model(tmp_path / "v1", keys), "digits", "1", public_key=keys[1],
             evidence=[_evidence(tmp_path / "e1.json", 0.6)])
    reg.push(_model(tmp_path / "v2", keys, 2.0), "digits", "2", public_key=keys[1],
             evidence=[_evidence(tmp_path / "e2.json", 0.7)])
    reg.push(_model(tmp_path / "v3", keys, 3.0), "digits", "3", public_key=keys[1],
             evidence=[_evidence(tmp_path / "e3.json", 0.3)])
    reg.push(_model(tmp_path / "v4", keys, 4.0), "digits", "4", public_key=keys[1],
             evidence=[_evidence(tmp_path / "e4.json", 0.9, upper_bound=True)])
    reg.push(_model(tmp_path / "v5", keys, 5.0), "digits", "5", public_key=keys[1])
    with pytest.raises(RegistryRefusal, match=r"0\.300 < 0\.5"):
        reg.promote("digits", "3", "production", gate)
    with pytest.raises(RegistryRefusal, match="upper bound"):
        reg.promote("digits", "4", "production", gate)
    with pytest.raises(RegistryRefusal, match="no evidence"):
        reg.promote("digits", "5", "production", gate)
    reg.promote("digits", "1", "production", gate)
    reg.promote("digits", "2", "production", gate)
    assert reg.resolve("digits", "production").version == "2"
    assert reg.show("digits", "1").stage == "archived"
    assert reg.rollback("digits").version == "1"
    assert reg.show("digits", "2").stage == "archived"
    with pytest.raises(bn.InputError, match="earlier production version"):
        reg.rollback("digits")  # 2 was rolled back: it is not a target
    assert reg.verify_log() == []


def test_checkout_rechecks_digests_and_the_event_chain_shows_tampering(reg: Registry, keys: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    reg.push(_model(tmp_path / "v1", keys), "digits", "1", public_key=keys[1])
    reg.promote("digits", "1", "production")
    info, out = reg.checkout("digits", "production", tmp_path / "served")
    assert torch.load(out / "ckpt.pt")["w"].tolist() == [1.0, 1.0, 1.0]
    assert bn.sign.verify_model(out, keys[1]).ok
    digest = info.files["ckpt.pt"]["sha256"]
    obj = reg.store.root / "objects" / digest[:2] / digest[2:]
    os.chmod(obj, 0o644)
    blob = bytearray(obj.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    obj.write_bytes(bytes(blob))
    with pytest.raises(StoreIntegrityError, match="altered"):
        reg.checkout("digits", "1", tmp_path / "served2")
    assert not (tmp_path / "served2").exists()
    import sqlite3

    con = sqlite3.connect(str(tmp_path / "reg" / "registry.db"))
    con.execute("UPDATE bastion_registry_events SET details = '{\"files\": 99}' WHERE id = 1")
    con.commit()
    con.close()
    assert any("event 1" in p and "altered" in p for p in reg.verify_log())


def test_backup_restores_exactly_and_refuses_tampering(reg: Registry, keys: tuple[Path, Path], tmp_path: Path) -> None:
    reg.push(_model(tmp_path / "v1", keys), "digits", "1", public_key=keys[1],
             evidence=[_evidence(tmp_path / "e1.json", 0.6)])
    reg.promote("digits", "1", "production")
    key = new_key(tmp_path / "backup.key")
    with pytest.raises(bn.InputError, match="never overwritten"):
        new_key(key)
    bk = tmp_path / "backup.tar"
    assert backup(reg, bk, key, keys[0])["versions"] == 1
    fresh = Registry(f"sqlite:///{tmp_path / 'r2' / 'db.sqlite'}", tmp_path / "r2" / "store")
    # Tampered: flip one byte inside a sealed object.
    data = bytearray(bk.read_bytes())
    with tarfile.open(bk) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("objects/"))
    data[member.offset_data + 20] ^= 1
    (tmp_path / "tampered.tar").write_bytes(bytes(data))
    with pytest.raises(BackupError, match="altered"):
        restore(fresh, tmp_path / "tampered.tar", key, keys[1])
    (tmp_path / "truncated.tar").write_bytes(bk.read_bytes()[: len(data) // 2])
    with pytest.raises(BackupError):
        restore(fresh, tmp_path / "truncated.tar", key, keys[1])
    other = bn.sign.keys.keygen(tmp_path / "keys" / "other")
    with pytest.raises(BackupError, match="signature"):
        restore(fresh, bk, key, other[1])
    assert fresh.versions() == []  # nothing half-restored
    res = restore(fresh, bk, key, keys[1])
    assert res["restored_versions"] == 1
    assert fresh.resolve("digits", "production").files == reg.show("digits", "1").files
    _, out = fresh.checkout("digits", "1", tmp_path / "restored")
    assert bn.sign.verify_model(out, keys[1]).ok
    with pytest.raises(BackupError, match="already registered"):
        restore(fresh, bk, key, keys[1])
    os.chmod(key, 0o644)
    with pytest.raises(bn.InputError, match="0600"):
        restore(fresh, bk, key, keys[1])


def test_cli_push_promote_rollback_with_exit_codes(keys: tuple[Path, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    db, store = f"sqlite:///{tmp_path / 'cli.db'}", str(tmp_path / "store")
    loc = ["--db", db, "--store", store]
    (tmp_path / "gate.yaml").write_text(
        "promote:\n  production:\n    robust_accuracy: {norm: linf, eps: 0.1, min: 0.5}\n")
    for v, robust in (("1", 0.6), ("2", 0.2)):
        res = runner.invoke(app, ["registry", "push", str(_model(tmp_path / f"v{v}", keys, float(v))), "--name",
                                  "digits", "--version", v, "--pub", str(keys[1]), "--evidence",
                                  str(_evidence(tmp_path / f"e{v}.json", robust)), *loc])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["registry", "push", str(_model(tmp_path / "u", None)), "--name", "digits",
                              "--version", "3", "--pub", str(keys[1]), *loc])
    assert res.exit_code == 1 and "unsigned" in res.output
    gate = ["--policy", str(tmp_path / "gate.yaml")]
    assert runner.invoke(app, ["registry", "promote", "digits", "1", "--to", "production", *gate, *loc]).exit_code == 0
    res = runner.invoke(app, ["registry", "promote", "digits", "2", "--to", "production", *gate, *loc, "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["refused"] is True
    res = runner.invoke(app, ["registry", "promote", "digits", "9", "--to", "production", *loc])
    assert res.exit_code == 2 and "registered version" in res.output
    (tmp_path / "bad.yaml").write_text("promote:\n  prod: {}\n")
    res = runner.invoke(app, ["registry", "promote", "digits", "1", "--to", "production", "--policy",
                              str(tmp_path / "bad.yaml"), *loc])
    assert res.exit_code == 2 and "staging" in res.output
    res = runner.invoke(app, ["registry", "list", *loc, "--json"])
    assert {v["version"]: v["stage"] for v in json.loads(res.stdout)["versions"]} == {"1": "production", "2": "none"}
    res = runner.invoke(app, ["registry", "log", *loc])
    assert res.exit_code == 0 and "intact" in res.output


@pytest.fixture()
def pg_url() -> Iterator[str]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    engine = sqlalchemy.create_engine(PG_URL)
    schema = f"reg_{uuid.uuid4().hex[:10]}"
    try:
        with engine.begin() as con:
            con.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    except sqlalchemy.exc.OperationalError:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as con:
            con.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def test_registry_on_postgresql(pg_url: str, keys: tuple[Path, Path], tmp_path: Path) -> None:
    reg = Registry(pg_url, tmp_path / "store")
    reg.push(_model(tmp_path / "v1", keys), "digits", "1", public_key=keys[1])
    reg.push(_model(tmp_path / "v2", keys, 2.0), "digits", "2", public_key=keys[1])
    reg.promote("digits", "1", "production")
    reg.promote("digits", "2", "production")
    assert reg.rollback("digits").version == "1"
    assert reg.verify_log() == [] and len(reg.events()) == 5


def test_bad_evidence_and_policy_are_clear_errors(reg: Registry, keys: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(bn.InputError, match="JSON object"):
        reg.push(_model(tmp_path / "v1", keys), "digits", "1", public_key=keys[1], evidence=[tmp_path / "junk.json"])
    (tmp_path / "none.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(bn.InputError, match="robustness curve"):
        reg.push(tmp_path / "v1", "digits", "1", public_key=keys[1], evidence=[tmp_path / "none.json"])
    with pytest.raises(bn.InputError, match="letters"):
        reg.push(tmp_path / "v1", "../etc", "1", public_key=keys[1])
    with pytest.raises(bn.InputError, match="robust_accuracy"):
        GatePolicy.from_dict({"promote": {"production": {"robust_accuracy": 0.5}}})
    with pytest.raises(bn.InputError, match="keys among"):
        GatePolicy.from_dict({"promote": {"production": {"min_robustness": 0.5}}})

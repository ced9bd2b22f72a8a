"""Signing: known-answer hashing and PAE, sign→verify round trips, every tamper named, CLI exit codes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.sign import (
    KeyFileError,
    ManifestError,
    SignatureFormatError,
    build_manifest,
    hash_files,
    keygen,
    pae,
    scan_folder,
    sign_model,
    verify_model,
)
from bastion.sign.manifest import root_digest

runner = CliRunner()


def _bytes(n: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes (SHA-256 in counter mode) so known answers stay fixed."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-model"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden": 8}\n')
    (folder / "weights.bin").write_bytes(_bytes(5000, seed=1))
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return folder


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "keys").mkdir()
    return keygen(tmp_path / "keys" / "release")


@pytest.fixture()
def signed(model: Path, keys: tuple[Path, Path]) -> Path:
    # shard size below the weights' size so the sharded path is exercised by every round trip
    sign_model(model, keys[0], shard_size=1024)
    return model


# --- known answers --------------------------------------------------------------------------------


def test_pae_matches_the_dsse_spec_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"  # lengths count bytes, not characters


def test_sharded_hashing_equals_hashlib(tmp_path: Path) -> None:
    data = _bytes(1000, seed=7)
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "small.bin").write_bytes(data[:64])
    (tmp_path / "empty.bin").write_bytes(b"")
    files = scan_folder(tmp_path, (), allow_symlinks=False).files
    for workers in (1, 4):
        big, empty, small = hash_files(files, shard_size=64, workers=workers)
        expected_shards = [hashlib.sha256(data[i : i + 64]).digest() for i in range(0, 1000, 64)]
        assert len(big.shards) == 16  # 15 full shards and one of 40 bytes
        assert [bytes.fromhex(s) for s in big.shards] == expected_shards
        assert big.digest == hashlib.sha256(b"".join(expected_shards)).hexdigest()
        assert (
            small.digest == hashlib.sha256(data[:64]).hexdigest() and small.shards == ()
        )  # what sha256sum prints
        assert empty.digest == hashlib.sha256(b"").hexdigest()
    seen: list[int] = []  # the progress hook is told about every byte exactly once
    hash_files(files, shard_size=64, workers=4, progress=seen.append)
    assert sum(seen) == 1064
    # one shard as large as the file: the plain SHA-256 of the whole file
    (whole,) = hash_files([f for f in files if f.name == "big.bin"], shard_size=1000)
    assert whole.digest == hashlib.sha256(data).hexdigest()


def test_manifest_is_sorted_ignores_git_and_binds_names_in_the_root(model: Path) -> None:
    manifest = build_manifest(model, shard_size=1 << 20)
    assert [r.name for r in manifest.resources] == ["config.json", "tokenizer/vocab.txt", "weights.bin"]
    h = hashlib.sha256()
    for r in manifest.resources:
        h.update(r.name.encode() + b"\0sha256\0" + bytes.fromhex(r.digest))
    assert manifest.root_digest == h.hexdigest()
    statement = manifest.to_statement()
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [{"name": "tiny-model", "digest": {"sha256": manifest.root_digest}}]
    swapped = [
        r.__class__(n, r.algorithm, r.digest, r.size)
        for r, n in zip(manifest.resources, ["x", "y", "z"], strict=True)
    ]
    assert root_digest(swapped) != manifest.root_digest
    # ignore paths are literal; globs are their own, explicit list
    assert [
        r.name for r in build_manifest(model, ignore=["tokenizer"], ignore_globs=["*.json"]).resources
    ] == ["weights.bin"]
    assert [r.name for r in build_manifest(model, ignore=["tokenizer", "*.json"]).resources] == [
        "config.json",
        "weights.bin",
    ]


# --- round trip and tampering ---------------------------------------------------------------------


def test_round_trip_verifies_and_writes_a_dsse_envelope(signed: Path, keys: tuple[Path, Path]) -> None:
    result = verify_model(signed, keys[1])
    assert result.ok and result.signature_ok
    assert (result.added, result.missing, result.changed, result.reasons) == ([], [], [], [])
    assert result.files == 3
    bundle = json.loads((signed / "model.sig").read_text())
    envelope = bundle["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert envelope["signatures"][0]["keyid"] == result.key_id
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicate"]["serialization"]["ignore_paths"] == [".git", "model.sig", ".model.sig.tmp"]
    weights = next(r for r in statement["predicate"]["resources"] if r["name"] == "weights.bin")
    assert weights["algorithm"] == "sha256-sharded" and len(weights["shards"]) == 5
    assert stat.S_IMODE(os.stat(keys[0]).st_mode) == 0o600
    (signed / ".git" / "HEAD").write_text("changed\n")  # ignored by default
    assert verify_model(signed, keys[1]).ok


def test_ignore_patterns_are_signed_and_honoured(
    model: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    (model / "logs").mkdir()
    (model / "logs" / "train.log").write_text("epoch 1\n")
    sig = sign_model(
        model, keys[0], output=tmp_path / "elsewhere.sig", ignore=["logs"], ignore_globs=["*.tmp"]
    )
    (model / "logs" / "train.log").write_text("epoch 2\n")
    (model / "scratch.tmp").write_text("x")
    assert verify_model(model, keys[1], signature=sig).ok
    (model / "notes.txt").write_text("not ignored\n")
    assert verify_model(model, keys[1], signature=sig).added == ["notes.txt"]


def _tamper(model: Path, how: str) -> None:
    if how == "byte":
        data = bytearray((model / "weights.bin").read_bytes())
        data[3000] ^= 1
        (model / "weights.bin").write_bytes(bytes(data))
    elif how == "added":
        (model / "tokenizer" / "merges.txt").write_text("x y\n")
    elif how == "removed":
        (model / "config.json").unlink()
    elif how == "renamed":
        (model / "config.json").rename(model / "config.old.json")


@pytest.mark.parametrize(
    ("how", "added", "missing", "changed"),
    [
        ("byte", [], [], ["weights.bin"]),
        ("added", ["tokenizer/merges.txt"], [], []),
        ("removed", [], ["config.json"], []),
        ("renamed", ["config.old.json"], ["config.json"], []),
    ],
)
def test_each_file_tamper_is_named(
    signed: Path, keys: tuple[Path, Path], how: str, added: list[str], missing: list[str], changed: list[str]
) -> None:
    _tamper(signed, how)
    result = verify_model(signed, keys[1])
    assert not result.ok and result.signature_ok
    assert (result.added, result.missing, result.changed) == (added, missing, changed)
    for name in added + missing + changed:
        assert any(name in line for line in result.reasons)
    if how == "byte":  # the shard holding byte 3000 of 5000 (shards of 1024) is named
        assert any("2048-3072" in line for line in result.reasons)
    if how == "renamed":
        assert any("renamed to config.old.json" in line for line in result.reasons)


def test_every_difference_is_named_at_once(signed: Path, keys: tuple[Path, Path]) -> None:
    for how in ("byte", "added", "removed"):
        _tamper(signed, how)
    result = verify_model(signed, keys[1])
    assert (result.added, result.missing, result.changed) == (
        ["tokenizer/merges.txt"],
        ["config.json"],
        ["weights.bin"],
    )
    assert len(result.reasons) == 3


def _edit_envelope(sig: Path, edit_payload: bool = False, edit_sig: bool = False) -> None:
    bundle = json.loads(sig.read_text())
    env = bundle["dsseEnvelope"]
    if edit_payload:
        statement = json.loads(base64.b64decode(env["payload"]))
        res = next(r for r in statement["predicate"]["resources"] if r["name"] == "config.json")
        res["digest"] = "0" * 64  # an attacker vouching for a different config.json
        env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    if edit_sig:
        raw = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
        raw[0] ^= 0xFF
        env["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(bundle))


def test_manifest_edited_inside_the_envelope_is_detected(signed: Path, keys: tuple[Path, Path]) -> None:
    _edit_envelope(signed / "model.sig", edit_payload=True)
    result = verify_model(signed, keys[1])
    assert not result.ok and not result.signature_ok
    # nothing in an unauthenticated payload is trusted, not even to name the file it vouches for
    assert (result.added, result.missing, result.changed) == ([], [], [])
    assert "altered" in result.reasons[0] and len(result.reasons) == 1


def test_signature_bytes_changed_is_detected(signed: Path, keys: tuple[Path, Path]) -> None:
    _edit_envelope(signed / "model.sig", edit_sig=True)
    result = verify_model(signed, keys[1])
    assert not result.ok and not result.signature_ok
    assert (result.added, result.missing, result.changed) == ([], [], [])
    assert result.reasons[0].startswith("signature: does not verify")


def test_another_key_is_refused(signed: Path, tmp_path: Path) -> None:
    _, other_pub = keygen(tmp_path / "other")
    result = verify_model(signed, other_pub)
    assert not result.ok and not result.signature_ok
    assert "not by the given public key" in result.reasons[0]


# --- symlinks -------------------------------------------------------------------------------------


def test_symlink_escaping_the_folder_is_refused(model: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("not part of the model\n")
    (model / "leak.txt").symlink_to(secret)
    with pytest.raises(ManifestError, match=r"leak\.txt.*leads out of the model folder"):
        sign_model(model, keys[0], allow_symlinks=True)
    with pytest.raises(ManifestError, match="leads out"):
        build_manifest(model, allow_symlinks=True)
    # planted after signing, it is reported by name, never followed
    (model / "leak.txt").unlink()
    sign_model(model, keys[0])
    (model / "tokenizer" / "up").symlink_to("../..", target_is_directory=True)
    result = verify_model(model, keys[1])
    assert result.added == ["tokenizer/up"] and any("leads out" in line for line in result.reasons)


def test_symlinks_inside_are_refused_by_default_and_recorded_when_allowed(
    model: Path, keys: tuple[Path, Path]
) -> None:
    (model / "latest.bin").symlink_to("weights.bin")
    with pytest.raises(ManifestError, match="symlinks are refused"):
        build_manifest(model)
    manifest = build_manifest(model, allow_symlinks=True)
    link = manifest.by_name()["latest.bin"]
    assert (link.algorithm, link.target) == ("symlink", "weights.bin")
    sign_model(model, keys[0], allow_symlinks=True)
    assert verify_model(model, keys[1]).ok
    (model / "latest.bin").unlink()
    (model / "latest.bin").symlink_to("config.json")
    result = verify_model(model, keys[1])
    assert result.changed == ["latest.bin"] and "config.json" in result.reasons[0]


# --- keys and errors that stop the check ----------------------------------------------------------


def test_keygen_refuses_to_overwrite_and_encrypted_keys_need_their_password(
    model: Path, tmp_path: Path
) -> None:
    base = tmp_path / "locked"
    keygen(base, password="s3cret")
    with pytest.raises(KeyFileError, match="already exist"):
        keygen(base)
    keygen(base, password="s3cret", force=True)
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o600
    with pytest.raises(KeyFileError, match="encrypted"):
        sign_model(model, base)
    with pytest.raises(KeyFileError, match="wrong password"):
        sign_model(model, base, password="nope")
    sign_model(model, base, password="s3cret")
    assert verify_model(model, Path(f"{base}.pub")).ok
    with pytest.raises(KeyFileError, match="is a private key"):
        verify_model(model, base)


def test_malformed_or_missing_signature_raises(signed: Path, keys: tuple[Path, Path]) -> None:
    (signed / "model.sig").write_text("{not json")
    with pytest.raises(SignatureFormatError, match="not JSON"):
        verify_model(signed, keys[1])
    (signed / "model.sig").write_text(
        json.dumps({"dsseEnvelope": {"payloadType": "x", "payload": "%%", "signatures": []}})
    )
    with pytest.raises(SignatureFormatError, match="malformed"):
        verify_model(signed, keys[1])
    (signed / "model.sig").unlink()
    with pytest.raises(SignatureFormatError, match="no signature file"):
        verify_model(signed, keys[1])


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_exit_codes(model: Path, tmp_path: Path) -> None:
    base = tmp_path / "cli-key"
    assert runner.invoke(app, ["keygen", "--out", str(base)]).exit_code == 0
    assert runner.invoke(app, ["keygen", "--out", str(base)]).exit_code == 2  # refuses to overwrite
    signed = runner.invoke(app, ["sign", str(model), "--key", str(base), "--json"])
    assert signed.exit_code == 0, signed.output
    assert json.loads(signed.stdout)["files"] == 3
    pub = f"{base}.pub"

    ok = runner.invoke(app, ["verify", str(model), "--pub", pub])
    assert ok.exit_code == 0 and "verified: 3 files" in ok.stdout

    _tamper(model, "byte")
    _tamper(model, "added")
    bad = runner.invoke(app, ["verify", str(model), "--pub", pub])
    assert bad.exit_code == 1
    assert "changed: weights.bin" in bad.stdout and "added: tokenizer/merges.txt" in bad.stdout
    as_json = runner.invoke(app, ["verify", str(model), "--pub", pub, "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["changed"] == ["weights.bin"]

    for args in (
        ["verify", str(tmp_path / "no-such-model"), "--pub", pub],
        ["verify", str(model), "--pub", str(tmp_path / "missing.pub")],
        ["verify", str(model), "--pub", pub, "--signature", str(tmp_path / "missing.sig")],
        ["sign", str(model), "--key", str(tmp_path / "missing-key")],
        ["sign", str(model), "--key", str(base), "--password-env", "BASTION_TEST_UNSET_VARIABLE"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert isinstance(res.exception, SystemExit)  # a clear message, never a traceback
        assert "error:" in res.output

    (model / "model.sig").write_text("garbage")
    garbage = runner.invoke(app, ["verify", str(model), "--pub", pub])
    assert garbage.exit_code == 2 and "not JSON" in garbage.output


def test_keygen_creates_an_owner_only_key_folder(tmp_path: Path) -> None:
    res = runner.invoke(app, ["keygen", "--out", str(tmp_path / "keys" / "release")])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "release").st_mode) == 0o600
    (tmp_path / "afile").write_text("x")
    res = runner.invoke(app, ["keygen", "--out", str(tmp_path / "afile" / "release")])
    assert res.exit_code == 2 and "is a file" in res.output

"""Signing that holds: each rule of issue 8 against a case with a known answer."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.errors import BastionError
from bastion.sign import KeyFileError, ManifestError, SignatureFormatError, keygen, sign_model, verify_model
from bastion.sign.dsse import sign_envelope, write_signature_file
from bastion.sign.keys import load_private_key

runner = CliRunner()


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "config.json").write_text('{"a": 1}\n')
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 20)
    return folder


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return keygen(tmp_path / "keys" / "k")


def test_symlinks_into_ignored_paths_are_refused(model: Path, keys: tuple[Path, Path]) -> None:
    (model / "head").symlink_to(".git/HEAD")
    with pytest.raises(ManifestError, match=r"head: symlink to '\.git/HEAD' leads into an ignored path"):
        sign_model(model, keys[0], allow_symlinks=True)
    (model / "head").unlink()
    (model / "logs").mkdir()
    (model / "logs" / "w.bin").write_text("x")
    (model / "latest").symlink_to("logs", target_is_directory=True)
    with pytest.raises(ManifestError, match="leads into an ignored path"):
        sign_model(model, keys[0], allow_symlinks=True, ignore=["logs/w.bin"])
    # planted after signing: reported, never followed into unsigned bytes
    (model / "latest").unlink()
    sign_model(model, keys[0], allow_symlinks=True, ignore=["logs"])
    (model / "cfg").symlink_to("logs/w.bin")
    result = verify_model(model, keys[1])
    assert not result.ok and result.added == ["cfg"] and "ignored path" in result.reasons[0]


def _edit_payload(sig: Path, edit: dict[str, object]) -> None:
    bundle = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["serialization"].update(edit)
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))


def test_unsigned_payload_fields_are_never_used(model: Path, keys: tuple[Path, Path]) -> None:
    sign_model(model, keys[0])
    _edit_payload(model / "model.sig", {"shard_size": 1})  # would mean one task per byte
    hashed: list[int] = []
    result = verify_model(model, keys[1], progress=hashed.append)
    assert not result.ok and not result.signature_ok
    assert hashed == [] and result.files == 0  # not one byte read on the payload's word


def test_output_and_ignore_paths_are_literal(model: Path, keys: tuple[Path, Path]) -> None:
    sig = sign_model(model, keys[0], output=model / "model[1].sig")
    assert verify_model(model, keys[1], signature=sig).ok  # fnmatch would read [1] as a character class
    sig = sign_model(model, keys[0], output=model / "*.sig")
    (model / "evil.sig").write_text("planted")
    result = verify_model(model, keys[1], signature=sig)
    assert result.added == ["evil.sig"]  # '*.sig' names one file, not a pattern


def test_names_are_escaped_and_non_utf8_names_handled(model: Path, keys: tuple[Path, Path]) -> None:
    sign_model(model, keys[0])
    fake = "x\r\x1b[32mverified: all files match\x1b[0m"
    (model / fake).write_text("planted")
    bad = os.path.join(os.fsencode(model), b"bad\xff.bin")
    with open(bad, "wb") as fh:
        fh.write(b"x")
    result = verify_model(model, keys[1])
    assert not result.ok and len(result.added) == 2
    text = "\n".join(result.reasons)
    assert "\r" not in text and "\x1b" not in text
    assert "x\\r\\x1b[32mverified" in text and "bad\\xff.bin" in text
    out = runner.invoke(app, ["verify", str(model), "--pub", str(keys[1])])
    assert out.exit_code == 1 and "\x1b" not in out.stdout and "\r" not in out.stdout
    os.unlink(os.path.join(os.fsencode(model), fake.encode()))
    with pytest.raises(ManifestError, match="not valid UTF-8"):
        sign_model(model, keys[0])


def test_duplicate_json_keys_are_rejected(model: Path, keys: tuple[Path, Path]) -> None:
    sign_model(model, keys[0])
    text = (model / "model.sig").read_text()
    (model / "model.sig").write_text(text.replace('"mediaType"', '"mediaType": "x", "mediaType"', 1))
    with pytest.raises(SignatureFormatError, match="'mediaType' twice"):
        verify_model(model, keys[1])
    # a validly signed payload whose object has a key twice: two parsers could read two manifests
    payload = b'{"_type":"https://in-toto.io/Statement/v1","_type":"x"}'
    write_signature_file(sign_envelope(payload, load_private_key(keys[0])), model / "model.sig")
    with pytest.raises(SignatureFormatError, match="'_type' twice"):
        verify_model(model, keys[1])


def test_group_readable_private_keys_are_refused(model: Path, keys: tuple[Path, Path]) -> None:
    os.chmod(keys[0], 0o640)
    with pytest.raises(KeyFileError, match="mode 0640"):
        sign_model(model, keys[0])
    res = runner.invoke(app, ["sign", str(model), "--key", str(keys[0])])
    assert res.exit_code == 2 and "--insecure-key-permissions" in res.output
    res = runner.invoke(app, ["sign", str(model), "--key", str(keys[0]), "--insecure-key-permissions"])
    assert res.exit_code == 0, res.output


def test_encrypted_keys_use_scrypt(tmp_path: Path) -> None:
    private, _ = keygen(tmp_path / "locked", password="s3cret", key_type="ecdsa-p256")
    pem = private.read_text()
    assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    assert bytes.fromhex("06092a864886f70d01050d") in der  # PBES2
    assert bytes.fromhex("06092b06010401da47040b") in der  # scrypt, 1.3.6.1.4.1.11591.4.11
    assert (
        bytes.fromhex("02024000") + bytes.fromhex("020108") + bytes.fromhex("020105") in der
    )  # N=2^14 r=8 p=5
    with pytest.raises(KeyFileError, match="wrong password"):
        load_private_key(private, "wrong")
    assert load_private_key(private, "s3cret").curve.name == "secp256r1"  # type: ignore[union-attr]


def test_leftover_temp_file_is_not_content_and_write_is_fsynced(
    model: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (model / ".model.sig.tmp").write_text("half a signature from a crash")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(f"replace {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    sign_model(model, keys[0])
    assert events[:2] == ["fsync", "replace model.sig"]  # the data reaches the disk before the rename
    monkeypatch.undo()
    statement = json.loads(
        base64.b64decode(json.loads((model / "model.sig").read_text())["dsseEnvelope"]["payload"])
    )
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["config.json", "weights.bin"]
    assert not (model / ".model.sig.tmp").exists()
    assert verify_model(model, keys[1]).ok


def test_output_never_overwrites_inputs(model: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    key_bytes, weights = keys[0].read_bytes(), (model / "weights.bin").read_bytes()
    for target in (keys[0], keys[1], model / "weights.bin"):
        for extra in ([], ["--force"]):
            res = runner.invoke(
                app, ["sign", str(model), "--key", str(keys[0]), "--output", str(target), *extra]
            )
            assert res.exit_code == 2 and "error:" in res.output, (target, res.output)
    assert keys[0].read_bytes() == key_bytes and (model / "weights.bin").read_bytes() == weights
    link = tmp_path / "alias"
    link.symlink_to(keys[0])  # another name for the key: compared by inode, not by spelling
    with pytest.raises(BastionError):
        sign_model(model, keys[0], output=link)
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with pytest.raises(BastionError, match="--force"):
        sign_model(model, keys[0], output=other)
    sign_model(model, keys[0], output=other, force=True)
    sign_model(model, keys[0])
    sign_model(model, keys[0])  # re-signing in place replaces the folder's own signature
    assert verify_model(model, keys[1]).ok


def test_empty_folder_and_keygen_overwrite(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    res = runner.invoke(app, ["sign", str(tmp_path / "empty"), "--key", str(keys[0])])
    assert res.exit_code == 2 and "no files to sign" in res.output
    before = keys[0].read_bytes()
    res = runner.invoke(app, ["keygen", "--out", str(keys[0]), "--type", "ecdsa-p256"])
    assert res.exit_code == 2 and keys[0].read_bytes() == before


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521"])
def test_ecdsa_keys_round_trip(model: Path, tmp_path: Path, key_type: str) -> None:
    private, public = keygen(tmp_path / key_type, key_type=key_type)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    sign_model(model, private, shard_size=1000)
    assert verify_model(model, public).ok
    (model / "config.json").write_text("{}")
    result = verify_model(model, public)
    assert result.signature_ok and result.changed == ["config.json"]
    _, ed_pub = keygen(tmp_path / "ed")
    assert not verify_model(model, ed_pub).signature_ok


def test_hard_link_to_content_and_cli_format_errors(
    model: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    os.link(model / "weights.bin", tmp_path / "alias.bin")
    with pytest.raises(BastionError, match="same inode"):
        sign_model(model, keys[0], output=tmp_path / "alias.bin", force=True)
    res = runner.invoke(app, ["sign", str(model), "--key", str(keys[0]), "--format", "model-signing"])
    assert res.exit_code == 2 and "ECDSA" in res.output  # model-signing verifies no Ed25519 signature
    res = runner.invoke(app, ["sign", str(model), "--key", str(keys[0]), "--format", "sigstore"])
    assert res.exit_code == 2 and "bastion, model-signing" in res.output
    sign_model(model, keys[0])
    res = runner.invoke(app, ["verify", str(model)])
    assert res.exit_code == 2 and "--pub" in res.output and "--ca-bundle" in res.output

"""Interop with OpenSSF model-signing (the real package): each tool verifies the other's signatures.

Key-based (ECDSA P-256/P-384) and certificate-based (a test CA made here with ``cryptography``), both
directions, plus tampering that both must catch.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import model_signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from model_signing import hashing as ms_hashing

from bastion.sign import SignatureFormatError, keygen, sign_model, verify_model


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "digits-cnn"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"classes": 10}\n')
    (folder / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return folder


def _ms_verify_key(model: Path, sig: Path, pub: Path) -> None:
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384"])
def test_model_signing_verifies_bastion_key_signatures(model: Path, tmp_path: Path, key_type: str) -> None:
    private, public = keygen(tmp_path / "ec", key_type=key_type)
    sig = sign_model(model, private, format="model-signing")
    assert sig == model / "model.sig"
    _ms_verify_key(model, sig, public)
    assert verify_model(model, public).ok
    (model / "config.json").write_text('{"classes": 11}\n')
    with pytest.raises(ValueError, match=r"config\.json"):
        _ms_verify_key(model, sig, public)
    result = verify_model(model, public)
    assert result.signature_ok and result.changed == ["config.json"] and result.format == "model-signing"


def test_model_signing_cli_verifies_bastion_signature(model: Path, tmp_path: Path) -> None:
    private, public = keygen(tmp_path / "ec", key_type="ecdsa-p256")
    sig = sign_model(model, private, format="model-signing", output=tmp_path / "release.sig")
    cmd = [
        sys.executable,
        "-m",
        "model_signing",
        "verify",
        "key",
        str(model),
        "--signature",
        str(sig),
        "--public_key",
        str(public),
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stdout + ok.stderr
    (model / "sub" / "extra.bin").write_bytes(b"planted")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0


def test_bastion_verifies_model_signing_key_signatures(model: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "ms.key", tmp_path / "ms.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    files_sig, shards_sig = tmp_path / "files.sig", tmp_path / "shards.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(model, files_sig)
    signer = model_signing.signing.Config().use_elliptic_key_signer(private_key=private)
    signer.set_hashing_config(ms_hashing.Config().use_shard_serialization(shard_size=4096))
    signer.sign(model, shards_sig)
    for sig in (files_sig, shards_sig):
        result = verify_model(model, public, signature=sig)
        assert result.ok and result.format == "model-signing", result.reasons
        assert result.files == 2 and result.total_bytes == 10240 + 16
    data = bytearray((model / "sub" / "weights.bin").read_bytes())
    data[5000] ^= 1
    (model / "sub" / "weights.bin").write_bytes(bytes(data))
    assert verify_model(model, public, signature=files_sig).changed == ["sub/weights.bin"]
    shards = verify_model(model, public, signature=shards_sig)
    assert shards.changed == ["sub/weights.bin"] and "4096-8192" in shards.reasons[0]
    other = keygen(tmp_path / "other", key_type="ecdsa-p256")[1]
    assert not verify_model(model, other, signature=files_sig).signature_ok


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pki(folder: Path, tag: str) -> tuple[Path, Path, Path]:
    """A CA and a code-signing leaf under it: (ca.pem, leaf.pem, leaf key)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{tag} CA"))
        .issuer_name(_name(f"{tag} CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{tag} signer"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True)
    paths = folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].chmod(0o600)
    return paths


def test_certificate_signatures_both_ways(model: Path, tmp_path: Path) -> None:
    ca, leaf, key = _pki(tmp_path / "pki", "Release")
    other_ca, _, _ = _pki(tmp_path / "other", "Rogue")
    ours = sign_model(model, key, format="model-signing", certificate=leaf, output=tmp_path / "ours.sig")
    model_signing.verifying.Config().use_certificate_verifier(certificate_chain=[ca]).verify(model, ours)
    result = verify_model(model, signature=ours, ca_bundle=ca)
    assert result.ok and result.signer == "CN=Release signer"

    theirs = tmp_path / "theirs.sig"
    model_signing.signing.Config().use_certificate_signer(
        private_key=key, signing_certificate=leaf, certificate_chain=[ca]
    ).sign(model, theirs)
    assert verify_model(model, signature=theirs, ca_bundle=ca).ok
    rogue = verify_model(model, signature=theirs, ca_bundle=other_ca)
    assert (
        not rogue.ok and not rogue.signature_ok and "does not lead to the given CA bundle" in rogue.reasons[0]
    )
    # Bastion's own format carries a certificate chain the same way
    native = sign_model(model, key, certificate=leaf, output=tmp_path / "native.sig")
    assert verify_model(model, signature=native, ca_bundle=ca).ok
    assert not verify_model(model, signature=native, ca_bundle=other_ca).ok


def test_shards_layout_both_ways_with_an_empty_file(model: Path, tmp_path: Path) -> None:
    (model / "sub" / "__init__.py").write_bytes(b"")  # no shard, so no entry, in this layout (both tools)
    private, public = keygen(tmp_path / "ec", key_type="ecdsa-p256")
    sig = sign_model(model, private, format="model-signing", shard_size=4096, output=tmp_path / "s.sig")
    statement = json.loads(base64.b64decode(json.loads(sig.read_text())["dsseEnvelope"]["payload"]))
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert names == [
        "config.json:0:16",
        "sub/weights.bin:0:4096",
        "sub/weights.bin:4096:8192",
        "sub/weights.bin:8192:10240",
    ]
    assert statement["predicate"]["serialization"]["shard_size"] == 4096
    _ms_verify_key(model, sig, public)
    assert verify_model(model, public, signature=sig).ok
    (model / "sub" / "weights.bin").write_bytes(b"\0" * 10240)
    with pytest.raises(ValueError, match="weights"):
        _ms_verify_key(model, sig, public)
    assert verify_model(model, public, signature=sig).changed == ["sub/weights.bin"]


def test_keyless_sigstore_bundles_are_named_not_misverified(model: Path, tmp_path: Path) -> None:
    private, public = keygen(tmp_path / "ec", key_type="ecdsa-p256")
    sig = sign_model(model, private, format="model-signing")
    bundle = json.loads(sig.read_text())
    # the shape of a keyless bundle: a Fulcio certificate and a transparency-log entry
    bundle["verificationMaterial"] = {"certificate": {"rawBytes": "AA=="}, "tlogEntries": [{"logIndex": "1"}]}
    sig.write_text(json.dumps(bundle))
    with pytest.raises(SignatureFormatError, match=r"keyless Sigstore bundle.*model_signing verify sigstore"):
        verify_model(model, public)

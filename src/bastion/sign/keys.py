"""Ed25519 key pairs on disk: PEM PKCS#8 private key (mode 0600, optionally encrypted) and PEM public key."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.sign.errors import KeyFileError

PUBLIC_SUFFIX = ".pub"


def key_id(public_key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw 32-byte public key: names the key in envelopes without revealing anything."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _as_bytes(password: str | bytes | None) -> bytes | None:
    if password is None:
        return None
    out = password.encode("utf-8") if isinstance(password, str) else password
    if not out:
        raise KeyFileError("password: got an empty password, expected a non-empty one (or none at all)")
    return out


def _write_private(path: Path, data: bytes) -> None:
    # the file is created 0600 from the start (never world-readable, even for an instant) and moved into
    # place, so --force replaces an old key atomically and resets a looser mode it may have had
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)  # in case the umask or the platform ignored the mode above
    tmp.replace(path)


def keygen(path: str | Path, password: str | bytes | None = None, force: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: ``path`` (private, PKCS#8 PEM, 0600) and ``path.pub`` (public PEM).

    ``password`` encrypts the private key (PKCS#8 with the best encryption ``cryptography`` offers).
    Existing files are never overwritten unless ``force``. Returns ``(private_path, public_path)``.
    """
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + PUBLIC_SUFFIX)
    if private_path.name.endswith(PUBLIC_SUFFIX):
        raise KeyFileError(
            f"out: got {private_path}, expected the private key's path; {PUBLIC_SUFFIX} is appended for the public key"
        )
    if private_path.parent.exists() and not private_path.parent.is_dir():
        raise KeyFileError(f"out: {private_path.parent} is a file, expected a folder for the keys")
    if not force:
        existing = [str(p) for p in (private_path, public_path) if p.exists()]
        if existing:
            raise KeyFileError(
                f"out: {' and '.join(existing)} already exist; pass --force (force=True) to replace them"
            )
    secret = _as_bytes(password)
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret is not None else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The key folder is created owner-only: it holds a secret.
    private_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(private_path, private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def _read(path: str | Path, what: str) -> tuple[Path, bytes]:
    p = Path(path)
    if not p.exists():
        raise KeyFileError(f"{what}: no key file at {p}")
    if not p.is_file():
        raise KeyFileError(f"{what}: {p} is not a file")
    try:
        return p, p.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{what}: cannot read {p}: {exc.strerror}") from None


def load_private_key(path: str | Path, password: str | bytes | None = None) -> Ed25519PrivateKey:
    """Load an Ed25519 private key (PEM PKCS#8), decrypting it with ``password`` when it is encrypted."""
    p, data = _read(path, "key")
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise KeyFileError(
            f"key: {p} is a public key; signing needs the private key (without {PUBLIC_SUFFIX})"
        )
    try:
        key = serialization.load_pem_private_key(data, password=_as_bytes(password))
    except TypeError:
        # cryptography raises TypeError for "encrypted but no password" and "password but not encrypted"
        if password is None:
            raise KeyFileError(f"key: {p} is encrypted; give its password (--password-env VAR)") from None
        raise KeyFileError(f"key: {p} is not encrypted, but a password was given") from None
    except ValueError:
        if password is not None:
            raise KeyFileError(f"key: cannot decrypt {p}: wrong password, or not a PEM private key") from None
        raise KeyFileError(
            f"key: {p} is not a PEM private key (expected one written by `bastion keygen`)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key: {p} holds a {type(key).__name__}, expected an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key (PEM SubjectPublicKeyInfo, as ``bastion keygen`` writes to ``*.pub``)."""
    p, data = _read(path, "pub")
    if b"PRIVATE KEY" in data:
        raise KeyFileError(
            f"pub: {p} is a private key; verification needs the public key ({PUBLIC_SUFFIX} file)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(
            f"pub: {p} is not a PEM public key (expected the {PUBLIC_SUFFIX} file from `bastion keygen`)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"pub: {p} holds a {type(key).__name__}, expected an Ed25519 public key")
    return key

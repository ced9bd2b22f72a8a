"""Encrypted, signed registry backups (the seed's "secure backups", off-device).

A backup is a tar of AES-256-GCM sealed entries: the index (versions, events, object list) and every stored
object, each sealed with a fresh nonce and its own name as associated data, so entries cannot be swapped,
cut or altered without the tag failing. The plaintext index is also signed with the release key, so a
restore knows who made the backup, not only that it holds the encryption key. Restore checks everything
— signature, every tag, every object's SHA-256 — before it registers anything; a tampered or truncated
backup is refused, never half-restored.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import secrets
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.atomic import atomic_path
from bastion.errors import BastionError, InputError
from bastion.registry.api import Registry
from bastion.registry.db import EventRow, VersionRow, append_event

FORMAT = "bastion-registry-backup/1"
NONCE = 12


class BackupError(BastionError):
    """A backup is tampered, truncated, from another key, or conflicts with what is registered."""


def new_key(path: str | Path, *, force: bool = False) -> Path:
    """Write a random 256-bit backup key (hex), readable by its owner only."""
    p = Path(path)
    if p.exists() and not force:
        raise InputError("--out", f"{p}, which exists", "a new path (a backup key is never overwritten silently)")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return p


def load_key(path: str | Path) -> bytes:
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError("--key-file", str(p), "a backup key: 64 hex characters (bastion registry backup-key)") from exc
    if len(key) != 32:
        raise InputError("--key-file", f"{p} with {len(key)} bytes", "a 256-bit key (64 hex characters)")
    if os.stat(p).st_mode & 0o077:
        raise InputError("--key-file", f"{p}, readable by group or others", "a key file with mode 0600")
    return key


def _seal(aes: AESGCM, name: str, data: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE)
    return nonce + aes.encrypt(nonce, data, name.encode())


def _open(aes: AESGCM, name: str, blob: bytes) -> bytes:
    if len(blob) < NONCE + 16:
        raise BackupError(f"backup: entry {name} is truncated")
    try:
        return aes.decrypt(blob[:NONCE], blob[NONCE:], name.encode())
    except InvalidTag:
        raise BackupError(f"backup: entry {name} was altered, truncated, or sealed with another key") from None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def backup(reg: Registry, dest: str | Path, key_file: str | Path, signing_key: str | Path, *,
           force: bool = False, password: str | None = None) -> dict[str, Any]:
    from bastion.sign.keys import key_id, load_private_key, sign_bytes

    out = Path(dest)
    if out.exists() and not force:
        raise InputError("--to", f"{out}, which exists", "a new file, or --force")
    aes = AESGCM(load_key(key_file))
    priv = load_private_key(signing_key, password)
    with Session(reg.engine) as s:
        versions: list[dict[str, Any]] = [{"name": r.name, "version": r.version, "stage": r.stage, "created_at": r.created_at.isoformat(),
                     "files": r.files, "signature": r.signature, "scan": r.scan, "evidence": r.evidence}
                    for r in s.scalars(select(VersionRow).order_by(VersionRow.id))]
        events = [{"time": e.time, "action": e.action, "name": e.name, "version": e.version, "details": e.details}
                  for e in s.scalars(select(EventRow).order_by(EventRow.id))]
    digests = sorted({f["sha256"] for v in versions for f in v["files"].values()})
    index = {"format": FORMAT, "created": dt.datetime.now(dt.timezone.utc).isoformat(), "versions": versions,
             "events": events, "objects": digests, "signer": key_id(priv.public_key())}
    index_bytes = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
        _add(tar, "index.json.sealed", _seal(aes, "index.json", index_bytes))
        _add(tar, "index.sig", sign_bytes(priv, index_bytes))
        for d in digests:
            _add(tar, f"objects/{d}.sealed", _seal(aes, d, reg.store.open_verified(d).read_bytes()))
    return {"backup": str(out), "versions": len(versions), "objects": len(digests), "events": len(events)}


def restore(reg: Registry, source: str | Path, key_file: str | Path, public_key: str | Path) -> dict[str, Any]:
    import hashlib

    from bastion.sign.keys import load_public_key, verify_bytes

    aes = AESGCM(load_key(key_file))
    pub = load_public_key(public_key)
    src = Path(source)
    try:
        with tarfile.open(src, mode="r:") as tar:
            entries: dict[str, bytes] = {}
            for member in tar:
                if not member.isfile() or member.name in entries:
                    raise BackupError(f"backup: unexpected entry {member.name!r}")
                fh = tar.extractfile(member)
                assert fh is not None
                entries[member.name] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"backup: {src} is not a complete backup archive ({exc})") from None
    if "index.json.sealed" not in entries or "index.sig" not in entries:
        raise BackupError(f"backup: {src} has no sealed, signed index")
    index_bytes = _open(aes, "index.json", entries["index.json.sealed"])
    try:
        verify_bytes(pub, entries["index.sig"], index_bytes)
    except InvalidSignature:
        raise BackupError("backup: the index's signature does not verify with the given public key") from None
    index = json.loads(index_bytes)
    if index.get("format") != FORMAT:
        raise BackupError(f"backup: format {index.get('format')!r}, expected {FORMAT}")
    blobs: dict[str, bytes] = {}
    for d in index["objects"]:
        name = f"objects/{d}.sealed"
        if name not in entries:
            raise BackupError(f"backup: object {d[:12]}... is missing (truncated backup)")
        data = _open(aes, d, entries[name])
        if hashlib.sha256(data).hexdigest() != d:
            raise BackupError(f"backup: object {d[:12]}... does not match its digest")
        blobs[d] = data
    extra = set(entries) - {"index.json.sealed", "index.sig"} - {f"objects/{d}.sealed" for d in index["objects"]}
    if extra:
        raise BackupError(f"backup: entries not in the signed index: {sorted(extra)[:3]}")
    with Session(reg.engine) as s:
        clash = [f"{v['name']} {v['version']}" for v in index["versions"]
                 if s.scalars(select(VersionRow).where(VersionRow.name == v["name"],
                                                       VersionRow.version == v["version"])).first()]
    if clash:
        raise BackupError(f"backup: already registered here: {', '.join(clash[:5])} (restore into an empty registry)")
    # Everything checked: now write. Objects first (content-addressed, harmless if the DB step fails).
    with tempfile.TemporaryDirectory() as tmp:
        for d, data in blobs.items():
            p = Path(tmp) / d
            p.write_bytes(data)
            reg.store.put(p)
    with Session(reg.writer) as s, s.begin():
        for v in index["versions"]:
            s.add(VersionRow(name=v["name"], version=v["version"], stage=v["stage"],
                             created_at=dt.datetime.fromisoformat(v["created_at"]), files=v["files"],
                             signature=v["signature"], scan=v["scan"], evidence=v["evidence"]))
        append_event(s, "restore", "*", "*", {"backup": src.name, "versions": len(index["versions"]),
                                              "created": index["created"], "signer": index.get("signer", ""),
                                              "original_events": len(index["events"])})
    return {"restored_versions": len(index["versions"]), "objects": len(blobs), "created": index["created"]}

"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1) signed with Ed25519 or ECDSA.

The signature covers the Pre-Authentication Encoding (PAE) of the payload type and the payload bytes,
never the JSON around them, so re-serialising the envelope cannot change what was signed and a payload
cannot be replayed under another type.

On disk the envelope sits inside a Sigstore bundle (``mediaType`` v0.3). Its ``verificationMaterial``
names the key by hint (key-based signing, the layout OpenSSF model-signing writes) or carries the signing
certificate and its chain (``x509CertificateChain``, DER, leaf first), or, for keyless Sigstore bundles,
a certificate and transparency-log entries. A bare envelope is read too.

Every JSON object read here is parsed strictly: a key that appears twice is an error, since two parsers
that keep different copies could be made to disagree about what was signed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from bastion.sign.errors import SignatureFormatError
from bastion.sign.keys import PrivateKey, PublicKey, key_id, sign_bytes, verify_bytes

PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
#: older bundle media types a keyless Sigstore signer may have written
_BUNDLE_MEDIA_TYPES = (
    BUNDLE_MEDIA_TYPE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
)


def pae(payload_type: str, payload: bytes) -> bytes:
    """``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths as ASCII decimal byte counts."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SignatureFormatError(f"JSON object has the key {k!r} twice; refusing an ambiguous document")
        out[k] = v
    return out


def strict_json(text: str | bytes) -> Any:
    """``json.loads`` that rejects duplicate keys (and NaN/Infinity, which JSON does not have)."""

    def no_constants(name: str) -> Any:
        raise SignatureFormatError(f"JSON holds {name}, which is not valid JSON")

    return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=no_constants)


@dataclass(frozen=True)
class EnvelopeSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[EnvelopeSignature, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")} for s in self.signatures
            ],
        }

    @classmethod
    def from_json(cls, obj: Any) -> Envelope:
        if not isinstance(obj, Mapping):
            raise SignatureFormatError("dsseEnvelope: expected a JSON object")
        payload_type = obj.get("payloadType")
        if not isinstance(payload_type, str):
            raise SignatureFormatError("dsseEnvelope.payloadType: missing or not a string")
        payload = b64decode(obj.get("payload"), "dsseEnvelope.payload")
        raw_sigs = obj.get("signatures")
        if not isinstance(raw_sigs, list) or not raw_sigs:
            raise SignatureFormatError("dsseEnvelope.signatures: expected a non-empty list")
        sigs = []
        for i, raw in enumerate(raw_sigs):
            if not isinstance(raw, Mapping):
                raise SignatureFormatError(f"dsseEnvelope.signatures[{i}]: expected an object")
            keyid = raw.get("keyid", "")
            if not isinstance(keyid, str):
                raise SignatureFormatError(f"dsseEnvelope.signatures[{i}].keyid: expected a string")
            sigs.append(
                EnvelopeSignature(keyid, b64decode(raw.get("sig"), f"dsseEnvelope.signatures[{i}].sig"))
            )
        return cls(payload, payload_type, tuple(sigs))


@dataclass(frozen=True)
class Bundle:
    """A signature file: the envelope plus what the bundle says about who signed it."""

    envelope: Envelope
    media_type: str = ""
    key_hint: str | None = None  # verificationMaterial.publicKey.hint
    certificates: tuple[bytes, ...] = ()  # DER, leaf first (x509CertificateChain or a single certificate)
    tlog_entries: int = 0  # transparency-log entries (keyless Sigstore)

    @property
    def is_keyless(self) -> bool:
        return self.tlog_entries > 0


def b64decode(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureFormatError(f"{where}: missing or not a string")
    # DSSE allows standard or URL-safe base64; map the URL-safe alphabet and accept missing padding
    text = value.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureFormatError(f"{where}: not valid base64") from None


def sign_envelope(
    payload: bytes, private_key: PrivateKey, payload_type: str = PAYLOAD_TYPE, keyid: str | None = None
) -> Envelope:
    """Sign ``payload`` as DSSE: the key's signature over PAE(payload_type, payload)."""
    sig = sign_bytes(private_key, pae(payload_type, payload))
    kid = key_id(private_key.public_key()) if keyid is None else keyid
    return Envelope(payload, payload_type, (EnvelopeSignature(kid, sig),))


def verify_envelope(envelope: Envelope, public_key: PublicKey) -> tuple[bool, list[str]]:
    """Whether some signature in ``envelope`` verifies under ``public_key``; if not, why not."""
    expected_id = key_id(public_key)
    message = pae(envelope.payload_type, envelope.payload)
    for s in envelope.signatures:
        try:
            verify_bytes(public_key, s.sig, message)
            return True, []
        except (InvalidSignature, ValueError):
            continue
    other = sorted({s.keyid for s in envelope.signatures if s.keyid and s.keyid != expected_id})
    if other and not any(s.keyid == expected_id for s in envelope.signatures):
        return False, [
            f"signature: made by key {', '.join(other)}, not by the given public key {expected_id}: "
            "wrong key, or the signature was replaced"
        ]
    return False, [
        "signature: does not verify with the given public key: the manifest inside the envelope or the "
        "signature bytes were altered (forged or tampered signature file), or another key signed it"
    ]


def bundle_json(
    envelope: Envelope, *, key_hint: str | None = None, certificates: tuple[bytes, ...] = ()
) -> dict[str, Any]:
    """The Sigstore bundle v0.3 object around ``envelope`` (key hint, or certificate chain leaf first)."""
    material: dict[str, Any]
    if certificates:
        material = {
            "x509CertificateChain": {
                "certificates": [{"rawBytes": base64.b64encode(c).decode("ascii")} for c in certificates]
            },
            "tlogEntries": [],
        }
    else:
        if key_hint is None:
            keyids = sorted({s.keyid for s in envelope.signatures})
            key_hint = keyids[0] if keyids else ""
        material = {"publicKey": {"hint": key_hint}, "tlogEntries": []}
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": envelope.to_json(),
    }


def temp_path(path: Path) -> Path:
    """Where :func:`write_signature_file` stages ``path`` (a fixed name, so a leftover can be ignored)."""
    return path.with_name(f".{path.name}.tmp")


def write_bytes_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file that is fsynced, renamed over it, and the folder fsynced:
    after a crash the file is either the old one or the complete new one, never half of either."""
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)  # our own leftover from an interrupted run
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_signature_file(
    envelope: Envelope, path: Path, *, key_hint: str | None = None, certificates: tuple[bytes, ...] = ()
) -> None:
    """Write ``envelope`` inside a Sigstore bundle, durably and atomically."""
    bundle = bundle_json(envelope, key_hint=key_hint, certificates=certificates)
    write_bytes_durably(path, (json.dumps(bundle, indent=2) + "\n").encode("utf-8"))


def read_bundle(path: Path) -> Bundle:
    """Read a bundle (or bare DSSE envelope) from ``path``; :class:`SignatureFormatError` when it is none."""
    if not path.exists():
        raise SignatureFormatError(
            f"signature: no signature file at {path} (sign the model first, or pass --signature)"
        )
    if not path.is_file():
        raise SignatureFormatError(f"signature: {path} is not a file")
    if path.stat().st_size > 256 << 20:
        raise SignatureFormatError(f"signature: {path} is over 256 MiB, too large to be a signature file")
    try:
        obj = strict_json(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise SignatureFormatError(f"signature: {path} is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise SignatureFormatError(
            f"signature: {path} is not JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    except SignatureFormatError as exc:
        raise SignatureFormatError(f"signature file {path} is malformed: {exc}") from None
    try:
        if isinstance(obj, Mapping) and "dsseEnvelope" in obj:
            return _parse_bundle(obj)
        return Bundle(Envelope.from_json(obj))
    except SignatureFormatError as exc:
        raise SignatureFormatError(f"signature file {path} is malformed: {exc}") from None


def _parse_bundle(obj: Mapping[str, Any]) -> Bundle:
    envelope = Envelope.from_json(obj["dsseEnvelope"])
    media = obj.get("mediaType", "")
    if not isinstance(media, str) or (media and media not in _BUNDLE_MEDIA_TYPES):
        raise SignatureFormatError(f"mediaType: got {media!r}, expected {BUNDLE_MEDIA_TYPE!r}")
    material = obj.get("verificationMaterial", {})
    if not isinstance(material, Mapping):
        raise SignatureFormatError("verificationMaterial: expected an object")
    hint: str | None = None
    certs: list[bytes] = []
    public = material.get("publicKey")
    if isinstance(public, Mapping):
        raw_hint = public.get("hint")
        if raw_hint is not None and not isinstance(raw_hint, str):
            raise SignatureFormatError("verificationMaterial.publicKey.hint: expected a string")
        hint = raw_hint
    chain = material.get("x509CertificateChain")
    if chain is not None:
        entries = chain.get("certificates") if isinstance(chain, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise SignatureFormatError(
                "verificationMaterial.x509CertificateChain.certificates: expected a list"
            )
        for i, entry in enumerate(entries):
            raw = entry.get("rawBytes") if isinstance(entry, Mapping) else None
            certs.append(b64decode(raw, f"x509CertificateChain.certificates[{i}].rawBytes"))
    single = material.get("certificate")
    if single is not None:
        raw = single.get("rawBytes") if isinstance(single, Mapping) else None
        certs.append(b64decode(raw, "verificationMaterial.certificate.rawBytes"))
    tlog = material.get("tlogEntries", [])
    if not isinstance(tlog, list):
        raise SignatureFormatError("verificationMaterial.tlogEntries: expected a list")
    return Bundle(envelope, media, hint, tuple(certs), len(tlog))


def read_signature_file(path: Path) -> Envelope:
    """The DSSE envelope of the signature file at ``path`` (see :func:`read_bundle`)."""
    return read_bundle(path).envelope

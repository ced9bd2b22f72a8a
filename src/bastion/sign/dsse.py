"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1) signed with Ed25519.

The signature covers the Pre-Authentication Encoding (PAE) of the payload type and the payload bytes,
never the JSON around them, so re-serialising the envelope cannot change what was signed and a payload
cannot be replayed under another type.

On disk the envelope sits inside a Sigstore bundle (``mediaType`` v0.3, ``verificationMaterial`` naming
the key by hint), the file layout OpenSSF model-signing writes for key-based signatures; a bare envelope
is read too.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.sign.errors import SignatureFormatError
from bastion.sign.keys import key_id

PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths as ASCII decimal byte counts."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


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
        payload = _b64decode(obj.get("payload"), "dsseEnvelope.payload")
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
                EnvelopeSignature(keyid, _b64decode(raw.get("sig"), f"dsseEnvelope.signatures[{i}].sig"))
            )
        return cls(payload, payload_type, tuple(sigs))


def _b64decode(value: Any, where: str) -> bytes:
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
    payload: bytes, private_key: Ed25519PrivateKey, payload_type: str = PAYLOAD_TYPE
) -> Envelope:
    """Sign ``payload`` as DSSE: Ed25519 over PAE(payload_type, payload)."""
    sig = private_key.sign(pae(payload_type, payload))
    return Envelope(payload, payload_type, (EnvelopeSignature(key_id(private_key.public_key()), sig),))


def verify_envelope(envelope: Envelope, public_key: Ed25519PublicKey) -> tuple[bool, list[str]]:
    """Whether some signature in ``envelope`` verifies under ``public_key``; if not, why not."""
    expected_id = key_id(public_key)
    message = pae(envelope.payload_type, envelope.payload)
    for s in envelope.signatures:
        try:
            public_key.verify(s.sig, message)
            return True, []
        except InvalidSignature:
            continue
    other = sorted({s.keyid for s in envelope.signatures if s.keyid and s.keyid != expected_id})
    if other and not any(s.keyid == expected_id for s in envelope.signatures):
        return False, [
            f"signature: made by key {', '.join(other)}, not by the given public key {expected_id}: "
            "wrong key, or the signature was replaced"
        ]
    return False, [
        "signature: does not verify with the given public key: the manifest inside the envelope or the "
        "signature bytes were altered (forged or tampered signature file)"
    ]


def write_signature_file(envelope: Envelope, path: Path) -> None:
    """Write ``envelope`` inside a Sigstore-style bundle, atomically (a crash never leaves half a file)."""
    keyids = sorted({s.keyid for s in envelope.signatures})
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": keyids[0] if keyids else ""}},
        "dsseEnvelope": envelope.to_json(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(bundle, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_signature_file(path: Path) -> Envelope:
    """Read a bundle (or bare DSSE envelope) from ``path``; :class:`SignatureFormatError` when it is none."""
    if not path.exists():
        raise SignatureFormatError(
            f"signature: no signature file at {path} (sign the model first, or pass --signature)"
        )
    if not path.is_file():
        raise SignatureFormatError(f"signature: {path} is not a file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SignatureFormatError(f"signature: {path} is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise SignatureFormatError(
            f"signature: {path} is not JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if isinstance(obj, Mapping) and "dsseEnvelope" in obj:
        obj = obj["dsseEnvelope"]
    try:
        return Envelope.from_json(obj)
    except SignatureFormatError as exc:
        raise SignatureFormatError(f"signature file {path} is malformed: {exc}") from None

"""Certificate (PKI) signing: the signer's certificate travels in the bundle, a verifier trusts a CA bundle.

The chain in the bundle (leaf first, then intermediates) is validated against the given CA certificates
with ``cryptography``'s X.509 path builder: CA certificates must be real CAs (basic constraints, key
usage), and the leaf must allow signing (key usage digitalSignature or extended key usage codeSigning),
as model-signing requires. Without a trusted timestamp there is no signing time to check validity at, so,
like model-signing, the chain is validated at the moment the leaf was issued; say so in a report.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.sign.errors import KeyFileError
from bastion.sign.keys import PublicKey


def load_certificates(path: str | Path, what: str) -> list[x509.Certificate]:
    """Every PEM certificate in ``path`` (a bundle may hold several)."""
    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"{what}: no certificate file at {p}")
    try:
        certs = x509.load_pem_x509_certificates(p.read_bytes())
    except ValueError:
        raise KeyFileError(f"{what}: {p} holds no PEM certificate") from None
    return certs


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def verify_chain(
    chain: tuple[bytes, ...], roots: list[x509.Certificate]
) -> tuple[PublicKey | None, str, list[str]]:
    """Validate ``chain`` (DER, leaf first) up to one of ``roots``; returns (leaf key, subject, problems)."""
    try:
        certs = [x509.load_der_x509_certificate(c) for c in chain]
    except ValueError:
        return None, "", ["certificate: a certificate in the bundle is not valid DER"]
    leaf = certs[0]
    subject = leaf.subject.rfc4514_string()
    key = leaf.public_key()
    if not isinstance(key, (ec.EllipticCurvePublicKey, Ed25519PublicKey)):
        return (
            None,
            subject,
            [f"certificate: {subject} holds a {type(key).__name__}, expected an ECDSA or Ed25519 key"],
        )
    if not _can_sign(leaf):
        return (
            None,
            subject,
            [f"certificate: {subject} does not allow signing (key usage / extended key usage)"],
        )
    policy = (
        xv.PolicyBuilder()
        .store(xv.Store(roots))
        .time(leaf.not_valid_before_utc)
        .extension_policies(
            ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=xv.ExtensionPolicy.permit_all()
        )
    )
    try:
        policy.build_client_verifier().verify(leaf, certs[1:])
    except xv.VerificationError as exc:
        return (
            None,
            subject,
            [f"certificate: chain of {subject} does not lead to the given CA bundle ({exc})"],
        )
    return key, subject, []


def _can_sign(cert: x509.Certificate) -> bool:
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        return (
            ExtendedKeyUsageOID.CODE_SIGNING
            in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        )
    except x509.ExtensionNotFound:
        return False

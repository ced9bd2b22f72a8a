"""Key pairs on disk: Ed25519 or ECDSA (P-256, P-384, P-521) as PEM PKCS#8 private key (mode 0600,
optionally encrypted with scrypt) and PEM public key.

ECDSA keys are what OpenSSF model-signing and most PKIs use; each curve signs with the hash of matching
strength (P-256 with SHA-256, P-384 with SHA-384, P-521 with SHA-512), as model-signing and Sigstore do.

A private key that group or others can read is refused, as ssh refuses one: whoever can read it can sign
as its owner. ``insecure_permissions=True`` (``--insecure-key-permissions``) overrides that on purpose.

Encrypted keys are standard PKCS#8 ``ENCRYPTED PRIVATE KEY`` (PBES2 with scrypt and AES-256-CBC, which
OpenSSL and ``cryptography`` read). ``cryptography``'s own PKCS#8 encryption derives the key with 2,048
rounds of PBKDF2, about a millisecond of guessing per password, so the container is written here with
scrypt at N=2**14, r=8, p=5: OWASP's equivalent of N=2**17, r=8, p=1, and within the 32 MiB OpenSSL
allows scrypt by default, so ``openssl pkey`` still opens the file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from bastion.sign.errors import KeyFileError

PUBLIC_SUFFIX = ".pub"
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

#: ``--type`` values of ``bastion keygen`` and the curve behind each ECDSA one
KEY_TYPES: dict[str, ec.EllipticCurve | None] = {
    "ed25519": None,
    "ecdsa-p256": ec.SECP256R1(),
    "ecdsa-p384": ec.SECP384R1(),
    "ecdsa-p521": ec.SECP521R1(),
}
_CURVE_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
#: scrypt cost for encrypted keys (see the module docstring)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 5

# DER object identifiers of the PKCS#8 encryption written below (RFC 8018, RFC 7914, NIST)
_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"


def key_type(key: PrivateKey | PublicKey) -> str:
    """``ed25519`` or ``ecdsa-p256`` / ``-p384`` / ``-p521``."""
    if isinstance(key, (Ed25519PrivateKey, Ed25519PublicKey)):
        return "ed25519"
    return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}[key.curve.name]


def key_id(public_key: PublicKey) -> str:
    """Hex SHA-256 naming the key in envelopes: of the raw 32 bytes for Ed25519 (as before), of the
    PEM SubjectPublicKeyInfo for ECDSA (the hint model-signing writes, so both tools name a key alike)."""
    if isinstance(public_key, Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()
    return pem_hint(public_key)


def pem_hint(public_key: PublicKey) -> str:
    """model-signing's key hint: SHA-256 of the public key's PEM SubjectPublicKeyInfo, hex."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def sign_bytes(private_key: PrivateKey, message: bytes) -> bytes:
    """Ed25519 signature, or DER ECDSA signature with the curve's hash."""
    if isinstance(private_key, Ed25519PrivateKey):
        return private_key.sign(message)
    return private_key.sign(message, ec.ECDSA(_CURVE_HASH[private_key.curve.name]()))


def verify_bytes(public_key: PublicKey, signature: bytes, message: bytes) -> None:
    """Raise ``cryptography.exceptions.InvalidSignature`` unless ``signature`` is valid for ``message``."""
    if isinstance(public_key, Ed25519PublicKey):
        public_key.verify(signature, message)
    else:
        public_key.verify(signature, message, ec.ECDSA(_CURVE_HASH[public_key.curve.name]()))


def _as_bytes(password: str | bytes | None) -> bytes | None:
    if password is None:
        return None
    out = password.encode("utf-8") if isinstance(password, str) else password
    if not out:
        raise KeyFileError("password: got an empty password, expected a non-empty one (or none at all)")
    return out


# --- a minimal DER writer for EncryptedPrivateKeyInfo ---------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    nums = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * nums[0] + nums[1]])
    for n in nums[2:]:
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


def _octets(data: bytes) -> bytes:
    return _der(0x04, data)


def encrypt_pkcs8(private_key: PrivateKey, password: bytes) -> bytes:
    """PEM ``ENCRYPTED PRIVATE KEY``: PBES2(scrypt, AES-256-CBC) over the key's PKCS#8 DER."""
    plain = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, iv = os.urandom(16), os.urandom(16)
    aes_key = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(password)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    kdf = _seq(
        _oid(_OID_SCRYPT), _seq(_octets(salt), _int(SCRYPT_N), _int(SCRYPT_R), _int(SCRYPT_P), _int(32))
    )
    scheme = _seq(_oid(_OID_AES256_CBC), _octets(iv))
    der = _seq(_seq(_oid(_OID_PBES2), _seq(kdf, scheme)), _octets(encrypted))
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
        + "\n".join(lines)
        + "\n-----END ENCRYPTED PRIVATE KEY-----\n"
    ).encode()


def _write_private(path: Path, data: bytes) -> None:
    # the file is created 0600 from the start (never world-readable, even for an instant) and moved into
    # place, so --force replaces an old key atomically and resets a looser mode it may have had
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)  # in case the umask or the platform ignored the mode above
    tmp.replace(path)


def keygen(
    path: str | Path, password: str | bytes | None = None, force: bool = False, key_type: str = "ed25519"
) -> tuple[Path, Path]:
    """Write a new key pair: ``path`` (private, PKCS#8 PEM, 0600) and ``path.pub`` (public PEM).

    ``key_type`` is ``ed25519`` (default) or ``ecdsa-p256`` / ``ecdsa-p384`` / ``ecdsa-p521`` (the keys
    OpenSSF model-signing accepts). ``password`` encrypts the private key with scrypt. Existing files are
    never overwritten unless ``force``. Returns ``(private_path, public_path)``.
    """
    if key_type not in KEY_TYPES:
        raise KeyFileError(f"key_type: got {key_type!r}, expected one of {', '.join(KEY_TYPES)}")
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + PUBLIC_SUFFIX)
    if private_path.name.endswith(PUBLIC_SUFFIX):
        raise KeyFileError(
            f"out: got {private_path}, expected the private key's path; {PUBLIC_SUFFIX} is appended for the public key"
        )
    if private_path.parent.exists() and not private_path.parent.is_dir():
        raise KeyFileError(f"out: {private_path.parent} is a file, expected a folder for the keys")
    for p in (private_path, public_path):
        if p.is_dir():
            raise KeyFileError(f"out: {p} is a folder, expected a path for a key file")
    if not force:
        existing = [str(p) for p in (private_path, public_path) if p.exists() or p.is_symlink()]
        if existing:
            raise KeyFileError(
                f"out: {' and '.join(existing)} already exist; pass --force (force=True) to replace them"
            )
    secret = _as_bytes(password)
    curve = KEY_TYPES[key_type]
    key: PrivateKey = Ed25519PrivateKey.generate() if curve is None else ec.generate_private_key(curve)
    if secret is not None:
        private_pem = encrypt_pkcs8(key, secret)
    else:
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The key folder is created owner-only: it holds a secret.
    private_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(private_path, private_pem)
    tmp = public_path.with_name(f".{public_path.name}.tmp")
    tmp.write_bytes(public_pem)
    tmp.replace(public_path)  # replaces a link at that path, never writes through it
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


def check_private_permissions(path: Path) -> None:
    """Refuse a private key file that group or others may read or write (POSIX only, as ssh does)."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"key: {path} has mode {mode:04o}, readable or writable by group or others; expected 0600 "
            f"(run `chmod 600 {path}`, or pass --insecure-key-permissions if you accept the risk)"
        )


def _supported(key: object, p: Path, what: str) -> None:
    if isinstance(key, (Ed25519PrivateKey, Ed25519PublicKey)):
        return
    if (
        isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey))
        and key.curve.name in _CURVE_HASH
    ):
        return
    detail = (
        f"an EC key on {key.curve.name}"
        if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey))
        else f"a {type(key).__name__}"
    )
    raise KeyFileError(f"{what}: {p} holds {detail}, expected an Ed25519 or ECDSA P-256/P-384/P-521 key")


def load_private_key(
    path: str | Path, password: str | bytes | None = None, *, insecure_permissions: bool = False
) -> PrivateKey:
    """Load an Ed25519 or ECDSA private key (PEM, PKCS#8 or traditional), decrypting it with ``password``.

    Refuses a key file readable by group or others unless ``insecure_permissions``.
    """
    p, data = _read(path, "key")
    if b"PRIVATE KEY" not in data and (b"PUBLIC KEY" in data or b"CERTIFICATE" in data):
        raise KeyFileError(
            f"key: {p} is a public key or certificate; signing needs the private key (without {PUBLIC_SUFFIX})"
        )
    if not insecure_permissions:
        check_private_permissions(p)
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
    _supported(key, p, "key")
    assert isinstance(key, (Ed25519PrivateKey, ec.EllipticCurvePrivateKey))
    return key


def load_public_key(path: str | Path) -> PublicKey:
    """Load an Ed25519 or ECDSA public key (PEM SubjectPublicKeyInfo, as ``bastion keygen`` writes)."""
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
    _supported(key, p, "pub")
    assert isinstance(key, (Ed25519PublicKey, ec.EllipticCurvePublicKey))
    return key

"""Signing and integrity: a signed manifest of every file in a model folder.

    from bastion import sign
    sign.keygen("keys/release")                              # keys/release (0600) + keys/release.pub
    sign.sign_model("my-model/", "keys/release")             # writes my-model/model.sig
    result = sign.verify_model("my-model/", "keys/release.pub")
    result.ok, result.added, result.missing, result.changed  # every difference, by name

The manifest lists each file's SHA-256 (large files as parallel-hashed shards), wrapped as an in-toto
Statement v1 in a DSSE envelope signed with Ed25519 or ECDSA (P-256/384/521), optionally with a
certificate chain, in a Sigstore bundle. ``format="model-signing"`` writes OpenSSF model-signing v1.0's
exact payload; ``verify_model`` reads both formats.
"""

from bastion.sign.api import (
    FORMATS,
    SIGNATURE_NAME,
    SignResult,
    VerifyResult,
    sign_model,
    sign_model_detailed,
    verify_model,
)
from bastion.sign.dsse import Envelope, pae, read_signature_file, sign_envelope, verify_envelope
from bastion.sign.errors import KeyFileError, ManifestError, SignatureFormatError, SigningError
from bastion.sign.hashing import DEFAULT_IGNORE, DEFAULT_SHARD_SIZE, hash_files, scan_folder
from bastion.sign.keys import key_id, keygen, load_private_key, load_public_key
from bastion.sign.manifest import PREDICATE_TYPE, HashConfig, Manifest, Resource, build_manifest

__all__ = [
    "DEFAULT_IGNORE",
    "DEFAULT_SHARD_SIZE",
    "FORMATS",
    "PREDICATE_TYPE",
    "SIGNATURE_NAME",
    "Envelope",
    "HashConfig",
    "KeyFileError",
    "Manifest",
    "ManifestError",
    "Resource",
    "SignResult",
    "SignatureFormatError",
    "SigningError",
    "VerifyResult",
    "build_manifest",
    "hash_files",
    "key_id",
    "keygen",
    "load_private_key",
    "load_public_key",
    "pae",
    "read_signature_file",
    "scan_folder",
    "sign_envelope",
    "sign_model",
    "sign_model_detailed",
    "verify_envelope",
    "verify_model",
]

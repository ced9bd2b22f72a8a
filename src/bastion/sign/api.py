"""Sign a model folder and verify it later: the two calls most users need."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bastion.sign.dsse import (
    PAYLOAD_TYPE,
    read_signature_file,
    sign_envelope,
    verify_envelope,
    write_signature_file,
)
from bastion.sign.errors import ManifestError, SignatureFormatError
from bastion.sign.hashing import (
    DEFAULT_IGNORE,
    DEFAULT_SHARD_SIZE,
    ProgressHook,
    normalize_patterns,
    shard_ranges,
)
from bastion.sign.keys import key_id, load_private_key, load_public_key
from bastion.sign.manifest import ALG_SYMLINK, HashConfig, Manifest, Resource, check_model_dir, collect

#: written next to the model files unless told otherwise (the name model-signing uses)
SIGNATURE_NAME = "model.sig"


@dataclass
class VerifyResult:
    """What :func:`verify_model` found. ``ok`` only when the signature holds and every file matches.

    ``added``, ``missing`` and ``changed`` are relative POSIX paths; ``reasons`` has one readable line per
    problem (each file, the signature, the manifest), in the order a report should show them.
    """

    ok: bool
    added: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    signature_ok: bool = False
    reasons: list[str] = field(default_factory=list)
    model_name: str = ""
    root_digest: str = ""
    key_id: str = ""
    files: int = 0
    total_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inside(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` as a POSIX path, or None when it lies outside."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


@dataclass(frozen=True)
class SignResult:
    """What :func:`sign_model_detailed` wrote: the signature file, the signed manifest and the key's id."""

    path: Path
    manifest: Manifest
    key_id: str


def sign_model(
    model_dir: str | Path,
    private_key_path: str | Path,
    *,
    output: str | Path | None = None,
    password: str | bytes | None = None,
    ignore: Iterable[str] = (),
    shard_size: int = DEFAULT_SHARD_SIZE,
    allow_symlinks: bool = False,
    default_ignore: bool = True,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    on_total: ProgressHook | None = None,
) -> Path:
    """Hash ``model_dir``, sign its manifest with the Ed25519 key, and write the signature file.

    The signature goes to ``MODEL_DIR/model.sig`` unless ``output`` says otherwise; when it lies inside
    the folder it is left out of the manifest (and recorded as ignored, so verification skips it too).
    Returns the signature's path. See :func:`bastion.sign.build_manifest` for the hashing options;
    ``password`` unlocks an encrypted key.
    """
    return sign_model_detailed(
        model_dir,
        private_key_path,
        output=output,
        password=password,
        ignore=ignore,
        shard_size=shard_size,
        allow_symlinks=allow_symlinks,
        default_ignore=default_ignore,
        workers=workers,
        progress=progress,
        on_total=on_total,
    ).path


def sign_model_detailed(
    model_dir: str | Path,
    private_key_path: str | Path,
    *,
    output: str | Path | None = None,
    password: str | bytes | None = None,
    ignore: Iterable[str] = (),
    shard_size: int = DEFAULT_SHARD_SIZE,
    allow_symlinks: bool = False,
    default_ignore: bool = True,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    on_total: ProgressHook | None = None,
) -> SignResult:
    """:func:`sign_model`, returning the signed manifest and key id as well (for reports and the CLI)."""
    folder = check_model_dir(model_dir)
    key = load_private_key(private_key_path, password)  # before hashing: a wrong password fails fast
    sig_path = Path(output) if output is not None else folder / SIGNATURE_NAME
    if sig_path.is_dir():
        raise ManifestError(f"output: {sig_path} is a folder, expected the signature file's path")
    if not sig_path.parent.is_dir():
        raise ManifestError(f"output: folder {sig_path.parent} does not exist")
    if shard_size < 1:
        raise ManifestError(f"shard_size: got {shard_size}, expected a positive number of bytes")
    patterns = [*(DEFAULT_IGNORE if default_ignore else ()), *ignore]
    rel_sig = _inside(sig_path, folder)
    if rel_sig is not None:
        patterns.append(rel_sig)
    config = HashConfig(shard_size, allow_symlinks, normalize_patterns(patterns))
    manifest, _ = collect(folder, config, workers, progress, on_total, refuse=True)
    # compact, key-sorted JSON: the bytes signed are the bytes stored, so no canonical form is needed later
    payload = json.dumps(manifest.to_statement(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    envelope = sign_envelope(payload, key)
    write_signature_file(envelope, sig_path)
    return SignResult(sig_path, manifest, envelope.signatures[0].keyid)


def _describe_change(signed: Resource, now: Resource, shard_size: int) -> str:
    if signed.algorithm == ALG_SYMLINK or now.algorithm == ALG_SYMLINK:
        if signed.algorithm != now.algorithm:
            was = "a symlink" if signed.algorithm == ALG_SYMLINK else "a file"
            is_ = "a symlink" if now.algorithm == ALG_SYMLINK else "a file"
            return f"was {was} when signed, is now {is_}"
        return f"symlink now points to {now.target!r}, signed pointing to {signed.target!r}"
    if signed.size != now.size:
        return f"size {now.size} bytes, signed {signed.size} bytes"
    if signed.shards and now.shards:
        ranges = shard_ranges(signed.size or 0, shard_size)
        bad = [f"{a}-{b}" for (a, b), s, n in zip(ranges, signed.shards, now.shards, strict=False) if s != n]
        return f"content differs in byte range(s) {', '.join(bad)}"
    return f"content differs (sha256 {now.digest[:16]}…, signed {signed.digest[:16]}…)"


def verify_model(
    model_dir: str | Path,
    public_key_path: str | Path,
    *,
    signature: str | Path | None = None,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    on_total: ProgressHook | None = None,
) -> VerifyResult:
    """Check that ``model_dir`` is exactly what the key's owner signed.

    Returns a :class:`VerifyResult` naming every added, missing and changed file and any problem with the
    signature (forged, altered, made by another key). Raises a :class:`~bastion.errors.BastionError`
    subclass only when the check cannot run: no folder, unreadable key, no or malformed signature file.
    Files are re-hashed with the configuration recorded in the signed manifest, even when the signature
    fails, so a report can still say which files differ from what the envelope claims.
    """
    folder = check_model_dir(model_dir)
    public_key = load_public_key(public_key_path)
    sig_path = Path(signature) if signature is not None else folder / SIGNATURE_NAME
    envelope = read_signature_file(sig_path)
    result = VerifyResult(ok=False, key_id=key_id(public_key))

    result.signature_ok, sig_reasons = verify_envelope(envelope, public_key)
    result.reasons += sig_reasons
    if envelope.payload_type != PAYLOAD_TYPE:
        result.signature_ok = False
        result.reasons.append(f"envelope: payload type {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}")

    try:
        statement = json.loads(envelope.payload.decode("utf-8"))
        manifest, claimed_root = Manifest.from_statement(statement)
    except (UnicodeDecodeError, json.JSONDecodeError, ManifestError) as exc:
        detail = str(exc) if isinstance(exc, ManifestError) else "not UTF-8 JSON"
        if result.signature_ok:
            # a valid signature over something unreadable: the signer's tool is broken, not the model
            raise SignatureFormatError(
                f"signature file {sig_path}: signed payload is not a model manifest: {detail}"
            ) from None
        result.reasons.append(f"manifest: unreadable ({detail}); no file could be checked")
        return result

    result.model_name = manifest.model_name
    result.root_digest = manifest.root_digest
    if claimed_root != manifest.root_digest:
        result.reasons.append(
            f"manifest: subject digest {claimed_root} does not match its resources ({manifest.root_digest})"
        )

    rel_sig = _inside(sig_path, folder)
    actual, scan = collect(
        folder, manifest.config, workers, progress, on_total, extra_ignore=[rel_sig] if rel_sig else []
    )
    signed, now = manifest.by_name(), actual.by_name()
    refused = {r.name: r.reason for r in scan.refused}
    result.files = len(signed)
    result.total_bytes = manifest.total_bytes

    result.missing = sorted(name for name in signed if name not in now and name not in refused)
    result.added = sorted(name for name in now if name not in signed)
    result.changed = sorted(name for name in now if name in signed and now[name] != signed[name])
    for name in refused:
        (result.changed if name in signed else result.added).append(name)
    result.added.sort()
    result.changed.sort()

    # a missing file whose exact content turns up under a new name was most likely renamed
    missing_by_digest = {signed[m].digest: m for m in result.missing if signed[m].algorithm != ALG_SYMLINK}
    renamed_to = {
        a: missing_by_digest[now[a].digest]
        for a in result.added
        if a in now and now[a].digest in missing_by_digest
    }
    renamed_from = {v: k for k, v in renamed_to.items()}
    for name in result.changed:
        if name in refused:
            result.reasons.append(f"changed: {name}: {refused[name]}")
        else:
            result.reasons.append(
                f"changed: {name}: {_describe_change(signed[name], now[name], manifest.config.shard_size)}"
            )
    for name in result.missing:
        hint = f" (renamed to {renamed_from[name]}?)" if name in renamed_from else ""
        result.reasons.append(f"missing: {name}: in the signed manifest, not on disk{hint}")
    for name in result.added:
        if name in refused:
            result.reasons.append(f"added: {name}: {refused[name]}")
        else:
            hint = f" (same content as the signed {renamed_to[name]})" if name in renamed_to else ""
            result.reasons.append(f"added: {name}: on disk, not in the signed manifest{hint}")

    result.ok = result.signature_ok and not result.reasons
    return result

"""Sign a model folder and verify it later: the two calls most users need."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bastion.errors import InputError
from bastion.sign import modelsigning as ms
from bastion.sign.dsse import (
    PAYLOAD_TYPE,
    Bundle,
    read_bundle,
    sign_envelope,
    strict_json,
    temp_path,
    verify_envelope,
    write_signature_file,
)
from bastion.sign.errors import KeyFileError, ManifestError, SignatureFormatError, SigningError
from bastion.sign.hashing import (
    DEFAULT_IGNORE,
    DEFAULT_SHARD_SIZE,
    FileEntry,
    ProgressHook,
    hash_files,
    normalize_patterns,
    scan_folder,
    shard_ranges,
    shown,
)
from bastion.sign.keys import PublicKey, key_id, load_private_key, load_public_key, pem_hint
from bastion.sign.manifest import (
    ALG_FILE,
    ALG_SHARDED,
    ALG_SYMLINK,
    PREDICATE_TYPE,
    DataLink,
    HashConfig,
    Manifest,
    Resource,
    _link_digest,
    check_model_dir,
    check_signable,
)

#: written next to the model files unless told otherwise (the name model-signing uses)
SIGNATURE_NAME = "model.sig"
#: ``format=`` values: Bastion's manifest, or OpenSSF model-signing v1.0's exact payload
FORMATS = ("bastion", "model-signing")


@dataclass
class VerifyResult:
    """What :func:`verify_model` found. ``ok`` only when the signature holds and every file matches.

    ``added``, ``missing`` and ``changed`` are relative POSIX paths; ``reasons`` has one readable line per
    problem (each file, the signature, the manifest), in the order a report should show them, with
    control characters in names escaped. Nothing in the payload is read until the signature holds, so a
    failed signature comes back with empty file lists.
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
    format: str = ""
    signer: str = ""  # the certificate's subject, for certificate signatures
    #: the training data's manifest the signature names (name, sha256, records_digest, ...), {} for none
    training_data: dict[str, Any] = field(default_factory=dict)
    #: with a data manifest to check: True when its bytes are the ones the signature names
    training_data_ok: bool | None = None

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


def sign_model(model_dir: str | Path, private_key_path: str | Path, **options: Any) -> Path:
    """Hash ``model_dir``, sign its manifest, and write the signature file; returns its path.

    Takes the options of :func:`sign_model_detailed`.
    """
    return sign_model_detailed(model_dir, private_key_path, **options).path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_signature_file(path: Path) -> bool:
    try:
        read_bundle(path)
    except SigningError:
        return False
    return True


def check_output(
    sig_path: Path, folder: Path, protected: Iterable[Path], force: bool, rel_sig: str | None
) -> None:
    """Refuse to write the signature over an input (key, certificate, a file of the model) or, without
    ``force``, over an existing file that is not a signature (re-signing in place is a normal workflow,
    so an existing signature file is replaced)."""
    if sig_path.is_dir():
        raise InputError("output", f"{sig_path}, a folder", "the signature file's path")
    if not sig_path.parent.is_dir():
        raise InputError(
            "output", str(sig_path), f"a path in an existing folder ({sig_path.parent} does not exist)"
        )
    for other in protected:
        if _same_file(sig_path, other):
            raise InputError(
                "output", str(sig_path), f"a new file, not the input {other} (it would be overwritten)"
            )
    if not (sig_path.exists() or sig_path.is_symlink()):
        return
    if sig_path.is_symlink():
        raise InputError("output", f"{sig_path}, a symlink", "a regular file or a new path")
    if _is_signature_file(sig_path):
        return
    if rel_sig is not None:
        raise InputError(
            "output",
            f"{sig_path}, a file of the model being signed",
            "a new path or an existing signature file",
        )
    if not force:
        raise InputError(
            "output",
            f"{sig_path}, which exists and is not a signature",
            "a new path, or --force to overwrite it",
        )


def sign_model_detailed(
    model_dir: str | Path,
    private_key_path: str | Path,
    *,
    output: str | Path | None = None,
    password: str | bytes | None = None,
    ignore: Iterable[str] = (),
    ignore_globs: Iterable[str] = (),
    shard_size: int | None = None,
    allow_symlinks: bool = False,
    default_ignore: bool = True,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    on_total: ProgressHook | None = None,
    format: str = "bastion",
    certificate: str | Path | None = None,
    certificate_chain: Iterable[str | Path] = (),
    insecure_key_permissions: bool = False,
    force: bool = False,
    data_manifest: str | Path | None = None,
) -> SignResult:
    """Sign ``model_dir`` and return the signature's path, the signed manifest and the key id.

    The signature goes to ``MODEL_DIR/model.sig`` unless ``output`` says otherwise; inside the folder it
    (and its temp file) is recorded as ignored. ``ignore`` adds literal relative paths, ``ignore_globs``
    glob patterns (Bastion's format only). ``format="model-signing"`` writes OpenSSF model-signing v1.0's
    exact payload (ECDSA keys only, as model-signing verifies no other): its ``files`` layout, or its
    ``shards`` layout when ``shard_size`` is given (Bastion's format shards at 1 GiB unless told).
    ``certificate`` (PEM, matching the key) and ``certificate_chain`` (intermediates) put the signer's
    chain in the bundle for PKI verification. The output never replaces the key, the certificates or a file of the model, and an
    existing file that is not a signature only with ``force``. ``data_manifest`` (a ``bastion data
    manifest`` file) ties the model to its training data: the statement records that file's SHA-256.
    """
    if format not in FORMATS:
        raise InputError("format", repr(format), f"one of {', '.join(FORMATS)}")
    if data_manifest is not None and format != "bastion":
        raise InputError("data_manifest", str(data_manifest), "format bastion (model-signing's payload has no place for it)")
    link = data_link(data_manifest) if data_manifest is not None else None
    folder = check_model_dir(model_dir)
    key = load_private_key(private_key_path, password, insecure_permissions=insecure_key_permissions)
    sig_path = Path(output) if output is not None else folder / SIGNATURE_NAME
    if shard_size is not None and shard_size < 1:
        raise ManifestError(f"shard_size: got {shard_size}, expected a positive number of bytes")
    chain_paths = [Path(p) for p in certificate_chain]
    key_path = Path(private_key_path)
    protected = [key_path, key_path.with_name(key_path.name + ".pub"), *chain_paths]
    if certificate is not None:
        protected.append(Path(certificate))
    rel_sig = _inside(sig_path, folder)
    check_output(sig_path, folder, protected, force, rel_sig)
    globs = normalize_patterns(ignore_globs, "ignore_globs")
    is_ms = format == "model-signing"
    if is_ms:
        from cryptography.hazmat.primitives.asymmetric import ec

        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyFileError(
                f"key: {private_key_path} is Ed25519; model-signing verifies ECDSA keys only "
                "(make one with `bastion keygen --type ecdsa-p256`)"
            )
        if globs:
            raise InputError(
                "ignore_globs",
                repr(list(globs)),
                "none with format model-signing (its ignore paths are literal)",
            )
    certs: tuple[bytes, ...] = ()
    if certificate is not None:
        from bastion.sign.certs import der, load_certificates

        leaf = load_certificates(certificate, "certificate")[0]
        if leaf.public_key() != key.public_key():
            raise KeyFileError(f"certificate: {certificate} is for another key than {private_key_path}")
        certs = (der(leaf), *(der(c) for p in chain_paths for c in load_certificates(p, "certificate_chain")))
    defaults = (ms.GIT_PATHS if is_ms else DEFAULT_IGNORE) if default_ignore else ()
    extra = [rel_sig, temp_path(Path(rel_sig)).as_posix()] if rel_sig is not None else []
    patterns = normalize_patterns([*defaults, *ignore, *extra])
    if is_ms:
        layout = ms.LAYOUT_FILES if shard_size is None else ms.LAYOUT_SHARDS
        config = HashConfig(shard_size or ms.WHOLE_FILE, allow_symlinks, patterns, globs, layout)
    else:
        config = HashConfig(shard_size or DEFAULT_SHARD_SIZE, allow_symlinks, patterns, globs)
    scan = scan_folder(folder, patterns, allow_symlinks, globs, follow_links=is_ms)
    check_signable(folder, scan)
    if sig_path.exists():  # a hard link elsewhere to a file of the model is that file
        out_stat = os.stat(sig_path)
        for f in scan.files:
            if os.path.samestat(out_stat, os.stat(f.path)):
                raise InputError(
                    "output", str(sig_path), f"a new file, not the model's {shown(f.name)} (same inode)"
                )
    if on_total is not None:
        on_total(scan.total_bytes)
    digests = hash_files(scan.files, config.shard_size, workers, progress)
    if is_ms:
        manifest = ms.manifest_from_scan(folder, digests, config)
        statement = ms.statement(manifest.model_name, digests, config)
    else:
        resources = [
            Resource(d.name, ALG_SHARDED if d.shards else ALG_FILE, d.digest, size=d.size, shards=d.shards)
            for d in digests
        ] + [Resource(lk.name, ALG_SYMLINK, _link_digest(lk.target), target=lk.target) for lk in scan.links]
        manifest = Manifest(
            folder.resolve().name or "model", tuple(sorted(resources, key=lambda r: r.name)), config,
            training_data=link,
        )
        statement = manifest.to_statement()
    # compact, key-sorted JSON: the bytes signed are the bytes stored, so no canonical form is needed later
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")
    public = key.public_key()
    envelope = sign_envelope(payload, key, keyid="" if is_ms else None)
    write_signature_file(envelope, sig_path, key_hint=pem_hint(public) if is_ms else None, certificates=certs)
    return SignResult(sig_path, manifest, key_id(public))


def file_sha256(path: str | Path, what: str) -> str:
    """SHA-256 of a file's bytes; a clear error naming ``what`` when it cannot be read."""
    import hashlib

    p = Path(path)
    if not p.is_file():
        raise InputError(what, str(p), "an existing data manifest file (from `bastion data manifest`)")
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(what, f"{p} ({exc.strerror})", "a readable data manifest file") from None


def data_link(path: str | Path) -> DataLink:
    """What a signature records about the data manifest at ``path`` (which must be one Bastion wrote)."""
    from bastion.data.manifest import load as load_data_manifest
    from bastion.errors import DataLoadError

    digest = file_sha256(path, "data_manifest")
    try:
        doc = load_data_manifest(path).manifest
    except DataLoadError as exc:
        raise InputError("data_manifest", str(exc), "a manifest written by `bastion data manifest`") from None
    num = doc.get("num_records")
    return DataLink(Path(path).name, digest, str(doc.get("digest", "")),
                    num if isinstance(num, int) else None, str(doc.get("source", "")))


def _describe_change(signed: Resource, now: Resource, shard_size: int) -> str:
    if signed.algorithm == ALG_SYMLINK or now.algorithm == ALG_SYMLINK:
        if signed.algorithm != now.algorithm:
            was = "a symlink" if signed.algorithm == ALG_SYMLINK else "a file"
            is_ = "a symlink" if now.algorithm == ALG_SYMLINK else "a file"
            return f"was {was} when signed, is now {is_}"
        return f"symlink now points to {shown(now.target or '')!r}, signed pointing to {shown(signed.target or '')!r}"
    if signed.size is not None and signed.size != now.size:
        return f"size {now.size} bytes, signed {signed.size} bytes"
    if signed.shards and now.shards:
        ranges = shard_ranges(signed.size or 0, shard_size)
        bad = [f"{a}-{b}" for (a, b), s, n in zip(ranges, signed.shards, now.shards, strict=False) if s != n]
        return f"content differs in byte range(s) {', '.join(bad)}"
    return f"content differs (sha256 {now.digest[:16]}…, signed {signed.digest[:16]}…)"


def _same(signed: Resource, now: Resource) -> bool:
    return (
        signed.algorithm == now.algorithm
        and signed.digest == now.digest
        and signed.shards == now.shards
        and signed.target == now.target
        and (signed.size is None or signed.size == now.size)
    )


def _signing_key(
    bundle: Bundle, public_key_path: str | Path | None, ca_bundle: str | Path | None, result: VerifyResult
) -> PublicKey | None:
    if public_key_path is not None:
        pub = load_public_key(public_key_path)
        result.key_id = key_id(pub)
        return pub
    if ca_bundle is None:
        raise InputError(
            "pub", "nothing", "a public key (--pub), or a CA bundle (--ca-bundle) for a certificate signature"
        )
    if not bundle.certificates:
        raise SignatureFormatError("signature: carries no certificate chain; verify it with --pub")
    from bastion.sign.certs import load_certificates, verify_chain

    key, subject, problems = verify_chain(bundle.certificates, load_certificates(ca_bundle, "ca_bundle"))
    result.signer = subject
    result.reasons += problems
    if key is not None:
        result.key_id = pem_hint(key)
    return key


def verify_model(
    model_dir: str | Path,
    public_key_path: str | Path | None = None,
    *,
    signature: str | Path | None = None,
    ca_bundle: str | Path | None = None,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    on_total: ProgressHook | None = None,
    data_manifest: str | Path | None = None,
) -> VerifyResult:
    """Check that ``model_dir`` is exactly what the key's owner (or the certificate's holder) signed.

    The training-data manifest the signature names (if any) comes back in ``training_data``; given
    ``data_manifest``, its bytes must be exactly that file's, or the result is not ``ok``.

    Give the signer's public key, or a CA bundle for a signature that carries a certificate chain. Reads
    Bastion's and OpenSSF model-signing's formats. The envelope's signature is checked first; only when
    it holds is anything in the payload (file list, shard size) trusted and the files re-hashed. A file is
    hashed only when its size matches a signed size, so a replaced file cannot make the check read more
    than the signed manifest describes. Raises a :class:`~bastion.errors.BastionError` subclass only
    when the check cannot run: no folder, unreadable key, no or malformed signature file.
    """
    folder = check_model_dir(model_dir)
    sig_path = Path(signature) if signature is not None else folder / SIGNATURE_NAME
    bundle = read_bundle(sig_path)
    envelope = bundle.envelope
    result = VerifyResult(ok=False)
    if bundle.is_keyless:
        raise SignatureFormatError(
            f"signature: {sig_path} is a keyless Sigstore bundle (certificate from Sigstore's CA, "
            "transparency-log entry); verify it with `model_signing verify sigstore --identity ... "
            "--identity_provider ...` where Sigstore's trust root can be fetched"
        )
    key = _signing_key(bundle, public_key_path, ca_bundle, result)
    if key is None:
        return result
    result.signature_ok, sig_reasons = verify_envelope(envelope, key)
    result.reasons += sig_reasons
    if result.signature_ok and envelope.payload_type != PAYLOAD_TYPE:
        result.signature_ok = False
        result.reasons.append(f"envelope: payload type {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}")
    if not result.signature_ok:
        return result  # nothing in an unauthenticated payload is read, let alone acted on

    try:
        statement = strict_json(envelope.payload.decode("utf-8"))
        if not isinstance(statement, dict) or statement.get("_type") != "https://in-toto.io/Statement/v1":
            raise ManifestError("payload: expected an in-toto Statement v1")
        ptype = statement.get("predicateType")
        if ptype == PREDICATE_TYPE:
            manifest, claimed_root = Manifest.from_statement(statement)
            result.format = "bastion"
        elif ptype == ms.PREDICATE_TYPE_MS:
            manifest, claimed_root = ms.parse(statement)
            result.format = "model-signing"
        else:
            raise ManifestError(
                f"payload.predicateType: got {ptype!r}, expected {PREDICATE_TYPE!r} or {ms.PREDICATE_TYPE_MS!r}"
            )
    except (UnicodeDecodeError, json.JSONDecodeError, ManifestError, SignatureFormatError) as exc:
        detail = str(exc) if isinstance(exc, SigningError) else "not UTF-8 JSON"
        # a valid signature over something unreadable: the signer's tool is broken, not the model
        raise SignatureFormatError(
            f"signature file {sig_path}: signed payload is not a model manifest: {detail}"
        ) from None

    result.model_name = manifest.model_name
    result.root_digest = manifest.root_digest
    if manifest.training_data is not None:
        result.training_data = manifest.training_data.to_json()
    if data_manifest is not None:
        _check_data_link(manifest.training_data, data_manifest, result)
    if claimed_root != manifest.root_digest:
        result.reasons.append(
            f"manifest: subject digest {claimed_root} does not match its resources ({manifest.root_digest})"
        )
    _compare(folder, sig_path, manifest, result, workers, progress, on_total)
    result.ok = result.signature_ok and not result.reasons
    return result


def _check_data_link(signed: DataLink | None, path: str | Path, result: VerifyResult) -> None:
    digest = file_sha256(path, "data_manifest")
    result.training_data_ok = signed is not None and signed.sha256 == digest
    if signed is None:
        result.reasons.append(f"training data: the signature names no data manifest, {shown(str(path))} was given")
    elif not result.training_data_ok:
        result.reasons.append(
            f"training data: {shown(str(path))} has sha256 {digest}, the signature names {signed.name} "
            f"with sha256 {signed.sha256}"
        )


def _compare(
    folder: Path,
    sig_path: Path,
    manifest: Manifest,
    result: VerifyResult,
    workers: int | None,
    progress: ProgressHook | None,
    on_total: ProgressHook | None,
) -> None:
    config = manifest.config
    rel_sig = _inside(sig_path, folder)
    extra = [rel_sig, temp_path(Path(rel_sig)).as_posix()] if rel_sig else []
    ignore = normalize_patterns([*config.ignore_paths, *extra])
    scan = scan_folder(
        folder, ignore, config.allow_symlinks, config.ignore_globs, follow_links=config.layout != "bastion"
    )
    signed = manifest.by_name()
    refused = {r.name: r.reason for r in scan.refused}
    missing_sizes = {
        r.size for n, r in signed.items() if r.size is not None and n not in {f.name for f in scan.files}
    }
    whole_files = config.layout == ms.LAYOUT_FILES
    to_hash: list[FileEntry] = []
    now: dict[str, Resource] = {}
    for f in scan.files:
        if f.size == 0 and config.layout == ms.LAYOUT_SHARDS and f.name not in signed:
            continue  # that layout has no entry for an empty file (see bastion.sign.modelsigning)
        s = signed.get(f.name)
        fits = (
            (s.size is None or s.size == f.size)
            if s is not None
            else (whole_files or f.size in missing_sizes)
        )
        if fits:
            to_hash.append(f)
        else:  # a different size already says "changed"; never hash by a shard size the file does not match
            now[f.name] = Resource(f.name, ALG_FILE, "0" * 64, size=f.size)
    if on_total is not None:
        on_total(sum(f.size for f in to_hash))
    for d in hash_files(to_hash, config.shard_size, workers, progress):
        now[d.name] = Resource(
            d.name, ALG_SHARDED if d.shards else ALG_FILE, d.digest, size=d.size, shards=d.shards
        )
    for lk in scan.links:
        now[lk.name] = Resource(lk.name, ALG_SYMLINK, _link_digest(lk.target), target=lk.target)
    result.files = len(signed)
    # model-signing's files layout records no sizes: count the bytes of the signed files found
    result.total_bytes = sum(
        (r.size if r.size is not None else (now[n].size or 0) if n in now else 0) for n, r in signed.items()
    )

    result.missing = sorted(name for name in signed if name not in now and name not in refused)
    result.added = sorted(name for name in now if name not in signed)
    result.changed = sorted(name for name in now if name in signed and not _same(signed[name], now[name]))
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
        why = (
            refused[name] if name in refused else _describe_change(signed[name], now[name], config.shard_size)
        )
        result.reasons.append(f"changed: {shown(name)}: {why}")
    for name in result.missing:
        hint = f" (renamed to {shown(renamed_from[name])}?)" if name in renamed_from else ""
        result.reasons.append(f"missing: {shown(name)}: in the signed manifest, not on disk{hint}")
    for name in result.added:
        if name in refused:
            result.reasons.append(f"added: {shown(name)}: {refused[name]}")
        else:
            hint = f" (same content as the signed {shown(renamed_to[name])})" if name in renamed_to else ""
            result.reasons.append(f"added: {shown(name)}: on disk, not in the signed manifest{hint}")

"""OpenSSF model-signing v1.0 payloads, written and read exactly, so each tool verifies the other's.

model-signing signs an in-toto Statement whose predicate type is ``https://model_signing/signature/v1.0``.
Its ``resources`` are ``{name, algorithm, digest}``: one per file (``method: files``, the SHA-256 of the
whole file) or one per shard (``method: shards``, named ``path:start:end`` with algorithm
``sha256-sharded-<shard size>``). The subject's root digest is SHA-256 over the raw resource digests in
the order listed, with the list sorted by path components (then shard offsets). Ignore paths are literal,
and symlinks, when allowed, are read through: the manifest vouches for the bytes a loader gets. In the
``shards`` layout an empty file has no shard and so no entry: model-signing neither records nor checks
it, and Bastion, reading or writing that layout, does the same.

Here such a payload becomes a :class:`~bastion.sign.manifest.Manifest` whose resources are whole files
(a file's shards folded into one sharded resource), so one comparison names added, missing and changed
files for both formats.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from bastion.sign.errors import ManifestError
from bastion.sign.hashing import FileDigest, shard_ranges
from bastion.sign.manifest import ALG_FILE, ALG_SHARDED, STATEMENT_TYPE, HashConfig, Manifest, Resource

PREDICATE_TYPE_MS = "https://model_signing/signature/v1.0"
#: model-signing always leaves these out (and records them); Bastion does the same in this format
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
LAYOUT_FILES = "model-signing-files"
LAYOUT_SHARDS = "model-signing-shards"
#: a shard size no file reaches: "hash the whole file in one piece"
WHOLE_FILE = 1 << 62
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _order(name: str) -> tuple[str, ...]:
    return PurePosixPath(name).parts


def _resources(digests: list[FileDigest], config: HashConfig) -> list[tuple[tuple[Any, ...], str, str, str]]:
    """(sort key, name, algorithm, hex digest) of each resource model-signing would list."""
    out: list[tuple[tuple[Any, ...], str, str, str]] = []
    if config.layout == LAYOUT_FILES:
        for d in digests:
            out.append(((_order(d.name),), d.name, "sha256", d.digest))
        return sorted(out)
    algorithm = f"sha256-sharded-{config.shard_size}"
    for d in digests:
        # model-signing lists no shard for an empty file: it is invisible in this layout
        ranges = shard_ranges(d.size, config.shard_size) if d.size else []
        parts = d.shards or ((d.digest,) if ranges else ())
        for (start, end), digest in zip(ranges, parts, strict=True):
            out.append(((_order(d.name), start, end), f"{d.name}:{start}:{end}", algorithm, digest))
    return sorted(out)


def statement(model_name: str, digests: list[FileDigest], config: HashConfig) -> dict[str, Any]:
    """The Statement model-signing writes for these digests (``files``, or ``shards`` when so configured)."""
    resources = _resources(digests, config)
    root = hashlib.sha256(b"".join(bytes.fromhex(r[3]) for r in resources)).hexdigest()
    serialization: dict[str, Any] = {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": config.allow_symlinks,
    }
    if config.layout == LAYOUT_SHARDS:
        serialization["method"] = "shards"
        serialization["shard_size"] = config.shard_size
    if config.ignore_paths:
        serialization["ignore_paths"] = list(config.ignore_paths)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE_MS,
        "predicate": {
            "serialization": serialization,
            "resources": [{"name": r[1], "algorithm": r[2], "digest": r[3]} for r in resources],
        },
    }


def manifest_from_scan(model_dir: Path, digests: list[FileDigest], config: HashConfig) -> Manifest:
    """The whole-file manifest of what :func:`statement` signs (for the signer's report)."""
    skip_empty = config.layout == LAYOUT_SHARDS
    resources = tuple(
        sorted(
            (
                Resource(
                    d.name, ALG_SHARDED if d.shards else ALG_FILE, d.digest, size=d.size, shards=d.shards
                )
                for d in digests
                if d.size or not skip_empty
            ),
            key=lambda r: r.name,
        )
    )
    model_name = Path(model_dir).resolve().name or "model"
    root = statement(model_name, digests, config)["subject"][0]["digest"]["sha256"]
    return Manifest(model_name, resources, config, declared_root=root)


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: expected a list of strings")
    return value


def _config(obj: Any) -> HashConfig:
    if not isinstance(obj, Mapping):
        raise ManifestError("predicate.serialization: expected an object")
    method, hash_type = obj.get("method"), obj.get("hash_type")
    if method not in ("files", "shards"):
        raise ManifestError(f"predicate.serialization.method: got {method!r}, expected 'files' or 'shards'")
    if hash_type != "sha256":
        raise ManifestError(
            f"predicate.serialization.hash_type: got {hash_type!r}; Bastion verifies sha256 manifests only"
        )
    allow = obj.get("allow_symlinks")
    if not isinstance(allow, bool):
        raise ManifestError(f"predicate.serialization.allow_symlinks: got {allow!r}, expected true or false")
    from bastion.sign.hashing import normalize_patterns

    ignore = normalize_patterns(
        _str_list(obj.get("ignore_paths", []), "predicate.serialization.ignore_paths")
    )
    if method == "files":
        return HashConfig(WHOLE_FILE, allow, ignore, (), LAYOUT_FILES)
    size = obj.get("shard_size")
    # model-signing serialises through protobuf's Struct, which writes every number as a float
    if isinstance(size, float) and math.isfinite(size) and size.is_integer():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ManifestError(f"predicate.serialization.shard_size: got {size!r}, expected a positive integer")
    return HashConfig(size, allow, ignore, (), LAYOUT_SHARDS)


def parse(stmt: Mapping[str, Any]) -> tuple[Manifest, str]:
    """A model-signing v1.0 Statement as a manifest of whole files; returns it and the claimed root.

    The root is recomputed from the resources as listed (what model-signing checks); a mismatch comes
    back through the claimed value, for the caller to report.
    """
    subject = stmt.get("subject")
    if not isinstance(subject, list) or len(subject) != 1 or not isinstance(subject[0], Mapping):
        raise ManifestError("payload.subject: expected exactly one subject naming the model")
    name, digest = subject[0].get("name"), subject[0].get("digest")
    claimed = digest.get("sha256") if isinstance(digest, Mapping) else None
    if not isinstance(name, str) or not isinstance(claimed, str):
        raise ManifestError("payload.subject[0]: expected a name and a sha256 digest")
    predicate = stmt.get("predicate")
    if not isinstance(predicate, Mapping) or not isinstance(predicate.get("resources"), list):
        raise ManifestError("payload.predicate: expected serialization and a list of resources")
    config = _config(predicate.get("serialization"))
    root = hashlib.sha256()
    whole: dict[str, str] = {}
    shards: dict[str, list[tuple[int, int, str]]] = {}
    for raw in predicate["resources"]:
        if not isinstance(raw, Mapping):
            raise ManifestError("predicate.resources: every entry must be an object")
        rname, alg, dig = raw.get("name"), raw.get("algorithm"), raw.get("digest")
        if not isinstance(rname, str) or not isinstance(dig, str) or not _HEX64.fullmatch(dig):
            raise ManifestError(
                f"predicate.resources: bad entry {rname!r} (expected a name and 64 hex digits)"
            )
        root.update(bytes.fromhex(dig))
        if config.layout == LAYOUT_FILES:
            if alg != "sha256":
                raise ManifestError(f"predicate.resources[{rname}]: algorithm {alg!r}, expected 'sha256'")
            _check_name(rname)
            if rname in whole:
                raise ManifestError(f"predicate.resources: {rname!r} appears twice")
            whole[rname] = dig
        else:
            if alg != f"sha256-sharded-{config.shard_size}":
                raise ManifestError(
                    f"predicate.resources[{rname}]: algorithm {alg!r}, expected 'sha256-sharded-{config.shard_size}'"
                )
            path, _, span = rname.rpartition(":")
            path, _, start_text = path.rpartition(":")
            if not (start_text.isdigit() and span.isdigit()):
                raise ManifestError(f"predicate.resources: shard name {rname!r} is not 'path:start:end'")
            _check_name(path)
            shards.setdefault(path, []).append((int(start_text), int(span), dig))
    resources = [Resource(n, ALG_FILE, d) for n, d in whole.items()]
    for path, parts in shards.items():
        parts.sort()
        end = 0
        for start, stop, _ in parts:
            if start != end or stop < start or stop - start > config.shard_size:
                raise ManifestError(f"predicate.resources: shards of {path!r} do not tile the file")
            end = stop
        if len(parts) == 1:
            resources.append(Resource(path, ALG_FILE, parts[0][2], size=end))
        else:
            combined = hashlib.sha256(b"".join(bytes.fromhex(p[2]) for p in parts)).hexdigest()
            resources.append(
                Resource(path, ALG_SHARDED, combined, size=end, shards=tuple(p[2] for p in parts))
            )
    resources.sort(key=lambda r: r.name)
    return Manifest(name, tuple(resources), config, declared_root=root.hexdigest()), claimed


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"predicate.resources: bad name {name!r}, expected a relative POSIX path")

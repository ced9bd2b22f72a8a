"""The manifest of a model folder and its in-toto Statement form.

The layout follows OpenSSF model-signing v1.0: one subject naming the model with a root digest, and a
predicate holding ``serialization`` (how the folder was hashed, so a verifier can redo it exactly) and
``resources`` (one ``{name, algorithm, digest}`` per file, sorted by name)::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "my-model", "digest": {"sha256": "<root>"}}],
     "predicateType": "https://bastion.dev/model-manifest/v1",
     "predicate": {
       "serialization": {"method": "files", "hash_type": "sha256", "shard_size": 1073741824,
                         "allow_symlinks": false, "ignore_paths": [".git", "model.sig"]},
       "resources": [
         {"name": "config.json", "algorithm": "sha256", "digest": "…", "size": 512},
         {"name": "model.safetensors", "algorithm": "sha256-sharded", "digest": "…", "size": 3000000000,
          "shards": ["…", "…", "…"]},
         {"name": "latest", "algorithm": "symlink", "digest": "<sha256 of target>", "target": "v2/weights"}]}}

Two deliberate departures from model-signing, hence our own predicate type: the root digest binds every
resource's name and algorithm as well as its digest (model-signing's hashes the digests alone, so two
folders whose files were renamed among themselves share a root), and a file larger than one shard keeps
its shard digests next to its combined digest, so a verifier can say which byte range changed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.sign.errors import ManifestError
from bastion.sign.hashing import (
    DEFAULT_IGNORE,
    DEFAULT_SHARD_SIZE,
    FolderScan,
    ProgressHook,
    hash_files,
    normalize_patterns,
    scan_folder,
    shard_ranges,
    shown,
)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://bastion.dev/model-manifest/v1"
SERIALIZATION_METHOD = "files"
HASH_TYPE = "sha256"

ALG_FILE = "sha256"
ALG_SHARDED = "sha256-sharded"
ALG_SYMLINK = "symlink"
_ALGORITHMS = (ALG_FILE, ALG_SHARDED, ALG_SYMLINK)
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HashConfig:
    """How a folder was hashed; recorded in the signed predicate so verification redoes exactly this."""

    shard_size: int = DEFAULT_SHARD_SIZE
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] = DEFAULT_IGNORE  # literal relative paths
    ignore_globs: tuple[str, ...] = ()  # explicit glob patterns (Bastion's format only)
    #: ``bastion``, or how a model-signing payload was serialised (see bastion.sign.modelsigning)
    layout: str = "bastion"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": SERIALIZATION_METHOD,
            "hash_type": HASH_TYPE,
            "shard_size": self.shard_size,
            "allow_symlinks": self.allow_symlinks,
            "ignore_paths": list(self.ignore_paths),
        }
        if self.ignore_globs:
            out["ignore_globs"] = list(self.ignore_globs)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> HashConfig:
        if not isinstance(obj, Mapping):
            raise ManifestError("predicate.serialization: expected an object")
        if obj.get("method") != SERIALIZATION_METHOD or obj.get("hash_type") != HASH_TYPE:
            raise ManifestError(
                f"predicate.serialization: got method {obj.get('method')!r} with hash {obj.get('hash_type')!r}, "
                f"expected {SERIALIZATION_METHOD!r} with {HASH_TYPE!r}"
            )
        shard_size = obj.get("shard_size")
        allow = obj.get("allow_symlinks")
        ignore = obj.get("ignore_paths", [])
        if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
            raise ManifestError(
                f"predicate.serialization.shard_size: got {shard_size!r}, expected a positive integer"
            )
        if not isinstance(allow, bool):
            raise ManifestError(
                f"predicate.serialization.allow_symlinks: got {allow!r}, expected true or false"
            )
        globs = obj.get("ignore_globs", [])
        for key, value in (("ignore_paths", ignore), ("ignore_globs", globs)):
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ManifestError(f"predicate.serialization.{key}: expected a list of strings")
        return cls(shard_size, allow, normalize_patterns(ignore), normalize_patterns(globs, "ignore_globs"))


@dataclass(frozen=True)
class Resource:
    """One manifest entry: a file (whole or sharded) or a recorded symlink."""

    name: str
    algorithm: str
    digest: str  # hex SHA-256
    size: int | None = None  # bytes, for files
    shards: tuple[str, ...] = ()  # hex shard digests, for sharded files
    target: str | None = None  # folder-relative target, for symlinks

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "algorithm": self.algorithm, "digest": self.digest}
        if self.size is not None:
            out["size"] = self.size
        if self.shards:
            out["shards"] = list(self.shards)
        if self.target is not None:
            out["target"] = self.target
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Resource:
        if not isinstance(obj, Mapping):
            raise ManifestError("predicate.resources: every entry must be an object")
        name, algorithm, digest = obj.get("name"), obj.get("algorithm"), obj.get("digest")
        if not isinstance(name, str) or not _valid_name(name):
            raise ManifestError(f"predicate.resources: bad name {name!r}, expected a relative POSIX path")
        if algorithm not in _ALGORITHMS:
            raise ManifestError(
                f"predicate.resources[{name}]: got algorithm {algorithm!r}, expected one of {_ALGORITHMS}"
            )
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ManifestError(f"predicate.resources[{name}]: digest must be 64 lowercase hex digits")
        size, shards, target = obj.get("size"), obj.get("shards", []), obj.get("target")
        if algorithm == ALG_SYMLINK:
            if not isinstance(target, str):
                raise ManifestError(f"predicate.resources[{name}]: a symlink needs a string target")
            return cls(name, algorithm, digest, target=target)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"predicate.resources[{name}]: size must be a non-negative integer")
        if not isinstance(shards, list) or not all(
            isinstance(s, str) and _HEX64.fullmatch(s) for s in shards
        ):
            raise ManifestError(f"predicate.resources[{name}]: shards must be a list of hex digests")
        if (algorithm == ALG_SHARDED) != bool(shards):
            raise ManifestError(
                f"predicate.resources[{name}]: shard digests go with algorithm {ALG_SHARDED!r} only"
            )
        return cls(name, algorithm, digest, size=size, shards=tuple(shards))


def _valid_name(name: str) -> bool:
    parts = name.split("/")
    return (
        bool(name)
        and not name.startswith("/")
        and "\\" not in name
        and all(p not in ("", ".", "..") for p in parts)
    )


def root_digest(resources: Iterable[Resource]) -> str:
    """SHA-256 over ``name NUL algorithm NUL raw-digest`` of each resource, in manifest order.

    Names are bound (NUL cannot occur in a path) so renaming files changes the root.
    """
    hasher = hashlib.sha256()
    for res in resources:
        hasher.update(res.name.encode("utf-8") + b"\0" + res.algorithm.encode("ascii") + b"\0")
        hasher.update(bytes.fromhex(res.digest))
    return hasher.hexdigest()


@dataclass(frozen=True)
class DataLink:
    """The training data a model saw: a ``bastion data manifest`` file named by the SHA-256 of its bytes.

    ``records_digest`` is the manifest's own digest over every record (what ``bastion data diff`` compares),
    recorded so a reader can tell which data set it was without the file; the file's SHA-256 is what
    verification checks, since it also covers the source, the time and the manifest's signature.
    """

    name: str
    sha256: str
    records_digest: str = ""
    num_records: int | None = None
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "sha256": self.sha256}
        if self.records_digest:
            out["records_digest"] = self.records_digest
        if self.num_records is not None:
            out["num_records"] = self.num_records
        if self.source:
            out["source"] = self.source
        return out

    @classmethod
    def from_json(cls, obj: Any) -> DataLink:
        where = "predicate.training_data"
        if not isinstance(obj, Mapping):
            raise ManifestError(f"{where}: expected an object")
        name, digest = obj.get("name"), obj.get("sha256")
        records, num, source = obj.get("records_digest", ""), obj.get("num_records"), obj.get("source", "")
        if not isinstance(name, str) or not isinstance(source, str):
            raise ManifestError(f"{where}: name and source must be strings")
        for key, value in (("sha256", digest), ("records_digest", records)):
            if not isinstance(value, str) or not (_HEX64.fullmatch(value) or (key == "records_digest" and not value)):
                raise ManifestError(f"{where}.{key}: expected 64 lowercase hex digits")
        if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num < 0):
            raise ManifestError(f"{where}.num_records: expected a non-negative integer")
        assert isinstance(digest, str) and isinstance(records, str)
        return cls(name, digest, records, num, source)


@dataclass(frozen=True)
class Manifest:
    """Every file of a model folder with its digest, plus the configuration that produced them."""

    model_name: str
    resources: tuple[Resource, ...]
    config: HashConfig
    #: the root of a model-signing payload, computed by its own rule (empty for Bastion's format)
    declared_root: str = ""
    #: the data manifest of the training set, when the signer named one (Bastion's format only)
    training_data: DataLink | None = None

    @property
    def root_digest(self) -> str:
        return self.declared_root or root_digest(self.resources)

    @property
    def total_bytes(self) -> int:
        return sum(r.size or 0 for r in self.resources)

    def by_name(self) -> dict[str, Resource]:
        return {r.name: r for r in self.resources}

    def to_statement(self) -> dict[str, Any]:
        """The in-toto Statement v1 this manifest is signed as."""
        predicate: dict[str, Any] = {
            "serialization": self.config.to_json(),
            "resources": [r.to_json() for r in self.resources],
        }
        if self.training_data is not None:
            predicate["training_data"] = self.training_data.to_json()
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.model_name, "digest": {"sha256": self.root_digest}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }

    @classmethod
    def from_statement(cls, statement: Any) -> tuple[Manifest, str]:
        """Parse a Statement; returns the manifest and the root digest its subject claims."""
        if not isinstance(statement, Mapping):
            raise ManifestError("payload: expected an in-toto Statement (a JSON object)")
        if statement.get("_type") != STATEMENT_TYPE:
            raise ManifestError(f"payload._type: got {statement.get('_type')!r}, expected {STATEMENT_TYPE!r}")
        if statement.get("predicateType") != PREDICATE_TYPE:
            raise ManifestError(
                f"payload.predicateType: got {statement.get('predicateType')!r}, expected {PREDICATE_TYPE!r}"
            )
        subject = statement.get("subject")
        if not isinstance(subject, list) or len(subject) != 1 or not isinstance(subject[0], Mapping):
            raise ManifestError("payload.subject: expected exactly one subject naming the model")
        name = subject[0].get("name")
        digest = subject[0].get("digest")
        claimed = digest.get("sha256") if isinstance(digest, Mapping) else None
        if not isinstance(name, str) or not isinstance(claimed, str):
            raise ManifestError("payload.subject[0]: expected a name and a sha256 digest")
        predicate = statement.get("predicate")
        if not isinstance(predicate, Mapping) or not isinstance(predicate.get("resources"), list):
            raise ManifestError("payload.predicate: expected serialization and a list of resources")
        config = HashConfig.from_json(predicate.get("serialization"))
        resources = tuple(Resource.from_json(r) for r in predicate["resources"])
        names = [r.name for r in resources]
        if len(set(names)) != len(names):
            raise ManifestError("predicate.resources: a name appears twice")
        if names != sorted(names):
            raise ManifestError("predicate.resources: entries are not sorted by name")
        for res in resources:
            if res.algorithm == ALG_SHARDED and res.size is not None:
                expected = len(shard_ranges(res.size, config.shard_size))
                if expected != len(res.shards):
                    raise ManifestError(
                        f"predicate.resources[{res.name}]: {len(res.shards)} shard digests, "
                        f"expected {expected} for {res.size} bytes"
                    )
        link = predicate.get("training_data")
        training = DataLink.from_json(link) if link is not None else None
        return cls(name, resources, config, training_data=training), claimed


def _link_digest(target: str) -> str:
    return hashlib.sha256(target.encode("utf-8")).hexdigest()


def collect(
    model_dir: Path,
    config: HashConfig,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    on_total: ProgressHook | None = None,
    extra_ignore: Iterable[str] = (),
    refuse: bool = False,
) -> tuple[Manifest, FolderScan]:
    """Hash ``model_dir`` as ``config`` says.

    What cannot be hashed safely comes back in the scan's ``refused`` list (a verifier reports it), or,
    with ``refuse``, raises :class:`ManifestError` before any hashing (a signer must not sign around it).
    ``on_total`` is called once with the number of bytes about to be hashed (to size a progress bar);
    ``extra_ignore`` adds patterns that are skipped without being recorded (the signature file itself).
    """
    ignore = normalize_patterns([*config.ignore_paths, *extra_ignore])
    scan = scan_folder(model_dir, ignore, config.allow_symlinks, config.ignore_globs)
    if refuse:
        check_signable(model_dir, scan)
    if on_total is not None:
        on_total(scan.total_bytes)
    digests = hash_files(scan.files, config.shard_size, workers, progress)
    resources = [
        Resource(d.name, ALG_SHARDED if d.shards else ALG_FILE, d.digest, size=d.size, shards=d.shards)
        for d in digests
    ]
    resources += [
        Resource(link.name, ALG_SYMLINK, _link_digest(link.target), target=link.target) for link in scan.links
    ]
    resources.sort(key=lambda r: r.name)
    model_name = Path(model_dir).resolve().name or "model"
    return Manifest(model_name, tuple(resources), config), scan


def check_signable(model_dir: Path, scan: FolderScan) -> None:
    """Raise :class:`ManifestError` when the folder holds something unsignable, or nothing at all."""
    if scan.refused:
        lines = "; ".join(f"{shown(r.name)}: {r.reason}" for r in scan.refused)
        raise ManifestError(f"cannot sign {shown(str(model_dir))}: {lines}")
    if not scan.files and not scan.links:
        raise ManifestError(
            f"model_dir: {shown(str(model_dir))} has no files to sign (empty, or everything in it is ignored)"
        )


def check_model_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    if not path.exists():
        raise ManifestError(f"model_dir: no such folder: {path}")
    if not path.is_dir():
        raise ManifestError(f"model_dir: {path} is a file, expected the folder holding the model's files")
    return path


def build_manifest(
    model_dir: str | Path,
    *,
    ignore: Iterable[str] = (),
    ignore_globs: Iterable[str] = (),
    shard_size: int = DEFAULT_SHARD_SIZE,
    allow_symlinks: bool = False,
    default_ignore: bool = True,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    on_total: ProgressHook | None = None,
) -> Manifest:
    """Hash every file of ``model_dir`` into a :class:`Manifest` (sorted relative POSIX names).

    ``ignore`` adds literal relative paths (``checkpoints``, ``notes/todo.txt``: the path and everything
    under it) to the default ``.git``, ``ignore_globs`` glob patterns (``*.log``); pass
    ``default_ignore=False`` to hash ``.git`` too. Files above ``shard_size`` bytes are hashed as shards
    in parallel. Symlinks are refused unless ``allow_symlinks`` (then recorded, never followed); a link
    out of the folder, a socket or a device file always raises :class:`ManifestError`.
    """
    path = check_model_dir(model_dir)
    if shard_size < 1:
        raise ManifestError(f"shard_size: got {shard_size}, expected a positive number of bytes")
    patterns = normalize_patterns([*(DEFAULT_IGNORE if default_ignore else ()), *ignore])
    config = HashConfig(
        shard_size, allow_symlinks, patterns, normalize_patterns(ignore_globs, "ignore_globs")
    )
    manifest, _ = collect(path, config, workers, progress, on_total, refuse=True)
    return manifest

"""Provenance: a signed manifest of every record's SHA-256, and the difference between two manifests.

The manifest names the source, the time, each record (id and digest) and each shard (a file, or a class
folder of an image set: the SHA-256 of its records' digests in order), plus one digest over all records
that a model's signing statement can cite. With a key it is wrapped in a DSSE envelope signed through
``bastion.sign``; ``diff`` names the records added, removed and changed between two manifests.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bastion.data.records import Records
from bastion.errors import DataLoadError

MANIFEST_TYPE = "https://bastion.dev/data-manifest/v1"
PAYLOAD_TYPE = "application/vnd.bastion.data-manifest+json"


def records_digest(entries: list[dict[str, str]]) -> str:
    """One SHA-256 over ``id NUL digest LF`` of every record, in order: the data set's identity."""
    h = hashlib.sha256()
    for e in entries:
        h.update(e["id"].encode() + b"\0" + e["sha256"].encode() + b"\n")
    return h.hexdigest()


def build(records: Records, source: str, *, created: str | None = None) -> dict[str, Any]:
    digests = records.hashes()
    entries = [{"id": i, "sha256": d} for i, d in zip(records.ids, digests, strict=True)]
    shards = []
    for name, rows in records.shards.items():
        h = hashlib.sha256()
        for r in rows:
            h.update(bytes.fromhex(digests[r]))
        shards.append({"name": name, "records": len(rows), "sha256": h.hexdigest()})
    if records.path.is_file():
        shards = [{"name": records.path.name, "records": len(records),
                   "sha256": hashlib.sha256(records.path.read_bytes()).hexdigest(), "file": True}]
    return {
        "_type": MANIFEST_TYPE,
        "source": source,
        "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": records.path.name,
        "format": records.format,
        "num_records": len(records),
        "digest": records_digest(entries),
        "shards": shards,
        "records": entries,
    }


def to_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def sign(manifest: dict[str, Any], key: str | Path, password: str | None = None) -> dict[str, Any]:
    """The manifest as a DSSE envelope signed with a ``bastion sign`` private key."""
    from bastion.sign import load_private_key, sign_envelope

    env = sign_envelope(to_bytes(manifest), load_private_key(key, password), payload_type=PAYLOAD_TYPE)
    return {"dsseEnvelope": env.to_json()}


@dataclass
class LoadedManifest:
    manifest: dict[str, Any]
    signed: bool
    verified: bool | None = None  # None: no public key given
    problems: list[str] = field(default_factory=list)


def load(path: str | Path, public_key: str | Path | None = None) -> LoadedManifest:
    """Read a manifest (plain or signed); with ``public_key`` the signature is checked."""
    from bastion.sign import Envelope, load_public_key, verify_envelope

    p = Path(path)
    try:
        obj = json.loads(p.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataLoadError(f"{p}: not a readable manifest ({exc})") from None
    signed = isinstance(obj, dict) and "dsseEnvelope" in obj
    verified = None
    problems: list[str] = []
    if signed:
        env = Envelope.from_json(obj["dsseEnvelope"])
        if env.payload_type != PAYLOAD_TYPE:
            raise DataLoadError(f"{p}: envelope payload type {env.payload_type!r}, expected {PAYLOAD_TYPE!r}")
        if public_key is not None:
            verified, problems = verify_envelope(env, load_public_key(public_key))
        obj = json.loads(env.payload)
    elif public_key is not None:
        verified, problems = False, ["the manifest is not signed"]
    if not isinstance(obj, dict) or obj.get("_type") != MANIFEST_TYPE or not isinstance(obj.get("records"), list):
        raise DataLoadError(f"{p}: not a Bastion data manifest (expected _type {MANIFEST_TYPE})")
    return LoadedManifest(obj, signed, verified, problems)


@dataclass
class ManifestDiff:
    added: list[str]
    removed: list[str]
    changed: list[str]
    #: (old id, new id) of records whose content is unchanged but whose position-based id moved, e.g. after
    #: records before them were removed; not a difference in the data
    moved: list[tuple[str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed,
                "moved": [list(m) for m in self.moved], "identical": self.empty}


def diff(old: dict[str, Any], new: dict[str, Any]) -> ManifestDiff:
    """Records added, removed and changed from ``old`` to ``new``, matched by content before id.

    Ids of array and table records are positions, so removing one record renumbers every later one; a record
    whose digest still appears in the new set (as many times as in the old one) is the same record moved, not
    a change. What is left: an id unmatched on both sides with another digest is changed (one flipped byte is
    one changed record), old-only content is removed, new-only content is added.
    """
    a = {e["id"]: e["sha256"] for e in old["records"]}
    b = {e["id"]: e["sha256"] for e in new["records"]}
    same = {i for i in a if b.get(i) == a[i]}
    pool: dict[str, list[str]] = {}
    for i in b:
        if i not in same:
            pool.setdefault(b[i], []).append(i)
    for ids in pool.values():
        ids.reverse()  # pop() hands out new ids in their original order
    moved: list[tuple[str, str]] = []
    left_old: list[str] = []
    for i in a:
        if i in same:
            continue
        if pool.get(a[i]):
            moved.append((i, pool[a[i]].pop()))
        else:
            left_old.append(i)
    taken = same | {n for _, n in moved}
    left_new = {i for i in b if i not in taken}
    changed = [i for i in left_old if i in left_new]
    return ManifestDiff(
        added=[i for i in b if i in left_new and i not in changed],
        removed=[i for i in left_old if i not in changed],
        changed=changed,
        moved=moved,
    )

"""The model registry: versions that passed the gate, their stages, promotion, rollback and checkout.

A version is accepted only when its folder's signature verifies against a trusted key and its scan has no
finding at or above the policy's threshold — both judged on the exact bytes the registry stores, not on the
folder the user pointed at (which could change between the check and the copy).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import BastionError, InputError
from bastion.registry.db import EventRow, VersionRow, append_event, make_engine, verify_events
from bastion.registry.policy import GatePolicy, extract_evidence, judge
from bastion.registry.store import BlobStore, sha256_file

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RegistryRefusal(BastionError):
    """The registry refused a push or a promotion; ``reasons`` says every reason, one per line."""

    def __init__(self, what: str, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f"{what} refused: " + "; ".join(reasons))


@dataclass
class VersionInfo:
    name: str
    version: str
    stage: str
    created_at: str
    files: dict[str, dict[str, Any]]
    signature: dict[str, Any]
    scan: dict[str, Any]
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["signature"] = {k: v for k, v in self.signature.items() if k != "public_key_pem"}
        return out


def _info(row: VersionRow) -> VersionInfo:
    return VersionInfo(row.name, row.version, row.stage, row.created_at.isoformat(), dict(row.files),
                       dict(row.signature), dict(row.scan), dict(row.evidence))


def _check_name(value: str, argument: str) -> str:
    if not _NAME.match(value or ""):
        raise InputError(argument, repr(value), "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def _model_files(folder: Path) -> list[Path]:
    files = []
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            raise InputError("MODEL_DIR", f"{p} is a symbolic link", "regular files only (copy the target in)")
        if p.is_file():
            files.append(p)
    if not files:
        raise InputError("MODEL_DIR", f"{folder}, which holds no files", "a folder with the model's files")
    return files


class Registry:
    """``Registry(db_url, store)``: metadata in SQLAlchemy (SQLite file by default), files content-addressed."""

    def __init__(self, db_url: str = "sqlite:///bastion-registry/registry.db",
                 store: str | Path = "bastion-registry/store") -> None:
        if db_url.startswith("sqlite:///") and not db_url.startswith("sqlite:///:memory:"):
            Path(db_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(db_url)
        # Writers take SQLite's write lock at BEGIN (bastion.database): a deferred transaction that read first
        # fails at once with "database is locked" when another connection wrote meanwhile (WAL snapshots).
        self.writer = self.engine.execution_options(write=True)
        self.store = BlobStore(store)

    # -- push -------------------------------------------------------------------------------------------
    def push(self, model_dir: str | Path, name: str, version: str, *, public_key: str | Path | None = None,
             ca_bundle: str | Path | None = None, evidence: list[str | Path] | tuple[()] = (),
             data_manifest: str | Path | None = None, policy: GatePolicy | None = None) -> VersionInfo:
        from bastion.scan import scan_path
        from bastion.scan.findings import Severity
        from bastion.sign.api import SIGNATURE_NAME, verify_model

        pol = policy or GatePolicy()
        _check_name(name, "--name")
        _check_name(version, "--version")
        folder = Path(model_dir)
        if not folder.is_dir():
            raise InputError("MODEL_DIR", str(folder), "a folder holding the model's files and its signature")
        figures: dict[str, Any] = {}
        for ev in evidence:
            for key, value in extract_evidence(Path(ev)).items():
                if key == "robust_accuracy":
                    figures.setdefault(key, []).extend(value)
                else:
                    figures[key] = value
        if data_manifest is not None:
            dm = Path(data_manifest)
            if not dm.is_file():
                raise InputError("--data-manifest", str(dm), "a data manifest file (bastion data manifest)")
            figures["data_manifest"] = {"file": dm.name, "sha256": sha256_file(dm)}
        with Session(self.engine) as s:
            if s.scalars(select(VersionRow).where(VersionRow.name == name, VersionRow.version == version)).first():
                raise InputError("--version", f"{name} {version}, which is already registered",
                                 "a new version (registered versions are immutable)")
        # Store first, then judge the stored bytes: what passes the gate is exactly what will be served.
        files: dict[str, dict[str, Any]] = {}
        for p in _model_files(folder):
            rel = p.relative_to(folder).as_posix()
            files[rel] = {"sha256": self.store.put(p), "size": p.stat().st_size}
        reasons: list[str] = []
        signature: dict[str, Any] = {"present": SIGNATURE_NAME in files}
        with tempfile.TemporaryDirectory(prefix="bastion-registry-") as tmp:
            copy = Path(tmp) / "model"
            self.store.materialise({rel: f["sha256"] for rel, f in files.items()}, copy)
            if not signature["present"]:
                if pol.signature_required:
                    reasons.append(f"unsigned: no {SIGNATURE_NAME} in the folder (sign it with `bastion sign`)")
            elif public_key is None and ca_bundle is None:
                if pol.signature_required:
                    reasons.append("signature: no trusted key given (--pub KEY.pub or --ca-bundle)")
            else:
                res = verify_model(copy, public_key, ca_bundle=ca_bundle)
                signature.update({"ok": res.ok, "key_id": res.key_id, "root_digest": res.root_digest,
                                  "format": res.format, "signer": res.signer})
                if public_key is not None:
                    signature["public_key_pem"] = Path(public_key).read_text(encoding="ascii", errors="replace")
                if not res.ok:
                    reasons.append("signature does not verify: " + "; ".join(res.reasons[:5]))
            report = scan_path(copy)
            limit = Severity.parse(pol.scan_fail_on)
            bad = [f for f in report.findings if f.severity >= limit]
            worst = max((f.severity for f in report.findings), default=None)
            scan = {"fail_on": pol.scan_fail_on, "files": report.files_scanned, "errors": list(report.errors),
                    "findings": [f.to_dict() for f in report.findings][:200],
                    "worst": worst.name.lower() if worst is not None else "none"}
            if report.errors:
                reasons.append("scan could not read: " + "; ".join(report.errors[:3]))
            if bad:
                reasons.append(f"scan: {len(bad)} finding(s) at or above {pol.scan_fail_on}, first: "
                               f"{bad[0].location}: {bad[0].message}")
        with Session(self.writer) as s, s.begin():
            if reasons:
                append_event(s, "push-refused", name, version, {"reasons": reasons})
            else:
                import datetime as dt

                row = VersionRow(name=name, version=version, stage="none", created_at=dt.datetime.now(dt.timezone.utc),
                                 files=files, signature=signature, scan=scan, evidence=figures)
                s.add(row)
                append_event(s, "push", name, version, {"files": len(files), "key_id": signature.get("key_id", ""),
                                                        "evidence": sorted(figures)})
        if reasons:
            raise RegistryRefusal(f"push of {name} {version}", reasons)
        return self.show(name, version)

    # -- queries ----------------------------------------------------------------------------------------
    def _row(self, s: Session, name: str, version: str) -> VersionRow:
        row = s.scalars(select(VersionRow).where(VersionRow.name == name, VersionRow.version == version)).first()
        if row is None:
            known = [r.version for r in s.scalars(select(VersionRow).where(VersionRow.name == name))]
            raise InputError("VERSION", f"{name} {version}",
                             f"a registered version ({', '.join(known) or 'none registered under that name'})")
        return row

    def show(self, name: str, version: str) -> VersionInfo:
        with Session(self.engine) as s:
            return _info(self._row(s, name, version))

    def versions(self, name: str | None = None) -> list[VersionInfo]:
        with Session(self.engine) as s:
            q = select(VersionRow).order_by(VersionRow.name, VersionRow.id)
            if name is not None:
                q = q.where(VersionRow.name == name)
            return [_info(r) for r in s.scalars(q)]

    def resolve(self, name: str, ref: str) -> VersionInfo:
        """``ref`` is a version or a stage (``production``, ``staging``)."""
        if ref in ("production", "staging"):
            with Session(self.engine) as s:
                row = s.scalars(select(VersionRow).where(VersionRow.name == name, VersionRow.stage == ref)).first()
                if row is None:
                    raise InputError("MODEL", f"{name}@{ref}", f"a model with a version in {ref}")
                return _info(row)
        return self.show(name, ref)

    def events(self) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            return [{"id": e.id, "time": e.time, "action": e.action, "name": e.name, "version": e.version,
                     "details": e.details} for e in s.scalars(select(EventRow).order_by(EventRow.id))]

    def verify_log(self) -> list[str]:
        with Session(self.engine) as s:
            return verify_events(s)

    # -- stages -----------------------------------------------------------------------------------------
    def promote(self, name: str, version: str, to: str, policy: GatePolicy | None = None) -> VersionInfo:
        pol = policy or GatePolicy()
        if to not in ("staging", "production"):
            raise InputError("--to", to, "'staging' or 'production'")
        with Session(self.writer) as s, s.begin():
            row = self._row(s, name, version)
            reasons = judge(pol.stages.get(to, {}), dict(row.evidence))
            if reasons:
                append_event(s, "promote-refused", name, version, {"to": to, "reasons": reasons})
            else:
                for other in s.scalars(select(VersionRow).where(VersionRow.name == name, VersionRow.stage == to)):
                    if other.id != row.id:
                        other.stage = "archived"
                previous = row.stage
                row.stage = to
                append_event(s, "promote", name, version, {"to": to, "from": previous})
        if reasons:
            raise RegistryRefusal(f"promotion of {name} {version} to {to}", reasons)
        return self.show(name, version)

    def rollback(self, name: str) -> VersionInfo:
        """Move production back to the version that was in production before the current one."""
        with Session(self.writer) as s, s.begin():
            current = s.scalars(select(VersionRow).where(VersionRow.name == name,
                                                         VersionRow.stage == "production")).first()
            if current is None:
                raise InputError("NAME", name, "a model with a version in production")
            history = [e for e in s.scalars(select(EventRow).where(EventRow.name == name).order_by(EventRow.id))
                       if (e.action == "promote" and e.details.get("to") == "production") or e.action == "rollback"]
            rolled_back = {e.details.get("from") for e in history if e.action == "rollback"}
            seen: list[str] = []
            for e in history:
                v = e.version if e.action == "promote" else e.details.get("to")
                if v and v != current.version and v not in rolled_back:
                    seen.append(v)
            if not seen:
                raise InputError("NAME", name, "an earlier production version to roll back to (there is none)")
            target = self._row(s, name, seen[-1])
            current.stage = "archived"
            target.stage = "production"
            back_to = target.version
            append_event(s, "rollback", name, back_to, {"from": current.version, "to": back_to})
        return self.show(name, back_to)

    # -- serving ----------------------------------------------------------------------------------------
    def checkout(self, name: str, ref: str, dest: str | Path) -> tuple[VersionInfo, Path]:
        """Write ``name@ref``'s files into the new folder ``dest``, re-checking digests and the signature."""
        from bastion.sign.api import verify_model

        info = self.resolve(name, ref)
        out = Path(dest)
        if out.exists():
            raise InputError("--dest", str(out), "a folder that does not exist yet")
        self.store.materialise({rel: f["sha256"] for rel, f in info.files.items()}, out)
        pem = info.signature.get("public_key_pem")
        if pem:
            with tempfile.TemporaryDirectory() as tmp:
                pub = Path(tmp) / "signer.pub"
                pub.write_text(pem, encoding="ascii")
                res = verify_model(out, pub)
            if not res.ok:
                shutil.rmtree(out, ignore_errors=True)
                raise RegistryRefusal(f"checkout of {name}@{ref}", ["signature no longer verifies: "
                                                                    + "; ".join(res.reasons[:5])])
        return info, out

"""Write a cleaned copy of a data set and a removal log; optionally retrain to show what cleaning bought."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bastion.data.audit import AuditResult
from bastion.data.records import Records, atomic_output, write_subset

#: checks whose findings ``clean`` removes unless told otherwise (outliers are reported, not removed:
#: rare honest records are outliers too)
DEFAULT_REMOVE = ("duplicates", "leakage", "label-issues", "poison")


@dataclass
class CleanResult:
    kept: np.ndarray
    removed: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"kept": int(self.kept.shape[0]), "removed": len(self.removed)}


def plan(records: Records, audit: AuditResult, remove: tuple[str, ...] = DEFAULT_REMOVE) -> CleanResult:
    """Which rows to keep, and one log entry per removed record (its strongest finding first)."""
    hashes = records.hashes()
    by_row: dict[int, list[Any]] = {}
    for f in audit.findings:
        if f.check in remove:
            by_row.setdefault(f.row, []).append(f)
    log = []
    for row in sorted(by_row):
        fs = by_row[row]
        log.append({"record": records.ids[row], "row": row, "sha256": hashes[row],
                    "detector": ",".join(sorted({f.detector or f.check for f in fs})),
                    "score": round(float(max(f.score for f in fs)), 6),
                    "reason": "; ".join(f"{f.check}: {f.reason}" for f in fs)})
    kept = np.asarray([i for i in range(len(records)) if i not in by_row], dtype=np.int64)
    return CleanResult(kept, log)


def write(records: Records, result: CleanResult, out: Path, log_path: Path, *, force: bool = False) -> None:
    """The cleaned set at ``out`` (the input copied byte for byte when nothing is removed) and the JSON-lines
    removal log; both atomic, the input never touched."""
    if not result.removed:
        from bastion.data.records import same_place
        from bastion.errors import InputError

        if same_place(records.path, out):
            raise InputError("--out", str(out), "a path other than the input (the input is never modified)")
        if out.exists() and not force:
            raise InputError("--out", f"{out}, which exists", "a new path, or --force to replace it")
        with atomic_output(out, is_dir=records.path.is_dir()) as tmp:
            if records.path.is_dir():
                shutil.copytree(records.path, tmp)
            else:
                shutil.copyfile(records.path, tmp)
    else:
        write_subset(records, result.kept, out, force=force)
    with atomic_output(log_path) as tmp:
        tmp.write_text("".join(json.dumps(e) + "\n" for e in result.removed))


def content_digest(records: Records) -> str:
    h = hashlib.sha256()
    for d in records.hashes():
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def retrain_compare(arch: str, before: Records, kept: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
                    epochs: int = 15, seed: int = 0, trigger: Any = None, target: int | None = None) -> dict[str, Any]:
    """Train ``arch`` on the data before and after cleaning; clean test accuracy (and the attack success rate
    when a ``trigger`` function and ``target`` class are given) of both models."""
    import torch

    from bastion.zoo import accuracy, build, train

    assert before.y is not None
    x_all = torch.from_numpy(before.x.astype(np.float32))
    y_all = torch.from_numpy(before.y.astype(np.int64))
    xt, yt = torch.from_numpy(x_test.astype(np.float32)), torch.from_numpy(y_test.astype(np.int64))
    classes = int(max(int(y_all.max()), int(yt.max()))) + 1
    out: dict[str, Any] = {"arch": arch, "epochs": epochs, "seed": seed}
    for name, rows in (("before", np.arange(len(before))), ("after", kept)):
        torch.manual_seed(seed)
        net = train(build(arch, tuple(x_all.shape[1:]), classes), x_all[rows], y_all[rows], epochs=epochs, seed=seed)
        entry: dict[str, Any] = {"records": len(rows), "clean_accuracy": accuracy(net, xt, yt)}
        if trigger is not None and target is not None:
            keep = yt != target
            with torch.no_grad():
                pred = net(trigger(xt[keep].clone())).argmax(dim=1)
            entry["attack_success_rate"] = float((pred == target).float().mean())
        out[name] = entry
    return out

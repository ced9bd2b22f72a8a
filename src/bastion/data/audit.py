"""Audit a data set: duplicates, near-duplicates and train/test leakage, outliers, label issues and, with a
model, poisoned records. Every finding names the record, the check, a score and the evidence."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bastion.data.records import Records

#: the checks ``audit`` runs, in report order; ``poison`` needs a PyTorch model
CHECKS = ("duplicates", "near-duplicates", "leakage", "outliers", "label-issues", "poison")
#: near-duplicate: nearest neighbour closer than this fraction of the median nearest-neighbour distance
NEAR_DUPLICATE_FRACTION = 0.05


@dataclass
class Finding:
    record: str
    row: int
    check: str
    score: float
    reason: str
    detector: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"record": self.record, "row": self.row, "check": self.check, "detector": self.detector or self.check,
                "score": round(float(self.score), 6), "reason": self.reason}


@dataclass
class AuditResult:
    data: str
    num_records: int
    checks: list[str]
    findings: list[Finding] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why it did not run

    def rows(self, checks: tuple[str, ...] | list[str] | None = None) -> set[int]:
        return {f.row for f in self.findings if checks is None or f.check in checks}

    def counts(self) -> dict[str, int]:
        return {c: sum(f.check == c for f in self.findings) for c in self.checks}

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "num_records": self.num_records, "checks": self.checks, "counts": self.counts(),
                "flagged_records": len(self.rows()), "skipped": self.skipped,
                "findings": [f.to_json() for f in self.findings]}


def _input_hash(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float64).tobytes()).hexdigest()


def _duplicates(rec: Records) -> list[Finding]:
    first: dict[str, int] = {}
    out = []
    for i in range(len(rec)):
        h = _input_hash(rec.x[i])
        if h in first:
            j = first[h]
            clash = rec.y is not None and rec.y[i] != rec.y[j]
            why = f"same input as record {rec.ids[j]}" + (f", but labelled {rec.y[i]} not {rec.y[j]}"  # type: ignore[index]
                                                           if clash else "")
            out.append(Finding(rec.ids[i], i, "duplicates", 1.0, why))
        else:
            first[h] = i
    return out


def _flat(rec: Records) -> np.ndarray:
    f = rec.x.reshape(len(rec), -1).astype(np.float64)
    return np.nan_to_num(f)


def _near_duplicates(rec: Records, exact: set[int]) -> list[Finding]:
    from sklearn.neighbors import NearestNeighbors

    f = _flat(rec)
    if f.shape[0] < 3:
        return []
    dist, idx = NearestNeighbors(n_neighbors=2).fit(f).kneighbors(f)
    nn = dist[:, 1]
    scale = float(np.median(nn[nn > 0])) if (nn > 0).any() else 0.0
    out = []
    for i in range(f.shape[0]):
        j = int(idx[i, 1])
        if i in exact or not 0 < nn[i] < NEAR_DUPLICATE_FRACTION * scale or j > i:
            continue  # report the later record of a pair, as for exact duplicates
        out.append(Finding(rec.ids[i], i, "near-duplicates", float(1 - nn[i] / scale),
                           f"distance {nn[i]:.4g} to record {rec.ids[j]} (median nearest-neighbour distance {scale:.4g})"))
    return out


def _leakage(rec: Records, test: Records) -> list[Finding]:
    from sklearn.neighbors import NearestNeighbors

    f, g = _flat(rec), _flat(test)
    if f.shape[1] != g.shape[1]:
        return []
    dist, idx = NearestNeighbors(n_neighbors=1).fit(g).kneighbors(f)
    own, _ = NearestNeighbors(n_neighbors=2).fit(f).kneighbors(f)
    scale = float(np.median(own[:, 1][own[:, 1] > 0])) if (own[:, 1] > 0).any() else 0.0
    out = []
    for i in np.flatnonzero(dist[:, 0] <= NEAR_DUPLICATE_FRACTION * scale):
        j = int(idx[i, 0])
        kind = "identical to" if dist[i, 0] == 0 else f"at distance {dist[i, 0]:.4g} from"
        out.append(Finding(rec.ids[i], int(i), "leakage", 1.0, f"{kind} test record {test.ids[j]}"))
    return out


def _outliers(rec: Records, contamination: float, seed: int) -> list[Finding]:
    from sklearn.ensemble import IsolationForest

    f = _flat(rec)
    if f.shape[0] < 20:
        return []
    iso = IsolationForest(contamination=contamination, random_state=seed).fit(f)
    score = -iso.score_samples(f)
    flags = iso.predict(f) < 0
    return [Finding(rec.ids[i], int(i), "outliers", float(score[i]),
                    f"isolation-forest anomaly score {score[i]:.3f} (top {contamination:.1%} of the set)")
            for i in np.flatnonzero(flags)]


def _label_issues(rec: Records, model: Any, seed: int) -> list[Finding]:
    from bastion.detect import LabelIssues

    assert rec.y is not None
    det = LabelIssues(seed=seed).fit(model, rec.x, rec.y)
    return [Finding(rec.ids[i], int(i), "label-issues", float(det.scores_[i]),
                    f"labelled {rec.y[i]}, but out-of-sample models give that label only {1 - det.scores_[i]:.1%}",
                    "cleanlab")
            for i in np.flatnonzero(det.labels_)]


def _poison(rec: Records, model: Any, seed: int, report_unconfirmed: bool, confirm: bool = True) -> list[Finding]:
    """Spectre with the overlay confirmation: poison findings only in classes where the flagged records carry
    a label-forcing feature; unusual records of unconfirmed classes become outlier findings when asked for
    (``report_unconfirmed``), never poison ones, so ``clean`` keeps them (see ``bastion.detect.spectre``).
    ``confirm=False``: every record Spectre flags is a poison finding (catches triggers an overlay destroys,
    such as a faint blend, at the price of the honest rare records Spectre also flags)."""
    from bastion.detect import Spectre

    assert rec.y is not None
    if not confirm:
        plain = Spectre(seed=seed)
        plain.fit(model, rec.x, rec.y)
        t = float(np.asarray(plain.threshold_))
        return [Finding(rec.ids[i], int(i), "poison", float(plain.scores_[i]),
                        f"class {rec.y[i]}: robust distance {plain.scores_[i]:.2f}x the class median in penultimate "
                        f"activations (threshold {t:.2f}); not confirmed by the overlay test (switched off)", "spectre")
                for i in np.flatnonzero(plain.labels_)]
    det = Spectre(seed=seed, confirm=True)
    det.fit(model, rec.x, rec.y)
    pv = det.overlay_pvalues_
    thr = np.asarray(det.threshold_)
    out = []
    for i in np.flatnonzero(det.labels_):
        c = int(rec.y[i])
        out.append(Finding(rec.ids[i], int(i), "poison", float(det.scores_[i]),
                           f"class {c}: robust distance {det.scores_[i]:.2f}x the class median in penultimate "
                           f"activations (threshold {thr[c]:.2f}); overlaid on other classes' records, the class's "
                           f"flagged records keep their label more than its others (p={pv.get(c, 1.0):.2g}, "
                           f"AUC {det.overlay_auc_.get(c, 0.5):.2f})", "spectre"))
    if report_unconfirmed:
        for i in np.flatnonzero(~det.labels_ & (det.scores_ > det.screen_threshold_)):
            c = int(rec.y[i])
            out.append(Finding(rec.ids[i], int(i), "outliers", float(det.scores_[i]),
                               f"class {c}: robust distance {det.scores_[i]:.2f}x the class median in penultimate "
                               f"activations (threshold {det.screen_threshold_:.2f}), but no sign of a trigger: "
                               f"overlaid on other classes' records they do not keep their label clearly more often than "
                               f"the class's other records (p={pv.get(c, 1.0):.2g}, AUC {det.overlay_auc_.get(c, 0.5):.2f}); an unusual "
                               "sub-population, not removed",
                               "spectre"))
    return out


def audit(rec: Records, *, model: Any = None, test: Records | None = None, checks: tuple[str, ...] = CHECKS,
          outlier_rate: float = 0.01, seed: int = 0, confirm_poison: bool = True) -> AuditResult:
    """Run ``checks`` on ``rec``; ``test`` enables the leakage check, a PyTorch ``model`` the poison check
    (``confirm_poison``: only classes the overlay test confirms, see ``_poison``)."""
    res = AuditResult(str(rec.path), len(rec), list(checks))
    if "duplicates" in checks:
        res.findings += _duplicates(rec)
    if "near-duplicates" in checks:
        res.findings += _near_duplicates(rec, res.rows(["duplicates"]))
    if "leakage" in checks:
        if test is None:
            res.skipped["leakage"] = "no --test data given"
        else:
            res.findings += _leakage(rec, test)
    if "outliers" in checks:
        res.findings += _outliers(rec, outlier_rate, seed)
    counts = np.bincount(rec.y) if rec.y is not None else np.zeros(0, dtype=int)
    enough = rec.y is not None and (counts > 0).sum() >= 2 and counts[counts > 0].min() >= 5
    torch_model = model is not None and not hasattr(model, "predict_proba")
    if "label-issues" in checks:
        if not enough:
            res.skipped["label-issues"] = "needs labels of at least two classes, five records each"
        else:
            res.findings += _label_issues(rec, model if torch_model else None, seed)
    if "poison" in checks:
        if model is None or not torch_model:
            res.skipped["poison"] = "needs --model (a PyTorch model trained on this data)"
        elif not enough:
            res.skipped["poison"] = "needs labels of at least two classes, five records each"
        else:
            res.findings += _poison(rec, model, seed, "outliers" in checks, confirm_poison)
    return res

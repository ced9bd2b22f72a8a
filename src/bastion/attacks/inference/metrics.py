"""How well a membership score separates members from non-members.

Carlini et al. (2022, "Membership Inference Attacks From First Principles") argue that average-case
figures (accuracy, AUC) hide what matters: whether an attack can identify *some* members with near
certainty. So every result reports the true-positive rate at 0.1 % and 1 % false-positive rate beside the
AUC and the balanced accuracy. Note the resolution: with n non-members the smallest non-zero FPR is 1/n,
so "TPR at 0.1 % FPR" on fewer than 1,000 non-members means "TPR with no false positive at all".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from bastion.errors import InputError

#: the low false-positive rates reported for every attack
LOW_FPRS = (0.001, 0.01)
#: ROC points kept for plots and JSON (the curve is subsampled, the metrics are exact)
CURVE_POINTS = 200


def _np(a: Tensor | np.ndarray) -> np.ndarray:
    arr = a.detach().cpu().double().numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=np.float64)
    return arr.reshape(-1)


def roc(members: np.ndarray, non_members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact ROC curve (fpr, tpr) of "score above threshold means member", from (0, 0) to (1, 1)."""
    from sklearn.metrics import roc_curve

    labels = np.r_[np.ones(members.size), np.zeros(non_members.size)]
    fpr, tpr, _ = roc_curve(labels, np.r_[members, non_members], drop_intermediate=False)
    return fpr, tpr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR among thresholds whose FPR is at most ``target``."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


@dataclass
class MembershipResult:
    """Scores of one attack on members and non-members, and what they are worth."""

    attack: str
    auc: float
    balanced_accuracy: float
    tpr_at_fpr: dict[float, float]
    n_members: int
    n_non_members: int
    queries: int = 0
    curve: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    notes: list[str] = field(default_factory=list)

    @property
    def advantage(self) -> float:
        """Yeom et al.'s membership advantage, max over thresholds of TPR - FPR (= 2 * balanced acc - 1)."""
        return 2.0 * self.balanced_accuracy - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "auc": self.auc, "balanced_accuracy": self.balanced_accuracy,
                "advantage": self.advantage,
                "tpr_at_fpr": {f"{k:g}": v for k, v in self.tpr_at_fpr.items()},
                "n_members": self.n_members, "n_non_members": self.n_non_members, "queries": self.queries,
                "roc_curve": {"fpr": self.curve[0], "tpr": self.curve[1]}, "notes": list(self.notes)}


def membership_metrics(attack: str, members: Tensor | np.ndarray, non_members: Tensor | np.ndarray,
                       queries: int = 0, notes: list[str] | None = None) -> MembershipResult:
    """Metrics of a score where higher means "more likely a member".

    ``balanced_accuracy`` is the best over thresholds (an upper bound an attacker reaches only by knowing
    the threshold; the AUC and low-FPR TPRs need no threshold).
    """
    m, n = _np(members), _np(non_members)
    if m.size == 0 or n.size == 0:
        raise InputError("members/non_members", (m.size, n.size), "at least one score on each side")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        # -inf/+inf are legitimate extreme scores; map them inside the finite range keeping the order
        both = np.r_[m, n]
        finite = both[np.isfinite(both)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        m = np.nan_to_num(m, nan=lo - 2, neginf=lo - 1, posinf=hi + 1)
        n = np.nan_to_num(n, nan=lo - 2, neginf=lo - 1, posinf=hi + 1)
    fpr, tpr = roc(m, n)
    auc = float(np.trapezoid(tpr, fpr))
    balanced = float(((tpr + 1.0 - fpr) / 2.0).max())
    idx = np.unique(np.linspace(0, fpr.size - 1, min(CURVE_POINTS, fpr.size)).round().astype(int))
    return MembershipResult(attack=attack, auc=auc, balanced_accuracy=balanced,
                            tpr_at_fpr={f: tpr_at_fpr(fpr, tpr, f) for f in LOW_FPRS},
                            n_members=int(m.size), n_non_members=int(n.size), queries=queries,
                            curve=([float(v) for v in fpr[idx]], [float(v) for v in tpr[idx]]),
                            notes=list(notes or []))


__all__ = ["LOW_FPRS", "MembershipResult", "membership_metrics", "roc", "tpr_at_fpr"]

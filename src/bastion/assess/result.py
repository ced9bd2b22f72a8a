"""What :func:`bastion.evaluate` returns: the robustness curve, per-example worst case, findings, settings.

Tensors stay tensors on the result (so tests and callers can re-check every adversarial example);
``to_dict`` turns everything a report needs into plain JSON-safe data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: severities of a :class:`Finding`, most serious first
SEVERITIES = ("high", "warning", "info")


@dataclass
class Finding:
    """One result of a gradient-masking check: what was checked, how serious, and the numbers behind it."""

    check: str
    severity: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity, "message": self.message,
                "evidence": _json_safe(self.evidence)}


@dataclass
class AttackStats:
    """How one attack of the ensemble did: examples it broke first (per epsilon), its time and queries."""

    name: str
    family: str  # "white-box" or "black-box"
    description: str
    broken: list[int]  # per epsilon, in the order the epsilons were given
    attempted: list[int] = field(default_factory=list)  # examples it was run on, per epsilon
    seconds: float = 0.0
    queries: int = 0
    runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "description": self.description,
                "broken": list(self.broken), "attempted": list(self.attempted), "seconds": round(self.seconds, 4), "queries": self.queries,
                "runs": self.runs}


@dataclass
class KeptExample:
    """One adversarial example kept for the report (first ``keep_examples`` broken ones)."""

    index: int
    x: Tensor
    x_adv: Tensor
    label: int
    clean_pred: int
    adv_pred: int
    epsilon: float
    attack: str
    distance: float

    def to_dict(self, with_arrays: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "label": self.label, "clean_pred": self.clean_pred,
                               "adv_pred": self.adv_pred, "epsilon": self.epsilon, "attack": self.attack,
                               "distance": _num(self.distance)}
        if with_arrays:
            out["x"] = self.x.detach().cpu().tolist()
            out["x_adv"] = self.x_adv.detach().cpu().tolist()
        return out


@dataclass
class EvaluationResult:
    """The outcome of :func:`bastion.evaluate`.

    ``robust_accuracy[i]`` is the fraction of all examples classified correctly by the real model on the
    worst adversarial any attack found within ``epsilons[i]`` (epsilons keep the order they were given).
    Per example: ``broken_eps`` (smallest epsilon at which it was broken, ``inf`` if never, 0 if the clean
    input is already misclassified), ``broken_by``, ``x_adv`` (the adversarial, or the input itself),
    ``adv_pred`` and ``distance`` (norm of the perturbation).
    """

    norm: str
    epsilons: list[float]
    epsilon_labels: list[str]
    n_examples: int
    clean_accuracy: float
    robust_accuracy: list[float]
    correct: Tensor
    broken_eps: Tensor
    broken_by: list[str | None]
    x_adv: Tensor
    adv_pred: Tensor
    distance: Tensor
    attacks: list[AttackStats]
    findings: list[Finding]
    examples: list[KeptExample]
    settings: dict[str, Any]
    timings: dict[str, float]

    # --- views -----------------------------------------------------------------------------------
    @property
    def curve(self) -> list[tuple[float, float]]:
        """(epsilon, robust accuracy) pairs sorted by epsilon, for plotting."""
        return sorted(zip(self.epsilons, self.robust_accuracy, strict=True))

    @property
    def passed_checks(self) -> bool:
        """True when no gradient-masking check raised a warning or worse."""
        return not any(f.severity in ("high", "warning") for f in self.findings)

    def robust_accuracy_at(self, epsilon: float) -> float:
        for e, a in zip(self.epsilons, self.robust_accuracy, strict=True):
            if math.isclose(e, epsilon, rel_tol=1e-9, abs_tol=1e-12):
                return a
        raise KeyError(epsilon)

    def __repr__(self) -> str:
        curve = ", ".join(f"{lab}: {a:.1%}" for lab, a in zip(self.epsilon_labels, self.robust_accuracy,
                                                               strict=True))
        return (f"EvaluationResult(norm={self.norm!r}, n={self.n_examples}, clean={self.clean_accuracy:.1%}, "
                f"robust={{{curve}}}, findings={len(self.findings)})")

    # --- serialisation ---------------------------------------------------------------------------
    def to_dict(self, with_arrays: bool = False) -> dict[str, Any]:
        """Plain JSON-safe data; ``with_arrays`` adds the kept examples' inputs as nested lists."""
        broken_at = [None if not math.isfinite(float(v)) else float(v) for v in self.broken_eps.cpu()]
        return {
            "norm": self.norm,
            "epsilons": list(self.epsilons),
            "epsilon_labels": list(self.epsilon_labels),
            "n_examples": self.n_examples,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": {lab: acc for lab, acc in zip(self.epsilon_labels, self.robust_accuracy,
                                                             strict=True)},
            "curve": [{"epsilon": e, "label": lab, "robust_accuracy": a}
                      for e, lab, a in zip(self.epsilons, self.epsilon_labels, self.robust_accuracy, strict=True)],
            "attacks": [a.to_dict() for a in self.attacks],
            "findings": [f.to_dict() for f in self.findings],
            "per_example": {
                "correct": [bool(v) for v in self.correct.cpu()],
                "broken_at": broken_at,
                "broken_by": list(self.broken_by),
                "adv_pred": [int(v) for v in self.adv_pred.cpu()],
                "distance": [_num(float(v)) for v in self.distance.cpu()],
            },
            "examples": [k.to_dict(with_arrays) for k in self.examples],
            "settings": _json_safe(self.settings),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def to_json(self, indent: int | None = 2, with_arrays: bool = False) -> str:
        return json.dumps(self.to_dict(with_arrays), indent=indent, allow_nan=False)

    def save_html(self, path: str | Path) -> Path:
        """Write one self-contained HTML report (inline SVG and images, no external assets)."""
        from bastion.assess.report_html import render_html

        p = Path(path)
        p.write_text(render_html(self), encoding="utf-8")
        return p

    def save_markdown(self, path: str | Path) -> Path:
        from bastion.assess.report_markdown import render_markdown

        p = Path(path)
        p.write_text(render_markdown(self), encoding="utf-8")
        return p

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write report.html, report.md and result.json into ``directory`` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = {"html": self.save_html(d / "report.html"), "markdown": self.save_markdown(d / "report.md")}
        (d / "result.json").write_text(self.to_json(), encoding="utf-8")
        out["json"] = d / "result.json"
        return out


def _num(v: float) -> float | None:
    """JSON has no inf/NaN: an infinite or undefined number becomes null."""
    return v if math.isfinite(v) else None


def _json_safe(obj: Any) -> Any:
    """Recursively turn tensors, tuples, paths and non-finite floats into JSON-safe values."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Tensor):
        return _json_safe(obj.detach().cpu().tolist())
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return _num(obj)
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return _json_safe(obj.item())
    return str(obj)

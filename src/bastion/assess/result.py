"""What :func:`bastion.evaluate` returns: the robustness curve, per-example worst case, findings, settings.

Tensors stay tensors on the result (so tests and callers can re-check every adversarial example);
``to_dict`` turns everything a report needs into plain JSON-safe data.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: severities of a :class:`Finding`, most serious first
SEVERITIES = ("high", "warning", "info")
#: verdicts a report can carry
PASS, FAIL, NO_GATE = "PASS", "FAIL", "NO GATE"
#: result.json keeps the kept examples' pixels (so `bastion report` can redraw them) up to this size each
MAX_STORED_FEATURES = 4096
#: files read per chunk when hashing
_CHUNK = 1 << 20


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file; of a folder, of its sorted relative paths and their files' digests."""
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f.relative_to(p).as_posix().encode() + b"\0" + sha256_of(f).encode() + b"\n")
        return h.hexdigest()
    h = hashlib.sha256()
    with p.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def provenance(model: str | Path | None = None, data: str | Path | None = None,
               command: Sequence[str] | None = None) -> dict[str, Any]:
    """What a report must name to be signed off alone: files and their SHA-256, command, version, time (UTC)."""
    from bastion import __version__

    def ident(path: str | Path | None) -> dict[str, Any] | None:
        if path is None:
            return None
        p = Path(path)
        return {"path": str(p), "resolved": str(p.resolve()), "sha256": sha256_of(p) if p.exists() else None}

    argv = list(command) if command is not None else None
    return {"model": ident(model), "data": ident(data),
            "command": shlex.join(argv) if argv is not None else None,
            "bastion_version": __version__, "python": sys.version.split()[0], "created": _now()}


def robustness_gate(epsilon_labels: Sequence[str], robust_accuracy: Sequence[float], findings: Sequence[Finding],
                    min_robust_accuracy: float | None, allow_masking: bool = False) -> dict[str, Any]:
    """The CI gate of ``bastion evaluate`` as data: thresholds, one PASS/FAIL per check, and the verdict.

    Robust accuracy must reach the threshold at every epsilon, and (unless ``allow_masking``) no HIGH
    gradient-masking finding may say the number is an artefact. Without a threshold there is no gate.
    """
    if min_robust_accuracy is None:
        return {"verdict": NO_GATE, "min_robust_accuracy": None, "allow_masking": allow_masking, "checks": []}
    checks: list[dict[str, Any]] = [
        {"check": f"robust accuracy at ε={lab}", "threshold": f">= {min_robust_accuracy:g}", "value": acc,
         "result": PASS if acc >= min_robust_accuracy else FAIL}
        for lab, acc in zip(epsilon_labels, robust_accuracy, strict=True)]
    high = [f.check for f in findings if f.severity == "high"]
    checks.append({"check": "no HIGH gradient-masking finding",
                   "threshold": "waived (--allow-masking)" if allow_masking else "none allowed",
                   "value": ", ".join(high) or "none",
                   "result": PASS if allow_masking or not high else FAIL})
    verdict = PASS if all(c["result"] == PASS for c in checks) else FAIL
    return {"verdict": verdict, "min_robust_accuracy": min_robust_accuracy, "allow_masking": allow_masking,
            "checks": checks}


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
    #: the gate it was judged by (:func:`robustness_gate`); "NO GATE" when none was given
    gate: dict[str, Any] = field(default_factory=lambda: {"verdict": NO_GATE, "checks": []})
    #: model and data files with SHA-256, command line, Bastion version, time (:func:`provenance`)
    provenance: dict[str, Any] = field(default_factory=provenance)
    #: True when robust accuracy comes from score/decision-based attacks alone (then it is an upper bound)
    upper_bound: bool = False
    #: the black-box attacks that set that upper bound
    bounded_by: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return str(self.gate.get("verdict", NO_GATE))

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
            "verdict": self.verdict,
            "gate": _json_safe(self.gate),
            "provenance": _json_safe(self.provenance),
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
            "upper_bound": self.upper_bound,
            "bounded_by": list(self.bounded_by),
        }

    def to_json(self, indent: int | None = 2, with_arrays: bool = False) -> str:
        return json.dumps(self.to_dict(with_arrays), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        """Rebuild a result from :meth:`to_dict` output (a saved result.json), for re-rendering reports.

        The per-example adversarial inputs are not stored, so ``x_adv`` is empty; kept examples come back
        with their pixels when result.json holds them (inputs of up to ``MAX_STORED_FEATURES`` values).
        """
        try:
            labels = [str(v) for v in data["epsilon_labels"]]
            per = data["per_example"]
            examples = []
            for k in data.get("examples", []):
                if "x" not in k or "x_adv" not in k:
                    continue
                examples.append(KeptExample(
                    index=int(k["index"]), x=torch.tensor(k["x"]), x_adv=torch.tensor(k["x_adv"]),
                    label=int(k["label"]), clean_pred=int(k["clean_pred"]), adv_pred=int(k["adv_pred"]),
                    epsilon=float(k["epsilon"]), attack=str(k["attack"]),
                    distance=math.inf if k["distance"] is None else float(k["distance"])))
            return cls(
                norm=str(data["norm"]), epsilons=[float(e) for e in data["epsilons"]], epsilon_labels=labels,
                n_examples=int(data["n_examples"]), clean_accuracy=float(data["clean_accuracy"]),
                robust_accuracy=[float(data["robust_accuracy"][lab]) for lab in labels],
                correct=torch.tensor([bool(v) for v in per["correct"]]),
                broken_eps=torch.tensor([math.inf if v is None else float(v) for v in per["broken_at"]]),
                broken_by=list(per["broken_by"]), x_adv=torch.empty(0),
                adv_pred=torch.tensor([int(v) for v in per["adv_pred"]], dtype=torch.long),
                distance=torch.tensor([math.inf if v is None else float(v) for v in per["distance"]]),
                attacks=[AttackStats(**a) for a in data["attacks"]],
                findings=[Finding(**f) for f in data["findings"]],
                examples=examples, settings=dict(data.get("settings", {})),
                timings={k: float(v) for k, v in data.get("timings", {}).items()},
                gate=dict(data.get("gate") or {"verdict": NO_GATE, "checks": []}),
                provenance=dict(data.get("provenance") or {}),
                upper_bound=bool(data.get("upper_bound", False)),
                bounded_by=[str(v) for v in data.get("bounded_by", [])])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            from bastion.errors import InputError

            raise InputError("result", f"JSON without a valid {exc}", "a result.json written by "
                             "`bastion evaluate --report` or EvaluationResult.save") from None

    def save_html(self, path: str | Path) -> Path:
        """Write one self-contained HTML report (inline SVG and images, no external assets)."""
        from bastion.assess.report_html import render_html

        return _write(Path(path), render_html(self))

    def save_markdown(self, path: str | Path) -> Path:
        from bastion.assess.report_markdown import render_markdown

        return _write(Path(path), render_markdown(self))

    def save_json(self, path: str | Path) -> Path:
        """Write result.json; the kept examples' inputs are included when small enough to redraw them."""
        small = all(k.x.numel() <= MAX_STORED_FEATURES for k in self.examples)
        return _write(Path(path), self.to_json(with_arrays=small))

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write report.html, report.md and result.json into ``directory`` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return {"html": self.save_html(d / "report.html"), "markdown": self.save_markdown(d / "report.md"),
                "json": self.save_json(d / "result.json")}


def _write(path: Path, text: str) -> Path:
    """Write through a temporary file and a rename: a crash never leaves half a report."""
    from bastion.atomic import write_text_atomic

    return write_text_atomic(path, text)


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

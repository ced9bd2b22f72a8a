"""The gate a model version passes to be registered and promoted, and the evidence it is judged on.

    push:
      signature: required          # required | optional
      scan_fail_on: high           # a finding at or above this severity refuses the push
    promote:
      staging: {}
      production:
        robust_accuracy: {norm: linf, eps: 0.1, min: 0.5}
        max_mia_auc: 0.6
        data_manifest: required
        allow_upper_bound: false   # black-box-only robustness figures are upper bounds: not enough
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bastion.errors import InputError

DEFAULT_POLICY: dict[str, Any] = {
    "push": {"signature": "required", "scan_fail_on": "high"},
    "promote": {"staging": {}, "production": {}},
}
_STAGE_KEYS = {"robust_accuracy", "max_mia_auc", "data_manifest", "allow_upper_bound", "min_clean_accuracy"}


@dataclass(frozen=True)
class GatePolicy:
    signature_required: bool = True
    scan_fail_on: str = "high"
    stages: dict[str, dict[str, Any]] = field(default_factory=lambda: {"staging": {}, "production": {}})

    @classmethod
    def from_dict(cls, raw: Any, source: str = "policy") -> GatePolicy:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict) or set(raw) - {"push", "promote"}:
            raise InputError(source, _short(raw), "a mapping with 'push' and/or 'promote' sections")
        push = raw.get("push") or {}
        sig = str(push.get("signature", "required"))
        if sig not in ("required", "optional"):
            raise InputError(f"{source}: push.signature", sig, "'required' or 'optional'")
        from bastion.scan.findings import Severity

        fail_on = Severity.parse(str(push.get("scan_fail_on", "high")), f"{source}: push.scan_fail_on").name.lower()
        stages: dict[str, dict[str, Any]] = {"staging": {}, "production": {}}
        promote = raw.get("promote") or {}
        if not isinstance(promote, dict):
            raise InputError(f"{source}: promote", _short(promote), "a mapping of stage name to its gate")
        for stage, gate in promote.items():
            if stage not in ("staging", "production"):
                raise InputError(f"{source}: promote", stage, "'staging' or 'production'")
            gate = gate or {}
            unknown = sorted(set(gate) - _STAGE_KEYS)
            if unknown:
                raise InputError(f"{source}: promote.{stage}", unknown, f"keys among {sorted(_STAGE_KEYS)}")
            ra = gate.get("robust_accuracy")
            if ra is not None and not (isinstance(ra, dict) and {"eps", "min"} <= set(ra)):
                raise InputError(f"{source}: promote.{stage}.robust_accuracy", ra, "{norm: linf, eps: 0.1, min: 0.5}")
            stages[stage] = dict(gate)
        return cls(sig == "required", fail_on, stages)

    @classmethod
    def load(cls, path: str | Path | None) -> GatePolicy:
        if path is None:
            return cls.from_dict(DEFAULT_POLICY)
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError("--policy", str(p), f"a readable YAML policy file ({exc})") from exc
        return cls.from_dict(raw, str(p))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def extract_evidence(path: Path) -> dict[str, Any]:
    """Figures a gate can use from a saved result: `bastion evaluate`'s result.json, a privacy audit's."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError("--evidence", str(path), f"a JSON result file ({exc})") from exc
    if not isinstance(raw, dict):
        raise InputError("--evidence", str(path), "a JSON object")
    out: dict[str, Any] = {}
    curve = raw.get("curve")
    if isinstance(curve, list) and isinstance(raw.get("norm"), str):
        upper = bool(raw.get("upper_bound") or raw.get("blackbox_only"))
        out["robust_accuracy"] = [{"norm": raw["norm"], "eps": float(c["epsilon"]),
                                   "value": float(c["robust_accuracy"]), "upper_bound": upper}
                                  for c in curve if isinstance(c, dict) and "epsilon" in c]
        if isinstance(raw.get("clean_accuracy"), int | float):
            out["clean_accuracy"] = float(raw["clean_accuracy"])
    aucs = list(_membership_aucs(raw, inside=False))
    if isinstance(raw.get("mia_auc"), int | float):
        aucs.append(float(raw["mia_auc"]))
    if aucs:
        out["mia_auc"] = max(aucs)  # the strongest attack is the leak
    if not out:
        raise InputError("--evidence", str(path), "a result with a robustness curve (bastion evaluate) or "
                         "membership-inference AUCs (bastion privacy audit)")
    return out


def _membership_aucs(node: Any, inside: bool) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            k = str(key).lower()
            here = inside or "membership" in k or k.startswith("mia")
            if here and k in ("auc", "roc_auc") and isinstance(value, int | float) and not math.isnan(value):
                yield float(value)
            else:
                yield from _membership_aucs(value, here)
    elif isinstance(node, list):
        for item in node:
            yield from _membership_aucs(item, inside)


def judge(stage_gate: dict[str, Any], evidence: dict[str, Any]) -> list[str]:
    """Reasons the evidence fails ``stage_gate`` (empty when it passes)."""
    reasons: list[str] = []
    ra = stage_gate.get("robust_accuracy")
    if ra:
        norm, eps, need = str(ra.get("norm", "linf")), float(ra["eps"]), float(ra["min"])
        rows = [r for r in evidence.get("robust_accuracy", []) if r["norm"] == norm and math.isclose(r["eps"], eps)]
        if not rows:
            reasons.append(f"robust accuracy at {norm} eps={eps}: no evidence (push with --evidence result.json "
                           "from `bastion evaluate` at that budget)")
        else:
            best = min(rows, key=lambda r: r["value"])  # several results: the worst case counts
            if best["upper_bound"] and not stage_gate.get("allow_upper_bound", False):
                reasons.append(f"robust accuracy at {norm} eps={eps}: only a black-box upper bound "
                               f"({best['value']:.3f}); the gate needs a white-box figure")
            elif best["value"] < need:
                reasons.append(f"robust accuracy at {norm} eps={eps}: {best['value']:.3f} < {need}")
    if "min_clean_accuracy" in stage_gate:
        need = float(stage_gate["min_clean_accuracy"])
        got = evidence.get("clean_accuracy")
        if got is None or got < need:
            reasons.append(f"clean accuracy: {got if got is not None else 'no evidence'} < {need}")
    if "max_mia_auc" in stage_gate:
        cap = float(stage_gate["max_mia_auc"])
        got = evidence.get("mia_auc")
        if got is None:
            reasons.append("membership-inference AUC: no evidence (push with --evidence from `bastion privacy audit`)")
        elif got > cap:
            reasons.append(f"membership-inference AUC: {got:.3f} > {cap}")
    if stage_gate.get("data_manifest") == "required" and not evidence.get("data_manifest"):
        reasons.append("data manifest: none recorded (push with --data-manifest)")
    return reasons

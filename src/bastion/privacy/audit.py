"""One call that measures every privacy and IP leak that applies to a model, with ATLAS ids and gates.

:func:`audit` runs, by the model's capabilities and the data's shape:

- membership inference (AML.T0024.000): loss and confidence thresholds, LiRA online and offline and
  Shokri's attack over one set of shadow models (scores needed), and the label-only attack (always);
- model inversion (AML.T0024.001): MI-Face, white-box with gradients, black-box with scores (images only);
- attribute inference (AML.T0024.001): one hidden column of tabular records (scores needed);
- extraction (AML.T0024.002): equation solving when the model turns out log-linear, Knockoff Nets with
  scores or Jacobian augmentation with labels only, at two budgets, then transfer of PGD examples crafted
  on the copy. A copied model *file* (AML.T0025, exfiltration via cyber means) is a perfect copy: artefact
  protection (``bastion sign``, access control) is the mitigation there, not output coarsening.

The non-members are the attacker's own data for the attacks that need some (extraction pool, inversion
evaluator, attribute baselines); members and non-members pooled are the shadows' population.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.core.adapters import Capability, Model, wrap
from bastion.errors import InputError

ATTACKS = ("mia", "inversion", "attribute", "extraction")
ATLAS = {"mia": "AML.T0024.000", "inversion": "AML.T0024.001", "attribute": "AML.T0024.001",
         "extraction": "AML.T0024.002"}
TITLES = {"mia": "Membership inference", "inversion": "Model inversion", "attribute": "Attribute inference",
          "extraction": "Model extraction"}
NO_GATE, PASS, FAIL = "NO GATE", "PASS", "FAIL"

Progress = Callable[[str], None]


@dataclass
class PrivacyReport:
    """Everything :func:`audit` measured; ``to_dict`` is the JSON report."""

    model: dict[str, Any]
    n_members: int
    n_non_members: int
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: for the HTML report only (not JSON): ROC curves and reconstruction images
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return str(self.gate.get("verdict", NO_GATE))

    def max_mia_auc(self) -> float | None:
        mia = self.sections.get("mia")
        return max(r["auc"] for r in mia["results"]) if mia and mia["results"] else None

    def max_extraction_fidelity(self) -> float | None:
        ext = self.sections.get("extraction")
        vals = [r["fidelity"] for r in ext["results"] if r.get("fidelity") is not None] if ext else []
        return max(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "n_members": self.n_members, "n_non_members": self.n_non_members,
                "sections": self.sections, "skipped": self.skipped, "gate": self.gate,
                "verdict": self.verdict, "provenance": self.provenance}


def parse_attacks(text: str | None) -> list[str]:
    if text is None or text.strip() in ("", "all"):
        return list(ATTACKS)
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in chosen if t not in ATTACKS]
    if bad or not chosen:
        raise InputError("--attacks", repr(text), f"a comma-separated subset of {', '.join(ATTACKS)}")
    return chosen


def _mia(model: Model, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor], shadows: int,
         shadow_epochs: int, seed: int, report: PrivacyReport, say: Progress) -> None:
    from bastion.attacks.inference import (
        ConfidenceThreshold,
        LabelOnlyAttack,
        LiRA,
        LossThreshold,
        ShadowAttack,
    )

    results = []
    if Capability.SCORES in model.capabilities:
        say("membership: thresholds")
        results.append(LossThreshold().run(model, members, non_members))
        results.append(ConfidenceThreshold().run(model, members, non_members))
        say(f"membership: training {shadows} shadow models")
        lira = LiRA(n_shadows=shadows, shadow_epochs=shadow_epochs, seed=seed)
        results.append(lira.run(model, members, non_members))
        results.append(LiRA(online=False, pool=lira.pool_).run(model, members, non_members))
        results.append(ShadowAttack(pool=lira.pool_, seed=seed).run(model, members, non_members))
    say("membership: label-only")
    results.append(LabelOnlyAttack(seed=seed).run(model, members, non_members))
    report.sections["mia"] = {"atlas": ATLAS["mia"], "results": [r.to_dict() for r in results]}


def _inversion(model: Model, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor], seed: int,
               report: PrivacyReport, say: Progress) -> None:
    from sklearn.linear_model import LogisticRegression

    from bastion.assess.plots import is_image
    from bastion.attacks.inference.inversion import MIFace, inversion_quality

    shape = tuple(members[0].shape[1:])
    if not is_image(shape):
        report.skipped["inversion"] = f"inputs of shape {shape} are not images (MI-Face reconstructs images)"
        return
    if Capability.SCORES not in model.capabilities:
        report.skipped["inversion"] = "the model returns labels only (MI-Face needs gradients or scores)"
        return
    blackbox = Capability.GRADIENTS not in model.capabilities
    say("inversion: MI-Face" + (" (black-box)" if blackbox else ""))
    res = MIFace(blackbox=blackbox, steps=150 if blackbox else 300, seed=seed).run(model, shape)
    xn, yn = non_members
    evaluator = None
    if torch.unique(yn).numel() > 1:
        evaluator = LogisticRegression(max_iter=2000).fit(xn.reshape(xn.shape[0], -1).numpy(), yn.numpy())
    inversion_quality(res, members[0], members[1], evaluator=evaluator, bounds=model.bounds)  # fills res.quality
    report.sections["inversion"] = {"atlas": ATLAS["inversion"], "results": [res.to_dict()],
                                    "evaluator": "logistic regression trained on the non-members"}
    report.figures["reconstructions"] = (res.classes, res.reconstructions, members)


def _attribute(model: Model, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor],
               column: int | None, report: PrivacyReport, say: Progress) -> None:
    from bastion.attacks.inference.attribute import attribute_inference

    x = members[0]
    if x.dim() != 2:
        report.skipped["attribute"] = f"inputs of shape {tuple(x.shape[1:])} are not tabular rows"
        return
    if Capability.SCORES not in model.capabilities:
        report.skipped["attribute"] = "the model returns labels only (attribute inference needs scores)"
        return
    columns = [column] if column is not None else list(range(min(3, x.shape[1])))
    say("attribute inference")
    results = [attribute_inference(model, members[0], members[1], c, non_members).to_dict() for c in columns]
    report.sections["attribute"] = {"atlas": ATLAS["attribute"], "results": results}


def _extraction(model: Model, non_members: tuple[Tensor, Tensor], budget: int, transfer_eps: float | None,
                seed: int, report: PrivacyReport, say: Progress) -> None:
    from bastion.attacks.extraction import (
        EquationSolving,
        JacobianAugmentation,
        KnockoffNets,
        transfer_from_copy,
    )

    xn, yn = non_members
    half = xn.shape[0] // 2
    pool, (ex, ey) = xn[:half], (xn[half:], yn[half:])
    if half < 2 or ex.shape[0] < 2:
        report.skipped["extraction"] = "too few non-members to split into an attacker pool and a held-out set"
        return
    shape = tuple(xn.shape[1:])
    budgets = sorted({max(2, budget // 10), budget})
    results = []
    copies = []
    if Capability.SCORES in model.capabilities:
        d = int(np.prod(shape))
        if d + 6 <= budget:
            say("extraction: equation solving")
            eq = EquationSolving(verify=5, seed=seed).run(model, shape, eval_x=ex, eval_y=ey)
            if all("NOT" not in n for n in eq.notes):
                results.append(eq)
                copies.append(eq.copy)
            else:
                report.skipped["equation solving"] = "the model is not log-linear (" + eq.notes[-1] + ")"
        say("extraction: Knockoff Nets")
        ko = KnockoffNets("random", seed=seed).run(model, pool, budgets, eval_x=ex, eval_y=ey)
        results.append(ko)
        copies.append(ko.copy)
    else:
        say("extraction: Jacobian augmentation (labels only)")
        jb = JacobianAugmentation(seed=seed).run(model, pool[:max(10, min(100, budget // 8))], budgets,
                                                 eval_x=ex, eval_y=ey)
        results.append(jb)
        copies.append(jb.copy)
    section: dict[str, Any] = {"atlas": ATLAS["extraction"], "results": [r.to_dict() for r in results],
                               "note": "A copied model file (AML.T0025) is a perfect copy: protect and sign artefacts."}
    best = max(results, key=lambda r: r.fidelity or 0.0)
    lo, hi = model.bounds
    eps = transfer_eps if transfer_eps is not None else 0.1 * (hi - lo)
    say("extraction: transfer attack from the copy")
    try:
        tr = transfer_from_copy(best.copy, model, ex, ey, eps)
        section["transfer"] = {"from": best.attack, **tr.to_dict()}
    except InputError as exc:
        section["transfer"] = {"skipped": str(exc)}
    report.sections["extraction"] = section


def audit(model: Any, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor], *,
          attacks: list[str] | None = None, budget: int = 2000, shadows: int = 8, shadow_epochs: int = 30,
          attribute_column: int | None = None, transfer_eps: float | None = None,
          max_mia_auc: float | None = None, max_extraction_fidelity: float | None = None, seed: int = 0,
          progress: Progress | None = None) -> PrivacyReport:
    """Run the privacy and IP attacks that apply; gate on the worst membership AUC and extraction fidelity."""
    target = wrap(model)
    chosen = list(ATTACKS) if attacks is None else attacks
    for (x, y), name in ((members, "members"), (non_members, "non_members")):
        if x.shape[0] != y.shape[0] or x.shape[0] < 2:
            raise InputError(name, f"{x.shape[0]} inputs and {y.shape[0]} labels",
                             "at least 2 labelled records, one label per input")
    if members[0].shape[1:] != non_members[0].shape[1:]:
        raise InputError("non_members", f"inputs of shape {tuple(non_members[0].shape[1:])}",
                         f"the members' shape {tuple(members[0].shape[1:])}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 10:
        raise InputError("budget", budget, "an integer >= 10 (victim queries for extraction)")
    for name, value in (("max_mia_auc", max_mia_auc), ("max_extraction_fidelity", max_extraction_fidelity)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise InputError(name, value, "a fraction in [0, 1]")
    members = (members[0].float(), members[1].long())
    non_members = (non_members[0].float(), non_members[1].long())
    target.probe(members[0][:1], "members")
    say = progress or (lambda _msg: None)
    report = PrivacyReport(model=target.describe(), n_members=int(members[0].shape[0]),
                           n_non_members=int(non_members[0].shape[0]))
    torch.manual_seed(seed)
    if "mia" in chosen:
        _mia(target, members, non_members, shadows, shadow_epochs, seed, report, say)
    if "inversion" in chosen:
        _inversion(target, members, non_members, seed, report, say)
    if "attribute" in chosen:
        _attribute(target, members, non_members, attribute_column, report, say)
    if "extraction" in chosen:
        _extraction(target, non_members, budget, transfer_eps, seed, report, say)
    report.gate = _gate(report, max_mia_auc, max_extraction_fidelity)
    return report


def _gate(report: PrivacyReport, max_auc: float | None, max_fid: float | None) -> dict[str, Any]:
    checks = []
    for check, limit, value in (("membership inference AUC (worst attack)", max_auc, report.max_mia_auc()),
                                ("extraction fidelity (best copy)", max_fid, report.max_extraction_fidelity())):
        if limit is None:
            continue
        result = "NOT RUN" if value is None else (FAIL if value > limit else PASS)
        checks.append({"check": check, "threshold": f"<= {limit:g}", "value": value, "result": result})
    if not checks:
        verdict = NO_GATE
    elif any(c["result"] == FAIL for c in checks):
        verdict = FAIL
    elif any(c["result"] == "NOT RUN" for c in checks):
        verdict = "INCOMPLETE"
    else:
        verdict = PASS
    return {"verdict": verdict, "max_mia_auc": max_auc, "max_extraction_fidelity": max_fid, "checks": checks}


__all__ = ["ATLAS", "ATTACKS", "PrivacyReport", "audit", "parse_attacks"]

"""The checks of an assessment: what each one tests, the threat it stands for, and its outcome.

Each check is mapped to the MITRE ATLAS technique it simulates (and the ATLAS mitigations that address
it) and to the attack class of NIST AI 100-2 (Adversarial Machine Learning: a taxonomy), so a scorecard
reads the same way as a threat model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: verdicts, in the order a scorecard sorts them
PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"
VERDICTS = (FAIL, ERROR, PASS, SKIP)


@dataclass(frozen=True)
class CheckInfo:
    """What a check is, independent of any run."""

    id: str
    title: str
    atlas_technique: str
    atlas_name: str
    atlas_mitigations: tuple[str, ...]
    nist_class: str
    description: str


CATALOGUE: dict[str, CheckInfo] = {c.id: c for c in (
    CheckInfo("scan", "Model file scan", "AML.T0011.000", "User Execution: Unsafe ML Artifacts",
              ("AML.M0016", "AML.M0011"), "Supply chain: malicious model artefact",
              "Static scan of the model file for code that runs when it is loaded (pickle globals, "
              "TorchScript/ONNX oddities), without loading it."),
    CheckInfo("signature", "Signature and integrity", "AML.T0010.003", "ML Supply Chain Compromise: Model",
              ("AML.M0013", "AML.M0014"), "Supply chain: model tampering",
              "Signed manifest of the model's folder: the signature holds and every file matches it."),
    CheckInfo("clean_accuracy", "Clean accuracy", "AML.T0015", "Evade ML Model",
              ("AML.M0008",), "Evasion (baseline)",
              "Accuracy on the unperturbed test data: the reference the robust figures are read against."),
    CheckInfo("robust_accuracy", "Robust accuracy (evasion)", "AML.T0043", "Craft Adversarial Data",
              ("AML.M0003", "AML.M0015", "AML.M0006"), "Evasion",
              "Accuracy on the worst adversarial example an attack ensemble finds within the budget, with "
              "gradient-masking checks."),
    CheckInfo("certified_accuracy", "Certified accuracy", "AML.T0043", "Craft Adversarial Data",
              ("AML.M0003",), "Evasion (certified defence)",
              "Fraction of test examples whose smoothed prediction is correct and provably constant within "
              "an L2 radius (randomized smoothing)."),
    CheckInfo("poisoning", "Training-data poisoning audit", "AML.T0020", "Poison Training Data",
              ("AML.M0007",), "Poisoning (targeted, backdoor)",
              "Largest share of one class's training records a poisoning detector (Spectre) flags."),
    CheckInfo("backdoor", "Backdoor audit of the model", "AML.T0018", "Backdoor ML Model",
              ("AML.M0007",), "Poisoning (backdoor)",
              "Broadest reach of a small patch: the median share of other classes' test inputs it sends to one "
              "class (Neural Cleanse with a patch check; no training data needed)."),
    CheckInfo("membership_inference", "Membership inference", "AML.T0024.000",
              "Exfiltration via ML Inference API: Infer Training Data Membership", ("AML.M0002", "AML.M0004"),
              "Privacy: membership inference",
              "AUC of an attack telling training members from non-members."),
    CheckInfo("extraction", "Model extraction", "AML.T0024.002",
              "Exfiltration via ML Inference API: Extract ML Model", ("AML.M0002", "AML.M0004"),
              "Privacy: model extraction",
              "Fidelity of a surrogate trained from the model's answers."),
)}


@dataclass
class CheckOutcome:
    """One line of the scorecard.

    ``figure`` is the measured number (None when nothing was measured), ``threshold`` the policy's
    bound as text (e.g. ``>= 0.5``), ``reason`` one sentence on why it passed, failed or was skipped,
    ``details`` plain data for the reports.
    """

    id: str
    verdict: str
    reason: str
    figure: float | None = None
    figure_text: str = ""
    threshold: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> CheckInfo:
        return CATALOGUE[self.id]

    def to_dict(self) -> dict[str, Any]:
        i = self.info
        return {"id": self.id, "title": i.title, "verdict": self.verdict, "figure": self.figure,
                "figure_text": self.figure_text, "threshold": self.threshold, "reason": self.reason,
                "atlas_technique": i.atlas_technique, "atlas_name": i.atlas_name,
                "atlas_mitigations": list(i.atlas_mitigations), "nist_class": i.nist_class,
                "seconds": round(self.seconds, 3), "details": self.details}


def skipped(check_id: str, reason: str, threshold: str = "") -> CheckOutcome:
    return CheckOutcome(check_id, SKIP, reason, threshold=threshold)


def pct(v: float) -> str:
    return f"{100 * v:.1f} %"

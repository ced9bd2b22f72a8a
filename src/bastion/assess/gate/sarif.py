"""SARIF 2.1.0 for an assessment: each check is a rule, each outcome a result on the model file.

Code-scanning dashboards (GitHub, GitLab) then show a failed gate next to the model in the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.assess.gate.checks import CATALOGUE, ERROR, FAIL, PASS
from bastion.assess.gate.runner import Assessment

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

#: verdict -> (SARIF result kind, level)
_KIND = {PASS: ("pass", "none"), FAIL: ("fail", "error"), ERROR: ("fail", "warning")}


def _uri(path: str) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            return p.resolve().as_uri()
    return p.as_posix()


def to_sarif(assessment: Assessment) -> dict[str, Any]:
    from bastion import __version__

    rules = [{"id": f"bastion-assess/{c.id}", "name": c.title.replace(" ", ""),
              "shortDescription": {"text": c.title}, "fullDescription": {"text": c.description},
              "properties": {"tags": ["security", c.atlas_technique, *c.atlas_mitigations],
                             "atlas_technique": c.atlas_technique, "atlas_mitigations": list(c.atlas_mitigations),
                             "nist_ai_100_2": c.nist_class}}
             for c in CATALOGUE.values()]
    index = {c: i for i, c in enumerate(CATALOGUE)}
    uri = _uri(str(assessment.provenance.get("model", {}).get("path", "")))
    results = []
    for o in assessment.outcomes:
        kind, level = _KIND.get(o.verdict, ("notApplicable", "none"))
        text = f"{o.info.title}: {o.verdict.upper()}"
        if o.figure_text:
            text += f" ({o.figure_text}, threshold {o.threshold})"
        results.append({
            "ruleId": f"bastion-assess/{o.id}", "ruleIndex": index[o.id], "kind": kind, "level": level,
            "message": {"text": f"{text}: {o.reason}"},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
            "properties": {"verdict": o.verdict, "figure": o.figure, "threshold": o.threshold},
        })
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "bastion-assess", "version": __version__, "rules": rules}},
        "results": results,
        "invocations": [{"executionSuccessful": assessment.verdict != ERROR,
                         "properties": {"verdict": assessment.verdict, "policy": assessment.policy.source}}],
    }]}

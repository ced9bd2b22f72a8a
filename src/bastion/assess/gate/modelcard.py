"""The security section of a Hugging Face model card: YAML metadata plus Markdown, from an assessment.

It lists the tests run, their results against the policy and the provenance of the model and data, the
documentation the GDPR and the EU AI Act ask for (architecture, data provenance, security testing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bastion.assess.gate.checks import SKIP
from bastion.assess.gate.runner import Assessment


def _metadata(a: Assessment) -> dict[str, Any]:
    model = a.provenance.get("model", {})
    return {
        "tags": ["bastion", "security-assessment", "adversarial-robustness"],
        "bastion_assessment": {
            "verdict": a.verdict,
            "date": a.started,
            "budget": a.budget,
            "policy": a.policy.source,
            "policy_sha256": a.policy.sha256,
            "model_file": Path(str(model.get("path", ""))).name,
            "model_sha256": model.get("sha256"),
            "checks": [{"id": o.id, "verdict": o.verdict, "figure": o.figure, "threshold": o.threshold,
                        "atlas_technique": o.info.atlas_technique, "nist_ai_100_2": o.info.nist_class}
                       for o in a.outcomes],
        },
    }


def _data_line(name: str, info: dict[str, Any]) -> str:
    if "error" in info:
        return f"- **{name}**: `{info.get('path')}`, could not be read ({info['error']})"
    parts = [f"`{Path(str(info.get('path'))).name}`"]
    if "examples" in info:
        parts.append(f"{info['examples']} examples of shape {tuple(info.get('input_shape', []))}")
    if "classes" in info:
        parts.append(f"{len(info['classes'])} classes")
    if info.get("sha256"):
        parts.append(f"SHA-256 `{info['sha256']}`")
    return f"- **{name}**: " + ", ".join(parts)


def to_model_card(a: Assessment) -> str:
    front = yaml.safe_dump(_metadata(a), sort_keys=False, allow_unicode=True)
    model = a.provenance.get("model", {})
    adapter = model.get("adapter", {})
    lines = ["---", front.rstrip(), "---", "", f"# Model card: {Path(str(model.get('path', 'model'))).name}", "",
             "## Security assessment", "",
             f"Assessed with Bastion on {a.started} under policy `{a.policy.source}` (budget `{a.budget}`): "
             f"**{a.verdict.upper()}**.", "",
             "| check | result | measured | threshold | MITRE ATLAS | NIST AI 100-2 |", "|---|---|---|---|---|---|"]
    for o in a.outcomes:
        lines.append(f"| {o.info.title} | {o.verdict.upper()} | {o.figure_text or '-'} | {o.threshold or '-'} | "
                     f"{o.info.atlas_technique} | {o.info.nist_class} |")
    lines += ["", "### Tests run", ""]
    for o in a.outcomes:
        if o.verdict != SKIP:
            lines.append(f"- **{o.info.title}**: {o.info.description} Result: {o.reason}.")
    skipped = [o for o in a.outcomes if o.verdict == SKIP]
    if skipped:
        lines += ["", "### Not tested", ""]
        lines += [f"- **{o.info.title}**: {o.reason}." for o in skipped]
    lines += ["", "### Architecture", ""]
    if adapter:
        lines.append(f"- kind: {adapter.get('kind')}; classes: {adapter.get('num_classes')}; input bounds: "
                     f"{adapter.get('bounds')}; offers: {model.get('capabilities')}")
    else:
        lines.append("- not loaded (see the scan result above)")
    lines += ["", "### Provenance", ""]
    if model.get("sha256"):
        lines.append(f"- **model**: `{Path(str(model['path'])).name}`, {model.get('bytes')} bytes, "
                     f"SHA-256 `{model['sha256']}`")
    sig = a.provenance.get("signature")
    if sig:
        lines.append(f"- **signature**: {'valid' if sig.get('ok') else 'INVALID'}, key id `{sig.get('key_id')}`, "
                     f"manifest digest `{sig.get('root_digest')}`")
    for key, name in (("data", "test data"), ("train", "training data")):
        if key in a.provenance:
            lines.append(_data_line(name, a.provenance[key]))
    return "\n".join(lines) + "\n"

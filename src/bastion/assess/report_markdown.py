"""A Markdown report (for pull requests, CI summaries and model cards)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.assess.result import EvaluationResult


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _verdict(result: EvaluationResult) -> list[str]:
    gate = result.gate
    lines = [f"## Verdict: **{result.verdict}**", ""]
    if not gate.get("checks"):
        return [*lines, "No threshold was given (`--min-robust-accuracy`): this report measures, it does not "
                "clear the model.", ""]
    lines += ["| check | threshold | value | result |", "|---|---|---:|---|"]
    for c in gate["checks"]:
        value = _pct(c["value"]) if isinstance(c["value"], (int, float)) else str(c["value"])
        lines.append(f"| {_cell(c['check'])} | {_cell(str(c['threshold']))} | {_cell(value)} | **{c['result']}** |")
    return [*lines, ""]


def _provenance(prov: dict[str, Any]) -> list[str]:
    def ident(entry: dict[str, Any] | None, missing: str) -> str:
        if not entry:
            return missing
        return f"`{_cell(str(entry.get('path')))}` (SHA-256 `{entry.get('sha256')}`)"

    command = prov.get("command")
    return ["## What was tested", "",
            f"- **model**: {ident(prov.get('model'), 'not recorded (an in-memory model)')}",
            f"- **data**: {ident(prov.get('data'), 'not recorded (in-memory data)')}",
            f"- **command**: {'`' + _cell(command) + '`' if command else 'not recorded (Python API)'}",
            f"- **Bastion**: {prov.get('bastion_version', 'not recorded')}"
            + (f" (Python {prov['python']})" if prov.get("python") else ""),
            f"- **time (UTC)**: {prov.get('created', 'not recorded')}", ""]


def render_markdown(result: EvaluationResult) -> str:
    lines = ["# Robustness report", "",
             f"{result.n_examples} examples, {result.norm} norm, suite `{result.settings.get('suite')}`.", ""]
    lines += _verdict(result) + _provenance(result.provenance)
    lines += ["## Robust accuracy", "",
              "| ε | robust accuracy |", "|---|---:|", f"| 0 (clean) | {_pct(result.clean_accuracy)} |"]
    for i in sorted(range(len(result.epsilons)), key=lambda j: result.epsilons[j]):
        lines.append(f"| {_cell(result.epsilon_labels[i])} | {_pct(result.robust_accuracy[i])} |")
    lines += ["", "## Gradient-masking checks", ""]
    if result.findings:
        lines += ["| severity | check | finding |", "|---|---|---|"]
        lines += [f"| {f.severity} | `{f.check}` | {_cell(f.message)} |" for f in result.findings]
    elif result.settings.get("checks"):
        lines.append("No sign of gradient masking.")
    else:
        lines.append("Checks were not run.")
    head = " | ".join(f"broke at ε={_cell(lab)}" for lab in result.epsilon_labels)
    lines += ["", "## Attacks", "", f"| attack | family | {head} | seconds | queries |",
              "|---|---|" + "---:|" * (len(result.epsilons) + 2)]
    for a in result.attacks:
        counts = " | ".join(str(b) for b in a.broken)
        lines.append(f"| {a.name} | {a.family} | {counts} | {a.seconds:.2f} | {a.queries} |")
    if result.examples:
        lines += ["", "## Adversarial examples", "", "| example | label → prediction | attack | ε | distance |",
                  "|---|---|---|---:|---:|"]
        lines += [f"| #{k.index} | {k.label} → {k.adv_pred} | {k.attack} | {k.epsilon:.4g} | {k.distance:.3g} |"
                  for k in result.examples]
    lines += ["", "## Settings", ""]
    for key, val in result.to_dict()["settings"].items():
        lines.append(f"- **{key}**: `{_cell(val if isinstance(val, str) else json.dumps(val))}`")
    lines += ["", "## Timings", ""]
    lines += [f"- {k}: {v:.2f} s" for k, v in result.timings.items()]
    return "\n".join(lines) + "\n"

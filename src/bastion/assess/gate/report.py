"""The assessment's reports: self-contained HTML, Markdown, JSON and the model card, in one folder.

The HTML embeds everything (inline SVG curve, base64 PNG examples, inline CSS, no script): it opens
offline and makes no network request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from bastion.assess.gate.checks import SKIP
from bastion.assess.gate.modelcard import to_model_card
from bastion.assess.gate.runner import Assessment

#: files a report folder holds
REPORT_FILES = {"html": "report.html", "markdown": "report.md", "json": "result.json", "model_card": "model-card.md"}

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Bastion assessment: {{ a.verdict | upper }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 64rem; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; margin: .8rem 0; } th, td { border: 1px solid #ccc; padding: .3rem .6rem;
text-align: left; vertical-align: top; } th { background: #f0f0f0; } td.num { text-align: right; }
.v { font-weight: bold; padding: .1rem .4rem; border-radius: .3rem; } .v-pass { background: #d5f5e3; color: #1e8449; }
.v-fail { background: #c0392b; color: #fff; } .v-error { background: #f5c542; } .v-skip { background: #eee; color: #555; }
.big { font-size: 1.5rem; } .sub { color: #666; } .grid { display: flex; flex-wrap: wrap; gap: 1rem; }
.card { border: 1px solid #ddd; border-radius: .4rem; padding: .5rem; text-align: center; font-size: .85em; }
.card img { image-rendering: pixelated; margin: 0 .15rem; } code { background: #f6f6f6; padding: .1rem .3rem; }
</style>
</head>
<body>
<h1>Bastion assessment <span class="v big v-{{ a.verdict }}">{{ a.verdict | upper }}</span></h1>
<p class="sub">{{ model_name }} · policy <code>{{ a.policy.source }}</code> · budget {{ a.budget }} ·
{{ a.started }} · {{ "%.1f" | format(a.seconds) }} s · bastion {{ a.bastion }}</p>

<h2>Scorecard</h2>
<table>
<tr><th>check</th><th>result</th><th>measured</th><th>threshold</th><th>MITRE ATLAS</th><th>mitigations</th>
<th>NIST AI 100-2</th><th>why</th></tr>
{% for c in a.checks %}<tr><td>{{ c.title }}</td><td><span class="v v-{{ c.verdict }}">{{ c.verdict | upper }}</span></td>
<td class="num">{{ c.figure_text or "-" }}</td><td>{{ c.threshold or "-" }}</td>
<td>{{ c.atlas_technique }} ({{ c.atlas_name }})</td><td>{{ c.atlas_mitigations | join(", ") }}</td>
<td>{{ c.nist_class }}</td><td>{{ c.reason }}</td></tr>
{% endfor %}</table>

{% if svg %}<h2>Robustness</h2>
<p>Robust accuracy against the attack ensemble ({{ ev.norm }} norm, {{ ev.n_examples }} examples; ε=0 is the
clean accuracy).</p>
{{ svg | safe }}
{% if examples %}<h3>Adversarial examples</h3>
<div class="grid">{% for e in examples %}<div class="card">
{% if e.clean_png %}<img src="data:image/png;base64,{{ e.clean_png }}" alt="original {{ e.index }}">
<img src="data:image/png;base64,{{ e.adv_png }}" alt="adversarial {{ e.index }}"><br>{% endif %}
#{{ e.index }}: {{ e.label }} → {{ e.adv_pred }}<br>{{ e.attack }}, ε={{ e.epsilon }}</div>{% endfor %}</div>
<p class="sub">Each pair: the original (left) and the adversarial the model misclassifies (right).</p>{% endif %}
{% if ev.findings %}<h3>Gradient-masking checks</h3><table><tr><th>severity</th><th>check</th><th>finding</th></tr>
{% for f in ev.findings %}<tr><td>{{ f.severity }}</td><td>{{ f.check }}</td><td>{{ f.message }}</td></tr>{% endfor %}
</table>{% endif %}{% endif %}

{% if roc %}<h2>Membership inference</h2>
<p>ROC curves of the membership attacks (members vs non-members; the diagonal is guessing, AUC 0.5).</p>
{{ roc | safe }}{% endif %}

<h2>Scan findings</h2>
{% if a.scan_findings %}<table><tr><th>severity</th><th>rule</th><th>where</th><th>message</th></tr>
{% for f in a.scan_findings %}<tr><td>{{ f.severity }}</td><td>{{ f.rule_id }}</td><td>{{ f.path }} {{ f.location }}</td>
<td>{{ f.message }}</td></tr>{% endfor %}</table>{% else %}<p>No findings.</p>{% endif %}

<h2>Provenance</h2>
<table>{% for name, info in a.provenance.items() %}<tr><th>{{ name }}</th><td><code>{{ info | tojson }}</code></td></tr>
{% endfor %}<tr><th>policy</th><td><code>{{ a.policy | tojson }}</code></td></tr></table>
</body>
</html>
"""


def _examples(evaluation: Any) -> list[dict[str, Any]]:
    from bastion.assess.plots import is_image, png_base64

    images = is_image(evaluation.settings.get("input_shape", []))
    bounds = tuple(evaluation.settings.get("bounds", (0.0, 1.0)))
    out = []
    for k in evaluation.examples:
        row = {"index": k.index, "label": k.label, "adv_pred": k.adv_pred, "attack": k.attack,
               "epsilon": format(k.epsilon, "g")}
        if images:
            row.update(clean_png=png_base64(k.x, bounds), adv_png=png_base64(k.x_adv, bounds))
        out.append(row)
    return out


def render_html(a: Assessment) -> str:
    from bastion.assess.plots import robustness_curve_svg

    data = a.to_dict()
    ev = a.evaluation
    svg = ""
    if ev is not None:
        svg = robustness_curve_svg(ev.epsilons, ev.robust_accuracy, ev.clean_accuracy, ev.norm)
    roc = ""
    mia = next((o for o in a.outcomes if o.id == "membership_inference" and o.verdict != SKIP), None)
    if mia is not None and mia.details.get("roc"):
        from bastion.privacy.report import roc_svg

        curves = mia.details["roc"]
        roc = roc_svg([{"attack": r["attack"], "auc": r["auc"], "roc_curve": curves[r["attack"]]}
                       for r in mia.details.get("attacks", []) if curves.get(r["attack"])])
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_HTML).render(
        a=data, ev=ev.to_dict() if ev is not None else {}, svg=svg, roc=roc,
        examples=_examples(ev) if ev is not None else [],
        model_name=Path(str(a.provenance.get("model", {}).get("path", "model"))).name)


def render_markdown(a: Assessment) -> str:
    d = a.to_dict()
    lines = [f"# Bastion assessment: {a.verdict.upper()}", "",
             f"Model `{a.provenance.get('model', {}).get('path')}`, policy `{a.policy.source}`, budget `{a.budget}`, "
             f"{a.started}, {a.seconds:.1f} s.", "",
             "| check | result | measured | threshold | MITRE ATLAS | mitigations | NIST AI 100-2 | why |",
             "|---|---|---:|---|---|---|---|---|"]
    for c in d["checks"]:
        why = str(c["reason"]).replace("|", "\\|")
        lines.append(f"| {c['title']} | **{c['verdict'].upper()}** | {c['figure_text'] or '-'} | {c['threshold'] or '-'}"
                     f" | {c['atlas_technique']} | {', '.join(c['atlas_mitigations'])} | {c['nist_class']} | {why} |")
    ev = a.evaluation
    if ev is not None:
        lines += ["", "## Robustness", "", "| ε | robust accuracy |", "|---|---:|",
                  f"| 0 (clean) | {100 * ev.clean_accuracy:.1f} % |"]
        lines += [f"| {lab} | {100 * acc:.1f} % |" for lab, acc in zip(ev.epsilon_labels, ev.robust_accuracy,
                                                                        strict=True)]
    if a.scan_findings:
        lines += ["", "## Scan findings", ""]
        lines += [f"- {f['severity']} `{f['rule_id']}` {f['path']} {f['location']}: {f['message']}"
                  for f in a.scan_findings]
    skipped = [c for c in d["checks"] if c["verdict"] == SKIP]
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {c['title']}: {c['reason']}" for c in skipped]
    return "\n".join(lines) + "\n"


def write_reports(a: Assessment, directory: str | Path) -> dict[str, Path]:
    """Write report.html, report.md, result.json and model-card.md into ``directory`` (created if needed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    texts = {"html": render_html(a), "markdown": render_markdown(a),
             "json": json.dumps(a.to_dict(), indent=2, default=str), "model_card": to_model_card(a)}
    out = {}
    for key, text in texts.items():
        path = d / REPORT_FILES[key]
        path.write_text(text, encoding="utf-8")
        out[key] = path
    return out

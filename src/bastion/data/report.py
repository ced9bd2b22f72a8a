"""Audit reports: Markdown, JSON and a self-contained HTML page (inline SVG and PNG, no external files),
in the look of ``bastion evaluate``'s report."""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bastion.data.audit import AuditResult
from bastion.data.records import Records

#: findings listed in a report before the rest are only counted (the JSON always lists all)
MAX_ROWS = 200
STYLE = """body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: .8rem 0; } th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { font-size: 1.4rem; font-weight: bold; padding: .4rem .8rem; border-radius: .3rem; display: inline-block; }
.v-PASS { background: #d5f5e3; color: #1e8449; } .v-FAIL { background: #c0392b; color: #fff; }
img { image-rendering: pixelated; vertical-align: middle; }"""


def verdict(res: AuditResult) -> str:
    return "FAIL" if res.findings else "PASS"


def to_markdown(res: AuditResult) -> str:
    lines = [f"# Data audit: {res.data}", "", f"**{verdict(res)}**: {len(res.rows())} of {res.num_records} records "
             "flagged.", "", "| check | findings |", "|---|---:|"]
    lines += [f"| {c} | {n} |" for c, n in res.counts().items()]
    for c, why in res.skipped.items():
        lines.append(f"\n- {c} skipped: {why}")
    lines += ["", "## Suspicious records", "", "| record | check | score | evidence |", "|---|---|---:|---|"]
    for f in res.findings[:MAX_ROWS]:
        lines.append(f"| {f.record} | {f.check} | {f.score:.3f} | {f.reason.replace('|', '/')} |")
    if len(res.findings) > MAX_ROWS:
        lines.append(f"\n{len(res.findings) - MAX_ROWS} more findings in report.json.")
    return "\n".join(lines) + "\n"


def _histogram_svg(values: list[float], title: str) -> str:
    if not values:
        return ""
    counts, edges = np.histogram(values, bins=20)
    w, h, top = 360, 120, max(1, int(counts.max()))
    bars = "".join(
        f'<rect x="{20 + i * 16}" y="{h - 20 - 90 * c / top:.1f}" width="14" height="{90 * c / top:.1f}" fill="#5b8def"/>'
        for i, c in enumerate(counts))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"><text x="20" y="12" font-size="11">'
            f'{html.escape(title)}: {edges[0]:.3g} to {edges[-1]:.3g}</text>{bars}</svg>')


def to_html(res: AuditResult, records: Records | None = None) -> str:
    from bastion.assess.plots import is_image, png_base64

    esc = html.escape
    show_images = records is not None and is_image(records.x.shape[1:])
    counts = "".join(f"<tr><td>{esc(c)}</td><td class='num'>{n}</td></tr>" for c, n in res.counts().items())
    skipped = "".join(f"<li>{esc(c)} skipped: {esc(w)}</li>" for c, w in res.skipped.items())
    by_check: dict[str, list[float]] = {}
    for f in res.findings:
        by_check.setdefault(f.check, []).append(f.score)
    plots = "".join(_histogram_svg(v, f"{c} scores of flagged records") for c, v in by_check.items())
    rows = []
    for f in res.findings[:MAX_ROWS]:
        img = ""
        if show_images and records is not None:
            import torch

            img = f'<img width="48" src="data:image/png;base64,{png_base64(torch.from_numpy(records.x[f.row]), (0.0, 1.0))}">'
        rows.append(f"<tr><td>{img} {esc(f.record)}</td><td>{esc(f.check)}</td><td class='num'>{f.score:.3f}</td>"
                    f"<td>{esc(f.reason)}</td></tr>")
    more = f"<p>{len(res.findings) - MAX_ROWS} more findings in report.json.</p>" if len(res.findings) > MAX_ROWS else ""
    v = verdict(res)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Data audit</title><style>{STYLE}</style></head>"
            f"<body><h1>Data audit</h1><p class='sub'>{esc(res.data)} · {res.num_records} records</p>"
            f"<h2>Verdict</h2><p><span class='verdict v-{v}'>{v}</span> {len(res.rows())} records flagged</p>"
            f"<table><tr><th>check</th><th>findings</th></tr>{counts}</table><ul>{skipped}</ul>{plots}"
            f"<h2>Suspicious records</h2><table><tr><th>record</th><th>check</th><th>score</th><th>evidence</th></tr>"
            f"{''.join(rows)}</table>{more}</body></html>")


def write_reports(res: AuditResult, folder: Path, records: Records | None = None) -> list[Path]:
    """report.json, report.md and report.html in ``folder``, each written atomically."""
    from bastion.data.records import atomic_output

    out = []
    for name, text in (("report.json", json.dumps(res.to_json(), indent=2)), ("report.md", to_markdown(res)),
                       ("report.html", to_html(res, records))):
        with atomic_output(folder / name) as tmp:
            tmp.write_text(text)
        out.append(folder / name)
    return out


def summary(res: AuditResult) -> dict[str, Any]:
    return {"verdict": verdict(res), "flagged": len(res.rows()), "by_check": dict(Counter(f.check for f in res.findings))}

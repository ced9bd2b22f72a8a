"""The privacy audit as files: self-contained HTML (ROC curves, reconstructions), Markdown and JSON."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import torch

from bastion.privacy.audit import ATLAS, TITLES, PrivacyReport

REPORT_FILES = ("report.html", "report.md", "result.json")
#: ROC plot canvas (px)
SIDE, PAD = 300, 40
COLOURS = ("#c0392b", "#2980b9", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d")


def roc_svg(results: list[dict[str, Any]]) -> str:
    """ROC curves of all membership attacks on one inline SVG (no external references)."""
    w = SIDE + PAD + 180
    h = SIDE + PAD + 10
    parts = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="ROC curves">',
             f'<rect x="{PAD}" y="10" width="{SIDE}" height="{SIDE}" fill="#fafafa" stroke="#999"/>',
             f'<line x1="{PAD}" y1="{10 + SIDE}" x2="{PAD + SIDE}" y2="10" stroke="#bbb" stroke-dasharray="4 3"/>',
             f'<text x="{PAD + SIDE / 2}" y="{h - 4}" font-size="11" text-anchor="middle">false-positive rate</text>',
             f'<text x="12" y="{10 + SIDE / 2}" font-size="11" text-anchor="middle" '
             f'transform="rotate(-90 12 {10 + SIDE / 2})">true-positive rate</text>']
    for i, r in enumerate(results):
        fpr, tpr = r["roc_curve"]["fpr"], r["roc_curve"]["tpr"]
        colour = COLOURS[i % len(COLOURS)]
        pts = " ".join(f"{PAD + SIDE * f:.1f},{10 + SIDE * (1 - t):.1f}" for f, t in zip(fpr, tpr, strict=True))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        parts.append(f'<text x="{PAD + SIDE + 10}" y="{24 + 16 * i}" font-size="11" fill="{colour}">'
                     f'{escape(r["attack"])} (AUC {r["auc"]:.3f})</text>')
    parts.append("</svg>")
    return "".join(parts)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _rows(report: PrivacyReport) -> dict[str, tuple[list[str], list[list[str]]]]:
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    if "mia" in report.sections:
        tables["mia"] = (["attack", "AUC", "balanced acc.", "TPR @ 0.1 % FPR", "TPR @ 1 % FPR", "queries"],
                         [[r["attack"], f"{r['auc']:.3f}", _pct(r["balanced_accuracy"]), _pct(r["tpr_at_fpr"]["0.001"]),
                           _pct(r["tpr_at_fpr"]["0.01"]), str(r["queries"])] for r in report.sections["mia"]["results"]])
    if "inversion" in report.sections:
        rows = []
        for r in report.sections["inversion"]["results"]:
            q = r["quality"]
            rows.append([r["attack"], f"{q.get('mean_mse_to_class_mean', float('nan')):.4f}",
                         f"{q.get('mean_baseline_mse', float('nan')):.4f}",
                         f"{q['mean_ssim_to_class_mean']:.3f}" if "mean_ssim_to_class_mean" in q else "n/a",
                         _pct(q.get("nearest_mean_is_own_class")), _pct(q.get("evaluator_accuracy")), str(r["queries"])])
        tables["inversion"] = (["attack", "MSE to class mean", "baseline MSE (all-class mean)", "SSIM to class mean",
                                "nearest class mean is own class", "held-out classifier accuracy", "queries"], rows)
    if "attribute" in report.sections:
        tables["attribute"] = (["column", "attack accuracy", "majority baseline", "distribution baseline",
                                "advantage", "queries"],
                               [[str(r["column"]), _pct(r["attack_accuracy"]), _pct(r["majority_baseline"]),
                                 _pct(r["distribution_baseline"]), f"{100 * r['advantage']:+.1f} pts", str(r["queries"])]
                                for r in report.sections["attribute"]["results"]])
    if "extraction" in report.sections:
        rows = []
        for r in report.sections["extraction"]["results"]:
            points = r["curve"] or [{"queries": r["queries"], "fidelity": r["fidelity"], "accuracy": r["accuracy"]}]
            for p in points:
                rows.append([r["attack"], str(p["queries"]), _pct(p["fidelity"]), _pct(p["accuracy"]),
                             _pct(r["victim_accuracy"])])
        tables["extraction"] = (["attack", "queries", "fidelity", "copy accuracy", "victim accuracy"], rows)
    return tables


def _transfer_line(report: PrivacyReport) -> str | None:
    tr = report.sections.get("extraction", {}).get("transfer")
    if not tr or "skipped" in tr:
        return None
    return (f"Transfer: PGD ({tr['norm']}, ε={tr['epsilon']:g}) crafted on the copy from {tr['from']} fools the "
            f"victim on {_pct(tr['success_on_victim'])} of {tr['evaluated']} inputs it classified correctly "
            f"({_pct(tr['success_on_copy'])} on the copy itself).")


def markdown(report: PrivacyReport) -> str:
    lines = ["# Bastion privacy audit", "", f"## Verdict: **{report.verdict}**", ""]
    if report.gate.get("checks"):
        lines += ["| check | threshold | value | result |", "|---|---|---:|---|"]
        for c in report.gate["checks"]:
            value = "n/a" if c["value"] is None else f"{c['value']:.3f}"
            lines.append(f"| {c['check']} | {c['threshold']} | {value} | **{c['result']}** |")
        lines.append("")
    else:
        lines += ["No gate was given (`--max-mia-auc`, `--max-extraction-fidelity`): this report measures.", ""]
    lines += [f"Model: {report.model.get('kind')} ({report.model.get('capabilities')}); "
              f"{report.n_members} members, {report.n_non_members} non-members.", ""]
    for key, (head, rows) in _rows(report).items():
        lines += [f"## {TITLES[key]} (MITRE ATLAS {ATLAS[key]})", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
        if key == "extraction":
            t = _transfer_line(report)
            if t:
                lines += [t, ""]
            lines += [report.sections["extraction"]["note"], ""]
    if report.skipped:
        lines += ["## Not run", ""] + [f"- {k}: {v}" for k, v in report.skipped.items()] + [""]
    prov = report.provenance
    if prov:
        lines += ["## What was tested", "", f"- command: `{prov.get('command')}`",
                  f"- bastion {prov.get('bastion_version')}, created {prov.get('created')}", ""]
    return "\n".join(lines)


def html(report: PrivacyReport) -> str:
    from bastion.assess.plots import png_base64

    out = ["<!doctype html><html><head><meta charset='utf-8'><title>Bastion privacy audit</title>",
           "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
           ".FAIL{color:#c0392b}.PASS{color:#27ae60}img{image-rendering:pixelated;margin:2px}</style></head><body>",
           "<h1>Bastion privacy audit</h1>",
           f"<h2>Verdict: <span class='{escape(report.verdict)}'>{escape(report.verdict)}</span></h2>"]
    if report.gate.get("checks"):
        out.append("<table><tr><th>check</th><th>threshold</th><th>value</th><th>result</th></tr>")
        for c in report.gate["checks"]:
            value = "n/a" if c["value"] is None else f"{c['value']:.3f}"
            out.append(f"<tr><td>{escape(c['check'])}</td><td>{escape(c['threshold'])}</td><td>{value}</td>"
                       f"<td class='{c['result']}'><b>{c['result']}</b></td></tr>")
        out.append("</table>")
    out.append(f"<p>Model: {escape(str(report.model.get('kind')))} ({escape(str(report.model.get('capabilities')))}); "
               f"{report.n_members} members, {report.n_non_members} non-members.</p>")
    for key, (head, rows) in _rows(report).items():
        out.append(f"<h2>{TITLES[key]} <small>(MITRE ATLAS {ATLAS[key]})</small></h2><table><tr>"
                   + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        out.append("</table>")
        if key == "mia":
            out.append(roc_svg(report.sections["mia"]["results"]))
        if key == "inversion" and "reconstructions" in report.figures:
            classes, recon, (xm, ym) = report.figures["reconstructions"]
            bounds = tuple(report.model.get("bounds", (0.0, 1.0)))
            out.append("<p>Reconstruction (top) and the class's training mean (bottom), per class:</p><table><tr>")
            out += [f"<td>class {c}<br><img alt='reconstruction of class {c}' src='data:image/png;base64,"
                    f"{png_base64(recon[i], bounds)}'><br><img alt='training mean of class {c}' "
                    f"src='data:image/png;base64,{png_base64(xm[ym == c].float().mean(0) if bool((ym == c).any()) else torch.zeros_like(recon[i]), bounds)}'></td>"
                    for i, c in enumerate(classes)]
            out.append("</tr></table>")
        if key == "extraction":
            t = _transfer_line(report)
            if t:
                out.append(f"<p>{escape(t)}</p>")
            out.append(f"<p>{escape(report.sections['extraction']['note'])}</p>")
    if report.skipped:
        out.append("<h2>Not run</h2><ul>" + "".join(f"<li>{escape(k)}: {escape(v)}</li>"
                                                    for k, v in report.skipped.items()) + "</ul>")
    prov = report.provenance
    if prov:
        out.append(f"<h2>What was tested</h2><p><code>{escape(str(prov.get('command')))}</code><br>"
                   f"bastion {escape(str(prov.get('bastion_version')))}, created {escape(str(prov.get('created')))}</p>")
    out.append("</body></html>")
    return "\n".join(out)


def save(report: PrivacyReport, folder: str | Path) -> dict[str, Path]:
    """Write the three report files into ``folder`` (the caller checked they may be written)."""
    from bastion.cli.paths import write_text_atomic

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    written = {"html": d / "report.html", "markdown": d / "report.md", "json": d / "result.json"}
    write_text_atomic(written["html"], html(report))
    write_text_atomic(written["markdown"], markdown(report))
    write_text_atomic(written["json"], json.dumps(report.to_dict(), indent=2, default=str))
    return written


__all__ = ["REPORT_FILES", "html", "markdown", "roc_svg", "save"]

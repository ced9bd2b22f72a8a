"""The gateway's status page at ``/ui``: one server-rendered HTML page, no scripts, no external requests.

It shows the model and version per registry stage, what this gateway serves now (normal, routed to a
fallback, offline; throttled keys), the live monitors' recent global windows as inline SVG charts of
-log10 p with the alarm line, the keys whose windows alarmed, and the newest incidents. Everything shown
is read from the shared database when there is one, so the page is the same whichever worker renders it.
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.guard.app import Gateway

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:14px 24px}header h1{font-size:18px;margin:0}
main{padding:16px 24px;max-width:1100px}section{background:#fff;border:1px solid #dde1e6;border-radius:6px;
padding:12px 16px;margin-bottom:14px}h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff2;vertical-align:top}th{font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.normal,.resolved,.production{background:#d8f3dc;color:#1b4332}.routed,.open,.staging{background:#fff3bf;color:#5c4400}
.offline,.critical,.high{background:#ffd6d6;color:#7a0000}.muted{color:#687385}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{flex:1 1 320px}svg{background:#fbfcfd;border:1px solid #eceff2}
"""


def _badge(text: str) -> str:
    return f'<span class="badge {escape(text)}">{escape(text)}</span>'


def chart(values: list[float], threshold: float, title: str, width: int = 340, height: int = 110) -> str:
    """An inline SVG line chart of -log10 p per window, with the alarm threshold as a dashed line."""
    cap = 10.0
    ys = [min(cap, -math.log10(max(v, 1e-300))) for v in values]
    top = max([threshold * 1.3, 1.0, *ys])
    pad = 22

    def px(i: int) -> float:
        return pad + (width - pad - 6) * (i / max(1, len(ys) - 1))

    def py(y: float) -> float:
        return height - pad + -(height - pad - 8) * (y / top)

    line = " ".join(f"{px(i):.1f},{py(y):.1f}" for i, y in enumerate(ys))
    dots = "".join(f'<circle cx="{px(i):.1f}" cy="{py(y):.1f}" r="2.5" fill="#c0392b"/>'
                   for i, y in enumerate(ys) if y >= threshold)
    t = py(threshold)
    return (f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'<title>{escape(title)}</title>'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - 6}" y2="{height - pad}" stroke="#aab2bd"/>'
            f'<line x1="{pad}" y1="{t:.1f}" x2="{width - 6}" y2="{t:.1f}" stroke="#c0392b" stroke-dasharray="4 3"/>'
            f'<text x="2" y="{t - 3:.1f}" font-size="10" fill="#c0392b">alarm</text>'
            f'<text x="2" y="{height - 6}" font-size="10" fill="#687385">{len(ys)} windows, -log10 p</text>'
            + (f'<polyline fill="none" stroke="#2b6cb0" stroke-width="1.5" points="{line}"/>' if ys else "")
            + dots + "</svg>")


def render(gw: Gateway) -> str:
    live = gw.live
    parts: list[str] = []
    view = live.view if live is not None else None
    mode = view.mode if view is not None else "normal"
    served = f"{escape(gw.model_name)} version {escape(gw.model_version)}"
    if view is not None and view.mode == "routed" and live is not None:
        fb = live.fallbacks.get(view.route_to or "")
        served += f" — traffic answered by fallback {escape(view.route_to or '')}" + (
            f" ({escape(fb.version)})" if fb else " (not loaded: requests get 503)")
    parts.append(f"<section><h2>Serving</h2><p>{_badge(mode)} {served}</p>")
    if view is not None:
        rows = []
        if view.incident:
            rows.append(f"<tr><th>set by incident</th><td>{escape(view.incident[:12])}</td></tr>")
        if view.mode == "offline":
            rows.append(f"<tr><th>Retry-After</th><td>{view.retry_after} s</td></tr>")
        for key, rate in sorted(view.throttles.items()):
            rows.append(f"<tr><th>throttled key</th><td>{escape(key)}: {rate:g} requests/s</td></tr>")
        if live is not None and live.follow:
            rows.append(f"<tr><th>follows</th><td>registry {escape(live.follow[0])}@{escape(live.follow[1])} "
                        f"(re-read every {live.poll_s:g} s)</td></tr>")
        for ref, err in (live.load_errors.items() if live is not None else ()):
            rows.append(f"<tr><th>not loaded</th><td>{escape(ref)}: {escape(str(err)[:300])}</td></tr>")
        if rows:
            parts.append("<table>" + "".join(rows) + "</table>")
    parts.append("</section>")
    if live is not None and live.registry is not None:
        name = live.follow[0] if live.follow else gw.model_name
        versions = live.registry.versions(name)
        body = "".join(
            f"<tr><td>{escape(v.version)}</td><td>{_badge(v.stage)}</td><td>{escape(v.created_at[:19])}</td>"
            f"<td>{'verified' if v.signature.get('ok') else 'not verified'} "
            f"<span class=muted>{escape(str(v.signature.get('key_id', ''))[:16])}</span></td>"
            f"<td>{escape(str(v.scan.get('worst', '')))}</td></tr>" for v in versions)
        parts.append(f"<section><h2>Registry: {escape(name)}</h2><table><tr><th>version</th><th>stage</th>"
                     f"<th>registered (UTC)</th><th>signature</th><th>scan worst</th></tr>{body}</table></section>")
    if live is not None and live.settings is not None:
        settings = live.settings
        windows = live.state.windows(gw.model_name, "global", 120) if live.state is not None else \
            list(live.history.get("global", ()))
        per = settings.alpha / len(settings.monitors)
        charts = "".join(
            f'<div class="chart"><strong>{escape(m)}</strong><br>'
            + chart([w["p_values"].get(m, 1.0) for w in windows], -math.log10(per), f"{m} monitor, global windows")
            + "</div>" for m in settings.monitors)
        parts.append(f"<section><h2>Live monitors</h2><p class=muted>windows of {settings.window} examples, "
                     f"false-alarm rate per window at most {settings.alpha:g} for all monitors together"
                     f"{', per API key and global' if settings.per_key else ', global'}</p>"
                     f'<div class="charts">{charts}</div>')
        keyed = [w for w in (live.state.windows(gw.model_name, "keys", 300) if live.state is not None else [])
                 if w["drift"]][-10:]
        if keyed:
            parts.append("<h2>Keys whose windows alarmed</h2><table><tr><th>time (UTC)</th><th>key</th>"
                         "<th>monitors</th></tr>" + "".join(
                             f"<tr><td>{escape(w['time'][:19])}</td><td>{escape(w['scope'][4:])}</td>"
                             f"<td>{escape(', '.join(w['fired']))}</td></tr>" for w in reversed(keyed)) + "</table>")
        parts.append("</section>")
    if live is not None and live.state is not None:
        incidents = live.state.incidents()[-15:]
        inc_rows = "".join(
            f"<tr><td>{escape(i['id'][:12])}</td><td>{escape(i['created'][:19])}</td><td>{_badge(i['severity'])}</td>"
            f"<td>{_badge(i['status'])}</td><td>{escape(i['title'])}</td><td>{escape(_actions(i['actions']))}</td></tr>"
            for i in reversed(incidents))
        parts.append("<section><h2>Recent incidents</h2>" + (
            "<table><tr><th>id</th><th>created (UTC)</th><th>severity</th><th>status</th><th>what</th>"
            f"<th>actions</th></tr>{inc_rows}</table>" if incidents else "<p class=muted>none</p>") + "</section>")
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Bastion gateway: "
            f"{escape(gw.model_name)}</title><meta name=viewport content='width=device-width'>"
            "<link rel=icon href='data:,'>"
            f"<style>{_CSS}</style></head><body><header><h1>Bastion gateway — {escape(gw.model_name)}</h1></header>"
            f"<main>{''.join(parts)}</main></body></html>")


def _actions(actions: list[dict[str, Any]]) -> str:
    return ", ".join(a["action"] + ("" if a.get("ok") else " (failed)") + (" (undone)" if a.get("undone") else "")
                     for a in actions)

"""The scorecard on the terminal: one row per check, coloured by verdict, then why each one ended so."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.assess.gate.checks import ERROR, FAIL, PASS
from bastion.assess.gate.runner import Assessment

_STYLE = {PASS: "green", FAIL: "bold red", ERROR: "yellow"}


def print_scorecard(a: Assessment, console: Console) -> None:
    table = Table(title=f"Bastion assessment ({a.budget} budget, policy: {escape(a.policy.source)})")
    table.add_column("check")
    table.add_column("verdict")
    table.add_column("measured", justify="right")
    table.add_column("threshold")
    table.add_column("MITRE ATLAS", no_wrap=True)
    for o in a.outcomes:
        style = _STYLE.get(o.verdict, "dim")
        table.add_row(o.info.title, f"[{style}]{o.verdict.upper()}[/]", escape(o.figure_text or "-"),
                      escape(o.threshold or "-"), o.info.atlas_technique)
    console.print(table)
    for o in a.outcomes:
        style = _STYLE.get(o.verdict, "dim")
        console.print(f"[{style}]{o.verdict.upper():5}[/] {o.id}: {escape(o.reason)}", highlight=False)
    style = _STYLE[a.verdict]
    console.print(f"[{style}]{a.verdict.upper()}[/] in {a.seconds:.1f} s (exit {a.exit_code})", highlight=False)

"""The scorecard on the terminal: one row per check, coloured by verdict."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.assess.gate.checks import ERROR, FAIL, PASS
from bastion.assess.gate.runner import Assessment

_STYLE = {PASS: "green", FAIL: "bold red", ERROR: "yellow"}


def print_scorecard(a: Assessment, console: Console) -> None:
    table = Table(title=f"Bastion assessment ({a.budget} budget, policy: {escape(a.policy.source)})", show_lines=False)
    for col, kw in (("check", {}), ("verdict", {}), ("measured", {"justify": "right"}), ("threshold", {}),
                    ("ATLAS", {}), ("why", {"overflow": "fold"})):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for o in a.outcomes:
        style = _STYLE.get(o.verdict, "dim")
        table.add_row(o.info.title, f"[{style}]{o.verdict.upper()}[/]", escape(o.figure_text or "-"),
                      escape(o.threshold or "-"), o.info.atlas_technique, escape(o.reason))
    console.print(table)
    style = _STYLE[a.verdict]
    console.print(f"[{style}]{a.verdict.upper()}[/] in {a.seconds:.1f} s (exit {a.exit_code})", highlight=False)

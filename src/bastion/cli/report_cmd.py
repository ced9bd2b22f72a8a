"""`bastion report`: rebuild the HTML or Markdown report of a saved evaluation (result.json).

The verdict, gate, file digests, command and time are the ones recorded when the evaluation ran; nothing
is re-measured, so a report rebuilt next year says what the gate said then.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from bastion.cli.common import EXIT_OK, handle_errors, make_console
from bastion.cli.paths import check_output, write_text_atomic
from bastion.errors import InputError

FORMATS = {"html": ".html", "md": ".md"}


def register(app: typer.Typer) -> None:
    """Add ``bastion report`` to the app."""
    app.command("report")(report_command)


@handle_errors
def report_command(
    result: Path = typer.Argument(..., metavar="RESULT", help="A result.json written by `bastion evaluate "
                                  "--report` (or EvaluationResult.save)."),
    fmt: str = typer.Option("html", "--format", "-f", help="html (self-contained) or md."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report file; default: RESULT's name with "
                                    ".html or .md, next to it."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists (never RESULT).", metavar=""),
) -> None:
    """Rebuild a report from a saved result, with the verdict and provenance recorded when it ran.

    Examples:

      bastion report out/result.json --format md --out summary.md

      bastion report out/result.json --format html     # writes out/result.html

    Exit codes: 0 written; 2 could not (unreadable or foreign JSON, bad arguments, output exists).
    """
    from bastion.assess.report_html import render_html
    from bastion.assess.report_markdown import render_markdown
    from bastion.assess.result import EvaluationResult

    if fmt not in FORMATS:
        raise InputError("--format", repr(fmt), f"one of {', '.join(FORMATS)}")
    target = out if out is not None else result.with_suffix(FORMATS[fmt])
    target = check_output(target, inputs=(result,), force=force, what="--out")
    try:
        data = json.loads(result.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("RESULT", str(result), "a UTF-8 JSON file (result.json)") from None
    except json.JSONDecodeError as exc:
        raise InputError("RESULT", f"{result}, not JSON ({exc.msg} at line {exc.lineno})",
                         "a result.json written by `bastion evaluate --report`") from None
    if not isinstance(data, dict):
        raise InputError("RESULT", f"{result}, a JSON {type(data).__name__}", "a result.json object")
    res = EvaluationResult.from_dict(data)
    text = render_html(res) if fmt == "html" else render_markdown(res)
    write_text_atomic(target, text)
    make_console().print(f"{res.verdict}: {fmt} report written to {target}", highlight=False)
    raise typer.Exit(EXIT_OK)

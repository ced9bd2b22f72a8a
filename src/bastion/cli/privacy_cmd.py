"""`bastion privacy audit`: membership, inversion, attribute and extraction leaks of a model, as a CI gate.

Exit codes: 0 every gate passed (or none was given); 1 a gate was crossed (membership AUC above
``--max-mia-auc`` or extraction fidelity above ``--max-extraction-fidelity``); 2 the audit could not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bastion.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    FACTORY_HELP,
    command_line,
    fail,
    handle_errors,
    make_console,
    print_json,
    progress_bar,
)
from bastion.cli.paths import check_outputs
from bastion.errors import DataLoadError, InputError

privacy_app = typer.Typer(help="Privacy and IP: membership inference, inversion, attribute inference, extraction.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``bastion privacy`` command group to the app."""
    app.add_typer(privacy_app, name="privacy")


def _load_set(path: Path, what: str, label_column: str, limit: int | None) -> tuple[Any, Any]:
    from bastion.datasets import load_data

    x, y = load_data(path, label_column=label_column)
    if y is None:
        raise DataLoadError(f"{path}: {what} need labels; an .npz needs an array 'y', a CSV the column "
                            f"--label-column ({label_column})")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


@privacy_app.command("audit")
@handle_errors
def audit_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model file: TorchScript, ONNX, skops, safetensors "
                               "(+ --factory) or, with --trust-pickle, a pickle."),
    members: Path = typer.Option(..., "--members", help="Records the model trained on: .npz (x, y) or .csv."),
    non_members: Path = typer.Option(..., "--non-members", help="Records it never saw, from the same "
                                     "distribution (also the attacker's own data for extraction)."),
    attacks: str = typer.Option("mia,inversion,attribute,extraction", "--attacks",
                                help="Comma-separated: mia, inversion, attribute, extraction (what does not apply "
                                "to the model or data is skipped and said so)."),
    budget: int = typer.Option(2000, "--budget", help="Victim queries for extraction (also measured at a tenth)."),
    shadows: int = typer.Option(8, "--shadows", help="Shadow models for LiRA and Shokri's attack (more: stronger, "
                                "slower; LiRA's paper uses 64+)."),
    shadow_epochs: int = typer.Option(30, "--shadow-epochs", help="Training epochs of each PyTorch shadow model."),
    attribute_column: int | None = typer.Option(None, "--attribute-column",
                                                help="Sensitive column for attribute inference (default: the first 3)."),
    transfer_eps: float | None = typer.Option(None, "--transfer-eps", help="L-inf budget of the transfer attack "
                                              "crafted on the stolen copy (default: a tenth of the input range)."),
    max_mia_auc: float | None = typer.Option(None, "--max-mia-auc", help="Fail (exit 1) if any membership attack's "
                                             "AUC is above this, e.g. 0.6."),
    max_extraction_fidelity: float | None = typer.Option(None, "--max-extraction-fidelity",
                                                         help="Fail (exit 1) if a stolen copy agrees with the "
                                                         "model on more than this fraction of held-out inputs."),
    report: Path | None = typer.Option(None, "--report", help="Write report.html (ROC curves, reconstructions), "
                                       "report.md and result.json here."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (no progress bars).",
                                  metavar=""),
    force: bool = typer.Option(False, "--force", help="Overwrite existing report files (never the inputs).",
                               metavar=""),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N members and N non-members."),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle files (they can run code).",
                                      metavar=""),
    bounds: str = typer.Option("0,1", "--bounds", help="Valid input range 'low,high'."),
    label_column: str = typer.Option("label", "--label-column", help="Label column of CSV files."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Measure what a model leaks about its training data and how easily it is copied.

    Examples:

      bastion privacy audit -m model.pt --members train.npz --non-members test.npz --report privacy/

      bastion privacy audit -m model.onnx --members train.npz --non-members test.npz --attacks mia,extraction --budget 10000 --max-mia-auc 0.6 --max-extraction-fidelity 0.9 --json

    Membership (MITRE ATLAS AML.T0024.000): loss/confidence thresholds, LiRA online/offline and
    Shokri's attack over --shadows shadow models, label-only; AUC and TPR at 0.1 % / 1 % FPR.
    Inversion (AML.T0024.001): MI-Face, white-box or black-box. Attribute inference (AML.T0024.001) on
    tabular data. Extraction (AML.T0024.002): equation solving for log-linear models, Knockoff Nets (scores)
    or Jacobian augmentation (labels), fidelity at two budgets, then a transfer attack from the copy.

    Exit codes: 0 passed (or no gate given); 1 a gate was crossed; 2 could not run.
    """
    from bastion.assess.result import provenance
    from bastion.cli.evaluate_cmd import parse_bounds
    from bastion.core.loading import load_model
    from bastion.privacy import REPORT_FILES, audit, parse_attacks, save

    chosen = parse_attacks(attacks)
    lo_hi = parse_bounds(bounds)
    if limit is not None and limit < 2:
        raise InputError("--limit", limit, "at least 2 records per set")
    if shadows < 2:
        raise InputError("--shadows", shadows, "an integer >= 2")
    if shadow_epochs < 1:
        raise InputError("--shadow-epochs", shadow_epochs, "an integer >= 1")
    if members.resolve() == non_members.resolve():
        raise InputError("--non-members", str(non_members), "a different file from --members")
    if report is not None:
        check_outputs(report, REPORT_FILES, inputs=(model, members, non_members), force=force, what="--report")
    net = load_model(model, factory=factory, bounds=lo_hi, trust_pickle=trust_pickle)
    train = _load_set(members, "members", label_column, limit)
    hold = _load_set(non_members, "non-members", label_column, limit)
    with progress_bar(not json_out) as bar:
        task = bar.add_task("privacy audit", total=None)
        result = audit(net, train, hold, attacks=chosen, budget=budget, shadows=shadows, shadow_epochs=shadow_epochs,
                       attribute_column=attribute_column, transfer_eps=transfer_eps, max_mia_auc=max_mia_auc,
                       max_extraction_fidelity=max_extraction_fidelity, seed=seed,
                       progress=lambda msg: bar.update(task, description=msg))
    if not result.sections:
        fail("nothing could run: " + "; ".join(f"{k}: {v}" for k, v in result.skipped.items()))
    result.provenance = provenance(model, members, command_line())
    result.provenance["non_members"] = provenance(None, non_members)["data"]
    written = save(result, report) if report is not None else {}
    passed = result.verdict in ("PASS", "NO GATE")
    if json_out:
        print_json({**result.to_dict(), "passed": passed, "report": {k: str(v) for k, v in written.items()}})
    else:
        _print_summary(result, written)
    raise typer.Exit(EXIT_OK if passed else EXIT_FAILED)


def _print_summary(result: Any, written: dict[str, Path]) -> None:
    from rich.table import Table

    from bastion.privacy.audit import ATLAS, TITLES
    from bastion.privacy.report import _rows, _transfer_line

    console = make_console()
    for key, (head, rows) in _rows(result).items():
        table = Table(title=f"{TITLES[key]} ({ATLAS[key]})")
        for h in head:
            table.add_column(h)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    line = _transfer_line(result)
    if line:
        console.print(line, highlight=False)
    for k, v in result.skipped.items():
        console.print(f"[yellow]not run[/] {k}: {v}", highlight=False)
    for kind, path in written.items():
        console.print(f"{kind} report: {path}", highlight=False)
    for c in result.gate.get("checks", []):
        value = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        colour = "red" if c["result"] == "FAIL" else "green"
        console.print(f"{c['check']} {value} (limit {c['threshold']}): [{colour}]{c['result']}[/]", highlight=False)

"""`bastion evaluate`: robust accuracy of a model file on a data file, as a CI gate.

Exit codes: 0 the robust accuracy meets ``--min-robust-accuracy`` at every epsilon (or no threshold was
given), 1 it does not, or a HIGH gradient-masking finding makes it untrustworthy (unless
``--allow-masking``), 2 the evaluation could not run (bad file or arguments).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from bastion.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    FACTORY_HELP,
    command_line,
    handle_errors,
    make_console,
    parse_floats,
    print_json,
    progress_bar,
    warn_eps,
)
from bastion.cli.paths import check_outputs
from bastion.errors import DataLoadError, InputError

# --backend texts, as in bastion.scale.backend (not imported here: it would load torch for every --help)
BACKEND_HELP = ("local (this process) | ray: shard the examples (or files) over a Ray cluster, one model per "
                "worker; needs pip install 'bastion-ml\\[ray]'.")
ADDRESS_HELP = ("With --backend ray: auto (a running cluster), ray://HOST:PORT, or none to start one on this "
                "machine (RAY_ADDRESS is honoured).")
WORKERS_HELP = "With --backend ray: workers (default: one per CPU of the cluster, or per GPU where it has GPUs)."

#: files ``--report`` writes
REPORT_FILES = ("report.html", "report.md", "result.json")

SUITE_HELP = ("standard (default: AutoAttack-grade strength in a fifth of its time) | autoattack (its exact "
              "budgets, to compare with papers) | thorough | fast (screening only)")


def register(app: typer.Typer) -> None:
    """Add ``bastion evaluate`` and ``bastion report`` (which rebuilds its reports) to the app."""
    from bastion.cli import report_cmd

    app.command("evaluate")(evaluate_command)
    report_cmd.register(app)


def parse_eps(text: str) -> tuple[list[float], list[str]]:
    """Epsilons and their labels exactly as written (``0.1,8/255`` -> [0.1, 0.0314], ["0.1", "8/255"])."""
    from bastion.core.threat import check_epsilons

    values = parse_floats(text, "--eps")
    labels = [p.strip() for p in text.split(",") if p.strip()]
    check_epsilons(values, "--eps")
    return values, labels


def parse_bounds(text: str) -> tuple[float, float]:
    from bastion.core.validation import check_bounds

    vals = parse_floats(text, "--bounds")
    if len(vals) != 2:
        raise InputError("--bounds", repr(text), "two numbers 'low,high', e.g. 0,1")
    return check_bounds(vals)


def load_inputs(model_path: Path, data_path: Path, *, factory: str | None, trust_pickle: bool,
                bounds: tuple[float, float], limit: int | None, label_column: str | None) -> tuple[Any, Any, Any]:
    """Load the model and the labelled data for evaluate and attack (shared by both commands)."""
    from bastion.core.loading import load_model
    from bastion.datasets import load_data

    if limit is not None and limit < 1:
        raise InputError("--limit", limit, "a positive number of examples")
    model = load_model(model_path, factory=factory, bounds=bounds, trust_pickle=trust_pickle)
    x, y = load_data(data_path, label_column=label_column)
    if y is None:
        raise DataLoadError(f"{data_path}: has no labels; an .npz needs an array 'y', a CSV the column "
                            f"--label-column ({label_column})")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return model, x, y


@handle_errors
def evaluate_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model file: TorchScript, ONNX, skops, safetensors "
                               "(+ --factory) or, with --trust-pickle, a pickle."),
    data: Path = typer.Option(..., "--data", "-d", help="Labelled data: .npz (x, y), .csv (with --label-column) "
                              "or an image folder."),
    eps: str = typer.Option(..., "--eps", help="Comma-separated budgets, e.g. 0.1,0.2 or 8/255,16/255."),
    norm: str = typer.Option("linf", "--norm", help="linf | l2 | l1"),
    suite: str = typer.Option("standard", "--suite", help=SUITE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (no progress bars).", metavar=""),
    min_robust_accuracy: float | None = typer.Option(None, "--min-robust-accuracy",
                                                     help="Fail (exit 1) if robust accuracy is below this "
                                                     "fraction at any epsilon."),
    report: Path | None = typer.Option(None, "--report", help="Write report.html, report.md, result.json here "
                                       "(each states the gate, the verdict, the files' SHA-256 and the command)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing report files (never the inputs).",
                               metavar=""),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle files (they can run code).", metavar=""),
    bounds: str = typer.Option("0,1", "--bounds", help="Valid input range 'low,high'."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N examples."),
    label_column: str = typer.Option("label", "--label-column", help="Label column of a CSV file."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the attacks."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Examples per attack batch."),
    checks: bool = typer.Option(True, "--checks/--no-checks", help="Run the gradient-masking checks.", metavar=""),
    allow_masking: bool = typer.Option(False, "--allow-masking", help="Let the --min-robust-accuracy gate pass "
                                       "even when a HIGH gradient-masking finding says the number is not "
                                       "trustworthy (by default such a finding fails the gate).", metavar=""),
    allow_blackbox_only: bool = typer.Option(False, "--allow-blackbox-only", help="Accept a robust accuracy that "
                                             "only score/decision-based attacks measured (an upper bound; a model "
                                             "without gradients or exact replica): its finding becomes a warning "
                                             "instead of failing the gate.", metavar=""),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    workers: int | None = typer.Option(None, "--workers", help=WORKERS_HELP),
) -> None:
    """Measure robust accuracy with an AutoAttack-grade ensemble and check for gradient masking.

    Examples:

      bastion evaluate --model model.pt --data test.npz --eps 0.1,0.2

      bastion evaluate -m model.onnx -d test.npz --norm l2 --eps 0.5 --suite fast --report out/

      bastion evaluate -m model.pt -d test.npz --eps 8/255 --json --min-robust-accuracy 0.4   # CI gate

    --backend ray: blocks of 64 examples become Ray tasks, each seeded by (--seed, its first example),
    so the result is the same on any number of workers.

    Exit codes: 0 passed (or no gate given); 1 the gate failed: robust accuracy below
    --min-robust-accuracy at some epsilon, or a HIGH gradient-masking finding makes the number
    untrustworthy (see --allow-masking); 2 could not run (bad file, bad arguments).
    """
    from bastion.assess import evaluate
    from bastion.assess.result import provenance, robustness_gate
    from bastion.core.threat import get_norm
    from bastion.core.validation import check_fits
    from bastion.scale.backend import check_backend_args

    check_backend_args(backend, address, workers)
    geometry = get_norm(norm)
    values, labels = parse_eps(eps)
    lo_hi = parse_bounds(bounds)
    if min_robust_accuracy is not None and not 0.0 <= min_robust_accuracy <= 1.0:
        raise InputError("--min-robust-accuracy", min_robust_accuracy, "a fraction in [0, 1]")
    if report is not None:
        check_outputs(report, REPORT_FILES, inputs=(model, data), force=force, what="--report")
    net, x, y = load_inputs(model, data, factory=factory, trust_pickle=trust_pickle, bounds=lo_hi, limit=limit,
                            label_column=label_column)
    check_fits(net, x.to(net.device), "--data")
    warn_eps(net, x, values, labels, geometry.name)
    with progress_bar(not json_out) as bar:
        task = bar.add_task("evaluating", total=None)

        def on_progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        if backend == "ray":
            from bastion.scale import ModelSpec, evaluate_sharded, open_backend

            spec = ModelSpec.from_path(model, factory=factory, bounds=lo_hi, trust_pickle=trust_pickle)
            with open_backend("ray", address=address, workers=workers) as cluster:
                result = evaluate_sharded(cluster, spec, x, y, norm=geometry, epsilons=values, suite=suite, seed=seed,
                                          batch_size=batch_size, checks=checks, progress=on_progress,
                                          epsilon_labels=labels, allow_blackbox_only=allow_blackbox_only)
        else:
            result = evaluate(net, x, y, norm=geometry, epsilons=values, suite=suite, seed=seed,
                              batch_size=batch_size, checks=checks, progress=on_progress, epsilon_labels=labels,
                              allow_blackbox_only=allow_blackbox_only)
    # A robust accuracy the masking checks call untrustworthy cannot clear a gate: it may be an artefact.
    result.gate = robustness_gate(labels, result.robust_accuracy, result.findings, min_robust_accuracy,
                                  allow_masking)
    result.provenance = provenance(model, data, command_line())
    written = result.save(report) if report is not None else {}
    failed = [lab for lab, acc in zip(labels, result.robust_accuracy, strict=True)
              if min_robust_accuracy is not None and acc < min_robust_accuracy]
    untrusted = [f.check for f in result.findings if f.severity == "high"] \
        if min_robust_accuracy is not None and not allow_masking else []
    passed = result.verdict != "FAIL"
    if json_out:
        out: dict[str, Any] = {
            "clean_accuracy": result.clean_accuracy,
            "robust_accuracy": dict(zip(labels, result.robust_accuracy, strict=True)),
            "norm": result.norm, "n_examples": result.n_examples, "suite": suite,
            "upper_bound": result.upper_bound, "bounded_by": result.bounded_by,
            "findings": [f.to_dict() for f in result.findings],
            "attacks": [a.to_dict() for a in result.attacks],
            "seconds": round(result.timings["total"], 3),
            "min_robust_accuracy": min_robust_accuracy, "passed": passed, "failed_epsilons": failed,
            "untrusted_because": untrusted, "verdict": result.verdict, "gate": result.gate,
            "provenance": result.provenance,
            "report": {k: str(v) for k, v in written.items()},
        }
        print_json(out)
    else:
        _print_summary(result, labels, min_robust_accuracy, failed, written, untrusted)
    raise typer.Exit(EXIT_OK if passed else EXIT_FAILED)


def _print_summary(result: Any, labels: list[str], threshold: float | None, failed: list[str],
                   written: dict[str, Path], untrusted: list[str]) -> None:
    console = make_console()
    table = Table(title=f"Robust accuracy ({result.norm}, {result.n_examples} examples)")
    table.add_column("ε")
    table.add_column("robust accuracy", justify="right")
    table.add_row("clean", f"{result.clean_accuracy:.1%}")
    for i in sorted(range(len(labels)), key=lambda j: result.epsilons[j]):
        acc = result.robust_accuracy[i]
        style = "red" if threshold is not None and acc < threshold else ""
        shown = f"≤ {acc:.1%}" if result.upper_bound else f"{acc:.1%}"  # black-box only: an upper bound
        table.add_row(labels[i], f"[{style}]{shown}[/]" if style else shown)
    console.print(table)
    for f in result.findings:
        colour = {"high": "red", "warning": "yellow"}.get(f.severity, "cyan")
        console.print(f"[{colour}]{f.severity}[/] {f.check}: {f.message}", highlight=False)
    if result.settings.get("checks") and not result.findings:
        console.print("[green]gradient-masking checks: no sign of masking[/]")
    for kind, path in written.items():
        console.print(f"{kind} report: {path}", highlight=False)
    if threshold is not None:
        reasons = ([f"below at ε={', '.join(failed)}"] if failed else []) + \
            ([f"untrustworthy ({', '.join(untrusted)}; --allow-masking or --allow-blackbox-only to gate anyway)"] if untrusted else [])
        verdict = f"[red]FAILED[/]: {'; '.join(reasons)}" if reasons else "[green]PASSED[/]"
        console.print(f"minimum robust accuracy {threshold:.1%}: {verdict}", highlight=False)

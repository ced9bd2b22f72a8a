"""`bastion attack`: run one evasion attack on a model file and save the adversarial examples.

The output .npz holds ``x_adv`` and ``success`` (one row per example) plus ``y``; with several epsilons,
``x_adv`` has shape (E, N, ...), ``success`` (E, N), and ``epsilons`` lists them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.table import Table

from bastion.cli.common import (
    EXIT_OK,
    FACTORY_HELP,
    handle_errors,
    make_console,
    print_json,
    progress_bar,
    warn_eps,
)
from bastion.cli.evaluate_cmd import load_inputs, parse_bounds, parse_eps
from bastion.cli.paths import atomic_path, check_output

ATTACK_HELP = "pgd | fgsm | apgd | apgd-t | fab | cw | deepfool | square | hsj"


def register(app: typer.Typer) -> None:
    """Add ``bastion attack`` to the app."""
    app.command("attack")(attack_command)


@handle_errors
def attack_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model file (TorchScript, ONNX, skops, safetensors "
                               "+ --factory, or a pickle with --trust-pickle)."),
    data: Path = typer.Option(..., "--data", "-d", help="Labelled data: .npz (x, y), .csv or an image folder."),
    attack: str = typer.Option("pgd", "--attack", "-a", help=ATTACK_HELP),
    eps: str = typer.Option(..., "--eps", help="Comma-separated budgets, e.g. 0.1 or 8/255,16/255."),
    norm: str = typer.Option("linf", "--norm", help="linf | l2 | l1 (each attack supports some)."),
    steps: int | None = typer.Option(None, "--steps", help="Iterations (queries for square/hsj); "
                                     "default: the attack's own."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write x_adv, success and y to this .npz "
                                    "(with one epsilon also x = x_adv, so the file can be fed back as --data)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists (never the input files).", metavar=""),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle files (they can run code).", metavar=""),
    bounds: str = typer.Option("0,1", "--bounds", help="Valid input range 'low,high'."),
    limit: int | None = typer.Option(None, "--limit", help="Attack only the first N examples."),
    label_column: str = typer.Option("label", "--label-column", help="Label column of a CSV file."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Examples per batch."),
) -> None:
    """Run one attack and report its success rate; optionally save the adversarial examples.

    Examples:

      bastion attack --model model.pt --data test.npz --attack pgd --eps 0.1 --out adv.npz

      bastion attack -m model.pt -d test.npz -a apgd-t --eps 8/255,16/255 --steps 50 --json

      bastion attack -m model.onnx -d test.npz -a square --norm l2 --eps 1.0   # scores only

    Exit codes: 0 the attack ran (its success rate is in the output; use `bastion evaluate
    --min-robust-accuracy` for a gate); 2 it could not run (bad file, bad arguments).
    """
    from bastion.assess import build_attack
    from bastion.core.threat import get_norm
    from bastion.core.validation import check_fits
    from bastion.errors import InputError

    geometry = get_norm(norm)
    values, labels = parse_eps(eps)
    if steps is not None and steps < 1:
        raise InputError("--steps", steps, "a positive number")
    if out is not None and out.suffix.lower() != ".npz":
        raise InputError("--out", str(out), "a path ending in .npz")
    if out is not None:
        out = check_output(out, inputs=(model, data), force=force, what="--out")
    net, x, y = load_inputs(model, data, factory=factory, trust_pickle=trust_pickle, bounds=parse_bounds(bounds),
                            limit=limit, label_column=label_column)
    num_classes = check_fits(net, x.to(net.device), "--data") or net.infer_num_classes(x.to(net.device))
    warn_eps(net, x, values, labels, geometry.name)
    atk = build_attack(attack, geometry.name, steps=steps, seed=seed, batch_size=batch_size,
                       num_classes=num_classes)
    t0 = time.perf_counter()
    with progress_bar(not json_out) as bar:
        task = bar.add_task(f"{atk.name} ({geometry.name}, {len(values)} ε)", total=None)
        res = atk(net, x, y, epsilons=values)
        bar.update(task, total=1, completed=1)
    seconds = time.perf_counter() - t0
    # exact fractions (count / n), not float32 means that print as 0.9750000238418579
    clean = int((net.predict(x.to(net.device)).cpu() == y).sum()) / int(x.shape[0])
    rates = dict(zip(labels, (int(s.sum()) / int(x.shape[0]) for s in res.success.cpu()), strict=True))
    if out is not None:
        _save(out, res, y, values)
    if json_out:
        summary: dict[str, Any] = {"attack": atk.name, "settings": repr(atk), "norm": geometry.name,
                                   "n_examples": int(x.shape[0]), "clean_accuracy": clean, "success_rate": rates,
                                   "robust_accuracy": {k: 1.0 - v for k, v in rates.items()},
                                   "queries": res.queries, "seconds": round(seconds, 3),
                                   "out": str(out) if out is not None else None}
        print_json(summary)
    else:
        console = make_console()
        table = Table(title=f"{atk.name} ({geometry.name}) on {x.shape[0]} examples, clean accuracy {clean:.1%}")
        table.add_column("ε")
        table.add_column("success rate", justify="right")
        table.add_column("robust accuracy", justify="right")
        for lab, r in rates.items():
            table.add_row(lab, f"{r:.1%}", f"{1 - r:.1%}")
        console.print(table)
        console.print(f"{res.queries} model queries in {seconds:.2f} s", highlight=False)
        if out is not None:
            console.print(f"adversarial examples written to {out}", highlight=False)
    raise typer.Exit(EXIT_OK)


def _save(path: Path, res: Any, y: Any, values: list[float]) -> None:
    clipped = [c.detach().cpu().numpy() for c in res.clipped]
    success = res.success.detach().cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if len(values) == 1:
            np.savez_compressed(fh, x_adv=clipped[0], x=clipped[0], success=success[0], y=y.numpy(),
                                epsilons=np.asarray(values))
        else:
            np.savez_compressed(fh, x_adv=np.stack(clipped), success=success, y=y.numpy(),
                                epsilons=np.asarray(values))

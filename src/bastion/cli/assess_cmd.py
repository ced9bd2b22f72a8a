"""`bastion assess`: every check that applies to a model, under one policy, as one CI gate.

Exit codes: 0 every check that ran passed; 1 a check failed; 2 the assessment could not run (bad
arguments or policy, or a check could not run and none failed).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer
from rich.console import Console

from bastion.cli.common import (
    EXIT_OK,
    FACTORY_HELP,
    check_output_file,
    handle_errors,
    print_json,
    progress_bar,
)
from bastion.errors import InputError

# --backend texts, as in bastion.scale.backend (not imported here: it would load torch for every --help)
BACKEND_HELP = ("local (this process) | ray: shard the examples (or files) over a Ray cluster, one model per "
                "worker; needs pip install 'bastion-ml\\[ray]'.")
ADDRESS_HELP = ("With --backend ray: auto (a running cluster), ray://HOST:PORT, or none to start one on this "
                "machine (RAY_ADDRESS is honoured).")
WORKERS_HELP = "With --backend ray: workers (default: one per CPU of the cluster, or per GPU where it has GPUs)."


def register(app: typer.Typer) -> None:
    """Add ``bastion assess`` to the app."""
    app.command("assess")(assess_command)


def _parse_bounds(text: str) -> tuple[float, float]:
    from bastion.cli.common import parse_floats
    from bastion.core.validation import check_bounds

    vals = parse_floats(text, "--bounds")
    if len(vals) != 2:
        raise InputError("--bounds", repr(text), "two numbers 'low,high', e.g. 0,1")
    return check_bounds(vals)


@handle_errors
def assess_command(
    model: Path | None = typer.Option(None, "--model", "-m", help="Model file (TorchScript, ONNX, skops, safetensors "
                                      "+ --factory, or with --trust-pickle a pickle) or a model folder."),
    data: Path | None = typer.Option(None, "--data", "-d", help="Labelled test data (.npz with x, y; .csv; image "
                                     "folder), never trained on: accuracy, robustness, certification, and the "
                                     "non-members of membership inference and extraction unless --non-members."),
    train: Path | None = typer.Option(None, "--train", help="Labelled training data: poisoning audit, and the "
                                      "members of membership inference unless --members."),
    members: Path | None = typer.Option(None, "--members", help="Training records for membership inference "
                                        "(default: --train)."),
    non_members: Path | None = typer.Option(None, "--non-members", help="Records never trained on, for membership "
                                            "inference and as the extraction attacker's queries (default: --data)."),
    policy: Path | None = typer.Option(None, "--policy", "-p", help="YAML policy (default: built-in defaults; "
                                       "write a commented one with --init-policy)."),
    demo_policy: bool = typer.Option(False, "--demo-policy", help="Use the README's demo policy (robust accuracy "
                                     ">= 0.7 at linf 0.1).", metavar=""),
    init_policy: Path | None = typer.Option(None, "--init-policy", help="Write a commented policy file with the "
                                            "defaults to this path and exit."),
    budget: str = typer.Option("standard", "--budget", help="fast (screening) | standard | thorough: the attack "
                               "suite and how many examples are attacked and certified."),
    report: Path | None = typer.Option(None, "--report", help="Write report.html, report.md, result.json and "
                                       "model-card.md into this folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the assessment as one JSON object on stdout.",
                                  metavar=""),
    sarif: Path | None = typer.Option(None, "--sarif", help="Write SARIF 2.1.0 here (code-scanning upload)."),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML here (one test case per check)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files.", metavar=""),
    pub: Path | None = typer.Option(None, "--pub", help="Signer's public key: check the model folder's signature."),
    signature: Path | None = typer.Option(None, "--signature", help="Signature file (default: FOLDER/model.sig)."),
    signed_dir: Path | None = typer.Option(None, "--signed-dir", help="Signed folder (default: the model folder, "
                                           "or the folder holding the model file)."),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle files (they can run code).",
                                      metavar=""),
    bounds: str = typer.Option("0,1", "--bounds", help="Valid input range 'low,high'."),
    label_column: str = typer.Option("label", "--label-column", help="Label column of a CSV file."),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N examples of --data."),
    seed: int = typer.Option(0, "--seed", help="Random seed for attacks and certification."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Examples per batch."),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    workers: int | None = typer.Option(None, "--workers", help=WORKERS_HELP),
) -> None:
    """Run every check that applies to a model and gate on one policy: scan, signature, accuracy,
    robustness, certification, poisoning and backdoor audits, with a scorecard mapped to MITRE ATLAS and NIST AI 100-2.

    Examples:

      bastion assess --model model.pt --data test.npz

      bastion assess --init-policy policy.yaml          # commented defaults to start from

      bastion assess -m model.pt -d test.npz -p policy.yaml --pub keys/release.pub --report out/ \\
        --sarif assess.sarif --junit assess.xml          # CI gate

    What runs: the file scan always (the model is loaded only if it passes); the signature with --pub
    (or fails when the policy requires one); clean and robust accuracy with --data (white-box attacks when
    the model has gradients, black-box otherwise, which only passes with allow_upper_bound); certified
    accuracy when the policy asks; the poisoning audit with --train; the backdoor audit of the model on the
    --data images when the policy asks (backdoor: {min_reach: 0.5}); membership inference with members
    (--members, else --train) and non-members (--non-members, else --data); model extraction when the
    policy asks (extraction: {max_fidelity, queries}). Skipped checks say why.

    --backend ray shards the file scan, the attacks and the certification over a Ray cluster (one model
    per worker); the figures do not depend on the number of workers.

    Exit codes: 0 passed; 1 a check failed; 2 could not run (bad arguments or policy, or a check could
    not run).
    """
    if init_policy is not None:
        from bastion.assess.gate.policy import TEMPLATE

        check_output_file(init_policy, "--init-policy", force=force)
        init_policy.write_text(TEMPLATE, encoding="utf-8")
        Console(stderr=True).print(f"wrote {init_policy}: edit the thresholds, then bastion assess --policy "
                                   f"{init_policy} ...", highlight=False)
        raise typer.Exit(EXIT_OK)
    from bastion.assess.gate import BUDGETS, Inputs, Policy, assess, write_reports
    from bastion.assess.gate.report import REPORT_FILES

    if model is None:
        raise InputError("--model", "nothing", "the model file to assess (or --init-policy FILE)")
    from bastion.scale.backend import check_backend_args

    check_backend_args(backend, address, workers)
    if budget not in BUDGETS:
        raise InputError("--budget", repr(budget), f"one of {', '.join(BUDGETS)}")
    if policy is not None and demo_policy:
        raise InputError("--demo-policy", "together with --policy", "one of --policy FILE or --demo-policy")
    for name, path in (("--model", model), ("--data", data), ("--train", train), ("--members", members),
                       ("--non-members", non_members), ("--pub", pub), ("--signature", signature)):
        if path is not None and not path.exists():
            raise InputError(name, f"{path}, which does not exist", "an existing path")
    pol = Policy.from_file(policy) if policy is not None else Policy.demo() if demo_policy else Policy.default()
    if pol.signature == "required" and pub is None:
        raise InputError("--pub", "nothing", f"the signer's public key: the policy ({pol.source}) requires a signature")
    lo_hi = _parse_bounds(bounds)
    if limit is not None and limit < 1:
        raise InputError("--limit", limit, "a positive number of examples")
    if batch_size is not None and batch_size < 1:
        raise InputError("--batch-size", batch_size, "a positive integer")

    inputs_read = (model, data, train, members, non_members, policy, pub, signature)
    outputs = [(report / name, "--report") for name in REPORT_FILES.values()] if report is not None else []
    outputs += [(p, flag) for p, flag in ((sarif, "--sarif"), (junit, "--junit")) if p is not None]
    seen: set[Path] = set()
    for path, flag in outputs:
        if path.resolve() in seen:
            raise InputError(flag, str(path), "a path no other output uses")
        seen.add(path.resolve())
        check_output_file(path, flag, force=force, inputs=inputs_read)

    ins = Inputs(model=model, data=data, train=train, members=members, non_members=non_members, pub=pub,
                 signature=signature, signed_dir=signed_dir, factory=factory, trust_pickle=trust_pickle,
                 bounds=lo_hi, label_column=label_column, seed=seed, batch_size=batch_size, limit=limit)
    with contextlib.ExitStack() as stack:
        if backend == "ray":
            from bastion.scale import open_backend

            ins.backend = stack.enter_context(open_backend("ray", address=address, workers=workers))
        bar = stack.enter_context(progress_bar(not json_out))
        task = bar.add_task("assessing", total=100)

        def on_progress(what: str, done: float, total: float) -> None:
            bar.update(task, description=what, completed=round(100 * done / total), total=100)

        result = assess(ins, policy=pol, budget=budget, progress=on_progress)

    written: dict[str, Path] = write_reports(result, report) if report is not None else {}
    if sarif is not None:
        from bastion.assess.gate.sarif import to_sarif

        sarif.write_text(json.dumps(to_sarif(result), indent=2), encoding="utf-8")
        written["sarif"] = sarif
    if junit is not None:
        from bastion.assess.gate.junit import to_junit

        junit.write_text(to_junit(result), encoding="utf-8")
        written["junit"] = junit
    if json_out:
        body = result.to_dict()
        body["written"] = {k: str(v) for k, v in written.items()}
        print_json(body)
    else:
        from bastion.assess.gate.scorecard import print_scorecard

        console = Console()
        print_scorecard(result, console)
        for kind, path in written.items():
            console.print(f"{kind}: {path}", highlight=False)
    raise typer.Exit(result.exit_code)

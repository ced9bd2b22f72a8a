"""`bastion data`: validate, audit, clean and trace training data (MITRE ATLAS AML.T0020, poison training data).

Exit codes: 0 the data passed (no violation, no finding, manifests identical), 1 it did not, 2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bastion.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    FACTORY_HELP,
    check_output_folder,
    err_console,
    handle_errors,
    print_json,
)
from bastion.errors import InputError

app = typer.Typer(
    name="data",
    help=("Training-data hygiene and provenance: schema validation, audits for duplicates, leakage, outliers, "
          "label issues and poisoned records, cleaning with a removal log, signed per-record manifests.\n\n"
          "Formats: .npz (x, y), .npy, .csv and .parquet (label column --label-column), image folders (one "
          "sub-folder per class).\n\n"
          "Examples:\n\n"
          "  bastion data validate train.csv --schema schema.yaml\n\n"
          "  bastion data audit train.npz --model model.pt --test test.npz --report audit/\n\n"
          "  bastion data clean train.npz --model model.pt --out clean.npz --retrain smallcnn --test test.npz\n\n"
          "  bastion data manifest images/ --source vendor-A --key keys/release --out images.manifest.json\n\n"
          "  bastion data diff old.manifest.json new.manifest.json"),
    no_args_is_help=True,
)

LABEL_HELP = "Tables: the label column ('' for none)."


def register(root: typer.Typer) -> None:
    """Add ``bastion data ...`` to the app."""
    root.add_typer(app, name="data")


def _label(label_column: str) -> str | None:
    return label_column or None


def _load(path: Path, label_column: str, decode: bool = True) -> Any:
    from bastion.data import load_records

    return load_records(path, label_column=_label(label_column), decode=decode)


def _model(path: Path | None, factory: str | None, trust_pickle: bool) -> Any:
    if path is None:
        return None
    from bastion.core.loading import load_model

    return load_model(path, factory=factory, trust_pickle=trust_pickle)


@app.command("validate")
@handle_errors
def validate_cmd(
    data: Path = typer.Argument(..., help="Data file or image folder."),
    schema: Path = typer.Option(..., "--schema", help="YAML schema: label(s), class_balance, shape, range, missing, columns."),
    label_column: str = typer.Option("label", "--label-column", help=LABEL_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report.", metavar=""),
) -> None:
    """Check DATA against a schema; list every violating record. Exit 1 on any violation.

    Example: bastion data validate train.csv --schema schema.yaml
    """
    from bastion.data import load_schema, validate

    sch = load_schema(schema)
    rec = _load(data, sch.get("label", label_column) if "label" in sch else label_column)
    found = validate(rec, sch)
    if json_out:
        print_json({"data": str(data), "records": len(rec), "violations": [v.to_json() for v in found],
                    "passed": not found})
    else:
        for v in found[:200]:
            typer.echo(f"{data}:{v.record if v.record is not None else '*'}: {v.check}: {v.message}")
        typer.echo(f"{len(found)} violation(s) in {len(rec)} records" if found else f"{len(rec)} records: schema OK")
    raise typer.Exit(EXIT_FAILED if found else EXIT_OK)


def _audit(data: Path, label_column: str, model: Path | None, factory: str | None, trust_pickle: bool,
           test: Path | None, checks: str | None, outlier_rate: float, seed: int,
           confirm: bool = True) -> tuple[Any, Any]:
    from bastion.data import CHECKS, audit

    chosen = tuple(c.strip() for c in checks.split(",")) if checks else CHECKS
    bad = [c for c in chosen if c not in CHECKS]
    if bad:
        raise InputError("--checks", ",".join(bad), f"some of {','.join(CHECKS)}")
    if not 0.0 < outlier_rate < 0.5:
        raise InputError("--outlier-rate", outlier_rate, "a fraction in (0, 0.5)")
    rec = _load(data, label_column)
    test_rec = _load(test, label_column) if test is not None else None
    m = _model(model, factory, trust_pickle)
    return rec, audit(rec, model=m, test=test_rec, checks=chosen, outlier_rate=outlier_rate, seed=seed,
                      confirm_poison=confirm)


@app.command("audit")
@handle_errors
def audit_cmd(
    data: Path = typer.Argument(..., help="Data file or image folder."),
    model: Path | None = typer.Option(None, "--model", help="A PyTorch model trained on DATA: enables the poison detectors."),
    test: Path | None = typer.Option(None, "--test", help="Test data: enables the train/test leakage check."),
    checks: str | None = typer.Option(None, "--checks", help="Comma-separated subset of duplicates,near-duplicates,leakage,outliers,label-issues,poison."),
    report: Path | None = typer.Option(None, "--report", help="Folder for report.html, report.md and report.json."),
    outlier_rate: float = typer.Option(0.01, "--outlier-rate", help="Share of records the outlier check reports."),
    confirm: bool = typer.Option(True, "--confirm/--no-confirm", help="Poison: count Spectre's flags only in "
                                 "classes an overlay test confirms carry a trigger (a patch survives being overlaid "
                                 "on other records; keeps honest rare records). --no-confirm also removes flags of "
                                 "unconfirmed classes: catches blended and clean-label triggers the overlay misses, "
                                 "at the cost of a few % of clean records."),
    label_column: str = typer.Option("label", "--label-column", help=LABEL_HELP),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle model files (they can run code).", metavar=""),
    seed: int = typer.Option(0, "--seed", help="Seed of the randomised checks."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report.", metavar=""),
) -> None:
    """List suspicious records with the evidence for each. Exit 1 when anything is flagged.

    Example: bastion data audit train.npz --model model.pt --test test.npz --report audit/
    """
    from bastion.data.report import write_reports

    if report is not None:
        check_output_folder(report, "--report")
    rec, res = _audit(data, label_column, model, factory, trust_pickle, test, checks, outlier_rate, seed, confirm)
    if report is not None:
        write_reports(res, report, rec)
    if json_out:
        print_json(res.to_json())
    else:
        for f in res.findings[:200]:
            typer.echo(f"{data}:{f.record}: {f.check}: score {f.score:.3f}: {f.reason}")
        for c, why in res.skipped.items():
            err_console.print(f"{c} skipped: {why}", highlight=False)
        typer.echo(f"{len(res.rows())} of {len(rec)} records flagged " + str(res.counts()))
    raise typer.Exit(EXIT_FAILED if res.findings else EXIT_OK)


@app.command("clean")
@handle_errors
def clean_cmd(
    data: Path = typer.Argument(..., help="Data file or image folder (never modified)."),
    out: Path = typer.Option(..., "--out", help="Where the cleaned data set goes (same format as DATA)."),
    log: Path | None = typer.Option(None, "--log", help="Removal log, JSON lines (default OUT + '.removed.jsonl')."),
    model: Path | None = typer.Option(None, "--model", help="A PyTorch model trained on DATA: removes poison too."),
    test: Path | None = typer.Option(None, "--test", help="Test data: removes leaked records; scores --retrain."),
    remove: str = typer.Option("duplicates,leakage,label-issues,poison", "--remove", help="Checks whose findings are removed."),
    retrain: str | None = typer.Option(None, "--retrain", help="Train this zoo architecture (mlp, smallcnn) before and after cleaning and report test accuracy."),
    epochs: int = typer.Option(15, "--epochs", help="--retrain: training epochs."),
    confirm: bool = typer.Option(True, "--confirm/--no-confirm", help="Poison: count Spectre's flags only in "
                                 "classes an overlay test confirms carry a trigger (a patch survives being overlaid "
                                 "on other records; keeps honest rare records). --no-confirm also removes flags of "
                                 "unconfirmed classes: catches blended and clean-label triggers the overlay misses, "
                                 "at the cost of a few % of clean records."),
    label_column: str = typer.Option("label", "--label-column", help=LABEL_HELP),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle model files (they can run code).", metavar=""),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out.", metavar=""),
    seed: int = typer.Option(0, "--seed", help="Seed of the randomised checks and of --retrain."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.", metavar=""),
) -> None:
    """Write DATA without its flagged records, and a log of what was removed and why (record id, content
    SHA-256, detector, score, reason). The input is never modified.

    Example: bastion data clean train.npz --model model.pt --out clean.npz --retrain smallcnn --test test.npz
    """
    from bastion.data import CHECKS, clean

    chosen = tuple(c.strip() for c in remove.split(",") if c.strip())
    bad = [c for c in chosen if c not in CHECKS]
    if bad:
        raise InputError("--remove", ",".join(bad), f"some of {','.join(CHECKS)}")
    log_path = log or out.with_name(out.name + ".removed.jsonl")
    if retrain is not None and test is None:
        raise InputError("--retrain", retrain, "--test data to measure accuracy on")
    for p in (out, log_path):
        if p.exists() and p.resolve() == data.resolve():
            raise InputError("--out", str(p), "a path other than the input (the input is never modified)")
    if log_path.exists() and not force:
        raise InputError("--log", f"{log_path}, which exists", "a new path, or --force to replace it")
    rec, res = _audit(data, label_column, model, factory, trust_pickle, test, ",".join(chosen), 0.01, seed, confirm)
    result = clean.plan(rec, res, chosen)
    clean.write(rec, result, out, log_path, force=force)
    summary: dict[str, Any] = {"data": str(data), "out": str(out), "log": str(log_path), "records": len(rec),
                               **result.to_json(), "skipped": res.skipped}
    if retrain is not None:
        assert test is not None
        t = _load(test, label_column)
        if t.y is None or rec.y is None:
            raise InputError("--retrain", retrain, "labelled DATA and --test data")
        summary["retrain"] = clean.retrain_compare(retrain, rec, result.kept, t.x, t.y, epochs=epochs, seed=seed)
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"kept {summary['kept']} of {len(rec)} records, removed {summary['removed']}: {out} (log {log_path})")
        if "retrain" in summary:
            r = summary["retrain"]
            typer.echo(f"{retrain}: clean test accuracy {r['before']['clean_accuracy']:.4f} before, "
                       f"{r['after']['clean_accuracy']:.4f} after cleaning")


@app.command("manifest")
@handle_errors
def manifest_cmd(
    data: Path = typer.Argument(..., help="Data file or image folder."),
    source: str = typer.Option(..., "--source", help="Where the data came from (vendor, pipeline, URL)."),
    out: Path | None = typer.Option(None, "--out", help="Manifest file (default DATA + '.manifest.json')."),
    key: Path | None = typer.Option(None, "--key", help="Private key from 'bastion sign keygen': sign the manifest."),
    label_column: str = typer.Option("label", "--label-column", help=LABEL_HELP),
    force: bool = typer.Option(False, "--force", help="Replace an existing manifest.", metavar=""),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.", metavar=""),
) -> None:
    """Write per-record and per-shard SHA-256 digests of DATA with its source and time, optionally signed.

    Example: bastion data manifest images/ --source vendor-A --key keys/release
    """
    import json

    from bastion.data import manifest
    from bastion.data.records import atomic_output

    target = out or data.with_name(data.name.rstrip("/") + ".manifest.json")
    if target.exists() and not force:
        raise InputError("--out", f"{target}, which exists", "a new path, or --force to replace it")
    if target.exists() and target.resolve() == data.resolve():
        raise InputError("--out", str(target), "a path other than the data")
    rec = _load(data, label_column, decode=False)
    m = manifest.build(rec, source)
    doc = manifest.sign(m, key) if key is not None else m
    with atomic_output(target) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    summary = {"manifest": str(target), "records": len(rec), "shards": len(m["shards"]), "digest": m["digest"],
               "signed": key is not None}
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"{target}: {len(rec)} records, {len(m['shards'])} shard(s), digest sha256:{m['digest']}"
                   + (" (signed)" if key is not None else ""))


@app.command("diff")
@handle_errors
def diff_cmd(
    old: Path = typer.Argument(..., help="Earlier manifest."),
    new: Path = typer.Argument(..., help="Later manifest."),
    public_key: Path | None = typer.Option(None, "--public-key", help="Check both manifests' signatures with this key."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report.", metavar=""),
) -> None:
    """Name the records added, removed and changed between two manifests. Exit 1 if they differ (or a
    signature does not verify).

    Example: bastion data diff march.manifest.json april.manifest.json
    """
    from bastion.data import manifest

    a, b = manifest.load(old, public_key), manifest.load(new, public_key)
    d = manifest.diff(a.manifest, b.manifest)
    bad_sig = [str(p) for p, m in ((old, a), (new, b)) if m.verified is False]
    report = {"old": str(old), "new": str(new), **d.to_json(), "signatures_failed": bad_sig}
    if json_out:
        print_json(report)
    else:
        for kind, names in (("added", d.added), ("removed", d.removed), ("changed", d.changed)):
            for n in names:
                typer.echo(f"{kind}: {n}")
        for p in bad_sig:
            typer.echo(f"signature does not verify: {p}")
        moved = f" ({len(d.moved)} unchanged records renumbered)" if d.moved else ""
        typer.echo(("identical" if d.empty else
                    f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed") + moved)
    raise typer.Exit(EXIT_OK if d.empty and not bad_sig else EXIT_FAILED)

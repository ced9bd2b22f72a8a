"""`bastion harden`: adversarially train a model on a data file and show what it bought.

Trains the architecture twice on the same data, once normally (``bastion.zoo.train``) and once with
adversarial training, then measures clean and robust accuracy of both on the same test data with
``bastion.evaluate``. Writes ``OUT.pt`` (TorchScript, loadable without pickle), ``OUT.safetensors``
(weights, for ``--factory``), ``OUT.md`` (the before/after report) and, with ``--json``, prints the
report as JSON. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # torch loads in seconds; only commands that need it pay for it
    import torch
    from torch import nn

from bastion.cli.common import command_line, handle_errors, parse_shape, print_json, progress_bar
from bastion.cli.paths import atomic_path, check_output, write_text_atomic
from bastion.errors import InputError

#: CLI method names -> AdversarialTrainer methods
METHODS = {"pgd-at": "pgd", "trades": "trades", "fgsm-rs": "fgsm-rs"}
#: share of --data held out for the before/after comparison when no --test file is given
TEST_FRACTION = 0.2
#: the standard model's learning rate and batch size (bastion.zoo.train's Adam)
STANDARD_LR = 3e-3
BATCH_SIZE = 64
#: PGD used when bastion.evaluate is unavailable
FALLBACK_PGD_STEPS = 20


def register(app: typer.Typer) -> None:
    """Add ``bastion harden`` to the app."""
    app.command("harden")(harden)


def _load(path: Path, argument: str, input_shape: tuple[int, ...] | None) -> tuple[torch.Tensor, torch.Tensor]:
    from bastion.datasets import load_data

    x, y = load_data(path, input_shape=input_shape)
    if y is None:
        raise InputError(argument, str(path), "labelled data: an .npz with arrays 'x' and 'y', a .csv with a "
                         "'label' column, or an image folder")
    return x, y


def _build(arch: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:

    from bastion.zoo import build

    if ":" in arch:
        from bastion.core.loading import build_from_factory

        module: nn.Module = build_from_factory(arch)
        return module
    return build(arch, input_shape, num_classes)


def _split(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    import torch

    n = x.shape[0]
    n_test = max(1, round(TEST_FRACTION * n))
    if n - n_test < 2:
        raise InputError("--data", f"{n} examples", "enough examples to hold out a test split (or pass --test)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    te, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[te], y[te]


def _assess(module: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, suite: str,
            bounds: tuple[float, float]) -> dict[str, Any]:
    """Clean and robust accuracy: bastion.evaluate when available, else PGD (said so in the report)."""
    import torch

    import bastion as bn

    model = bn.wrap(module, bounds=bounds)
    try:
        res = bn.evaluate(model, x, y, norm=norm, epsilons=[eps], suite=suite, checks=False)
        return {"clean_accuracy": float(res.clean_accuracy), "robust_accuracy": float(res.robust_accuracy[0]),
                "evaluated_with": f"bastion.evaluate (suite {suite})"}
    except NotImplementedError:
        with torch.no_grad():
            clean = float((model.predict(x) == y).float().mean())
        _, _, success = bn.attacks.PGD(norm=norm, steps=FALLBACK_PGD_STEPS)(model, x, y, epsilons=eps)
        return {"clean_accuracy": clean, "robust_accuracy": 1.0 - float(success.float().mean()),
                "evaluated_with": f"PGD-{FALLBACK_PGD_STEPS} (bastion.evaluate unavailable)"}


def output_paths(out: Path) -> dict[str, Path]:
    """The files ``--out`` names: ``robust`` -> robust.pt, .safetensors, .md; ``robust.pt`` -> the same."""
    base = out.with_suffix("") if out.suffix.lower() == ".pt" else out
    return {"torchscript": base.with_name(base.name + ".pt"), "safetensors": base.with_name(base.name + ".safetensors"),
            "report": base.with_name(base.name + ".md")}


def _save(module: nn.Module, example: torch.Tensor, paths: dict[str, Path]) -> dict[str, str]:
    import torch
    from safetensors.torch import save_file

    module = module.eval().cpu()
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream but is the one whole-model format that loads without pickle.
        warnings.simplefilter("ignore")
        try:
            scripted = torch.jit.script(module)
        except Exception:
            scripted = torch.jit.trace(module, example[:1].cpu())
        pt = paths["torchscript"]
        with atomic_path(pt) as tmp:
            scripted.save(str(tmp))
    st = paths["safetensors"]
    with atomic_path(st) as tmp:
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    return {"torchscript": str(pt), "safetensors": str(st)}


def _markdown(r: dict[str, Any]) -> str:
    s, h = r["standard"], r["hardened"]
    lines = [
        f"# Hardening report: {r['arch']} with {r['method']}",
        "",
        f"- data: `{r['data']}` ({r['train_examples']} training examples); test: {r['test']} "
        f"({r['test_examples']} examples)",
        f"- threat: {r['norm']} ball, eps = {r['eps']:g}; training: {r['epochs']} epochs, {r['steps']} steps, "
        f"precision {r['precision']}, schedule {r['schedule']}",
        f"- evaluated with: {h['evaluated_with']}",
        f"- best epoch by robust validation accuracy: {r['best_epoch']}"
        + (f"\n- differential privacy (Opacus DP-SGD): spent ε = {p['epsilon']:.3f} at δ = {p['delta']:g}, "
           f"noise multiplier {p['noise_multiplier']:.3f}, clipping norm {p['max_grad_norm']:g}"
           if (p := r.get("privacy")) else ""),
        "",
        "| model | clean accuracy | robust accuracy | training time (s) |",
        "|---|---|---|---|",
        f"| standard | {s['clean_accuracy']:.3f} | {s['robust_accuracy']:.3f} | {s['train_seconds']:.1f} |",
        f"| hardened ({r['method']}) | {h['clean_accuracy']:.3f} | {h['robust_accuracy']:.3f} | "
        f"{h['train_seconds']:.1f} |",
        "",
        "## Epochs",
        "",
        "| epoch | loss | clean val acc | robust val acc | time (s) |",
        "|---|---|---|---|---|",
    ]
    for e in r["history"]:
        cv = "-" if e["clean_val_acc"] is None else f"{e['clean_val_acc']:.3f}"
        rv = "-" if e["robust_val_acc"] is None else f"{e['robust_val_acc']:.3f}"
        lines.append(f"| {e['epoch']} | {e['loss']:.4f} | {cv} | {rv} | {e['time_s']:.2f} |")
    lines += ["", f"Files: `{r['files']['torchscript']}`, `{r['files']['safetensors']}`", ""]
    prov = r.get("provenance")
    if prov:
        lines += ["## Provenance", "",
                  f"- hardened model: `{prov['model']['path']}` (SHA-256 `{prov['model']['sha256']}`)",
                  f"- training data: `{prov['data']['path']}` (SHA-256 `{prov['data']['sha256']}`)"]
        if r.get("test_provenance"):
            lines.append(f"- test data: `{r['test_provenance']['path']}` (SHA-256 `{r['test_provenance']['sha256']}`)")
        lines += [f"- command: `{prov['command']}`", f"- Bastion {prov['bastion_version']}, {prov['created']} (UTC)", ""]
    return "\n".join(lines)


@handle_errors
def harden(
    data: Path = typer.Option(..., "--data", help="Labelled training data: .npz (x, y), .csv with a label column, "
                              "image folder."),
    out: Path = typer.Option(..., "--out", help="Output model file or base name: robust.pt or robust writes "
                             "robust.pt, robust.safetensors and robust.md."),
    test: Path | None = typer.Option(None, "--test", help="Labelled test data; default: hold out 20% of --data."),
    arch: str = typer.Option("smallcnn", "--arch", help="smallcnn, mlp, resnet18, or module:Factory "
                                "with literal arguments if it needs them, e.g. 'mypkg.nets:Net(10, width=32)'."),
    method: str = typer.Option("pgd-at", "--method", help="pgd-at, trades, fgsm-rs, or dp-sgd (differential "
                               "privacy through Opacus, against membership inference; --target-epsilon, --delta)."),
    target_epsilon: float = typer.Option(8.0, "--target-epsilon", help="dp-sgd: privacy budget ε to spend."),
    delta: float | None = typer.Option(None, "--delta", help="dp-sgd: δ (default 1/(10 n), below 1/n)."),
    norm: str = typer.Option("linf", "--norm", help="Threat norm: linf, l2 or l1."),
    eps: float = typer.Option(0.2, "--eps", help="Radius of the threat ball, in input units."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs (both models)."),
    steps: int = typer.Option(7, "--steps", help="Attack steps per batch (pgd-at, trades)."),
    lr: float = typer.Option(STANDARD_LR, "--lr", help="Peak learning rate (Adam)."),
    beta: float = typer.Option(6.0, "--beta", help="TRADES trade-off weight."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (autocast)."),
    schedule: str = typer.Option("cyclic", "--schedule", help="cyclic (one-cycle) or constant."),
    suite: str = typer.Option("standard", "--suite", help="bastion.evaluate suite for the comparison."),
    input_shape: str | None = typer.Option(None, "--input-shape", help="Reshape inputs, e.g. 1,8,8."),
    seed: int = typer.Option(0, "--seed", help="Random seed (split, initialisation, training)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout.", metavar=""),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files (never the inputs).",
                               metavar=""),
) -> None:
    """Adversarially train a model and compare it with a normally trained one (clean and robust accuracy).

    Examples:

      bastion harden --data train.npz --arch smallcnn --method pgd-at --eps 0.2 --epochs 10 --out models/robust.pt

      bastion harden --data train.npz --test test.npz --method trades --eps 0.1 --out robust --json

      bastion harden --data train.csv --arch mlp --method fgsm-rs --eps 0.1 --out tabular/robust

      bastion harden --data train.npz --arch mlp --method dp-sgd --target-epsilon 8 --delta 1e-5 --out private

    Writes OUT.pt (TorchScript), OUT.safetensors and OUT.md (the before/after report); OUT's folder is
    created if missing, existing files are kept unless --force. Exit codes: 0 done; 2 could not run (bad
    file, bad arguments).
    """
    import torch

    import bastion as bn
    from bastion.assess.result import provenance, sha256_of
    from bastion.attacks.evasion.base import PRECISIONS
    from bastion.core.validation import check_class_labels, check_inputs, check_labels
    from bastion.defenses import AdversarialTrainer
    from bastion.defenses.training import SCHEDULES
    from bastion.zoo import train

    if method not in METHODS and method != "dp-sgd":
        raise InputError("--method", method, f"one of {', '.join(METHODS)}, dp-sgd")
    if method == "dp-sgd" and not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise InputError("--target-epsilon", target_epsilon, "a positive privacy budget, e.g. 8")
    if method == "dp-sgd" and delta is not None and not 0.0 < delta < 1.0:
        raise InputError("--delta", delta, "a probability in (0, 1), well below 1/n, e.g. 1e-5")
    if not eps > 0:
        raise InputError("--eps", eps, "a positive radius")
    if epochs < 1:
        raise InputError("--epochs", epochs, "an integer >= 1")
    # Checked before anything trains: a bad value found after the standard model's training wastes minutes.
    if not (math.isfinite(lr) and lr > 0):
        raise InputError("--lr", lr, "a positive learning rate")
    if steps < 1:
        raise InputError("--steps", steps, "an integer >= 1")
    if not (math.isfinite(beta) and beta > 0):
        raise InputError("--beta", beta, "a positive TRADES weight")
    if precision not in PRECISIONS:
        raise InputError("--precision", precision, f"one of {', '.join(PRECISIONS)}")
    if schedule not in SCHEDULES:
        raise InputError("--schedule", schedule, f"one of {', '.join(SCHEDULES)}")
    norm = bn.get_norm(norm).name
    # Before any training: a path that cannot be written must fail now, not after the last epoch.
    paths = {kind: check_output(p, inputs=(data, test), force=force, what="--out")
             for kind, p in output_paths(out).items()}
    bounds = (0.0, 1.0)
    shape = parse_shape(input_shape)
    x, y = _load(data, "--data", shape)
    # The rules evaluate, attack and certify apply, with the class count taken from the training labels
    # (all of --data, before a test split could hide a stray label in the held-out part).
    y, num_classes = check_class_labels(y, int(x.shape[0]), argument="--data labels")
    if test is not None:
        x_tr, y_tr = x, y
        x_te, y_te = _load(test, "--test", shape)
        if x_te.shape[1:] != x_tr.shape[1:]:
            raise InputError("--test", f"inputs of shape {tuple(x_te.shape[1:])}",
                             f"the training inputs' shape {tuple(x_tr.shape[1:])}")
    else:
        x_tr, y_tr, x_te, y_te = _split(x, y, seed)
    check_inputs(x_tr, bounds, argument="--data")
    check_inputs(x_te, bounds, argument="--test" if test is not None else "--data")
    if test is not None:
        y_te = check_labels(y_te, int(x_te.shape[0]), num_classes, argument="--test labels")
    if int(torch.unique(y_tr).numel()) < 2:
        raise InputError("--data", f"labels of one class only ({int(y_tr[0])})", "examples of at least two classes")

    torch.manual_seed(seed)
    fresh = _build(arch, tuple(x_tr.shape[1:]), num_classes)
    standard_net, hardened_net = copy.deepcopy(fresh), copy.deepcopy(fresh)
    show = not as_json
    with progress_bar(show) as bar:
        t_std = bar.add_task("standard training", total=epochs)
        t0 = time.perf_counter()
        train(standard_net, x_tr, y_tr, epochs=epochs, lr=STANDARD_LR, batch_size=BATCH_SIZE, seed=seed,
              progress=lambda _e, _l: bar.advance(t_std))
        std_seconds = time.perf_counter() - t0
        t_adv = bar.add_task(f"adversarial training ({method})", total=epochs)
        t0 = time.perf_counter()
        privacy: dict[str, Any] | None = None
        if method == "dp-sgd":
            from bastion.defenses.dp import train_dp

            dp = train_dp(hardened_net, x_tr, y_tr, target_epsilon=target_epsilon, delta=delta, epochs=epochs, lr=lr,
                          batch_size=BATCH_SIZE, seed=seed, progress=lambda _e, _l: bar.advance(t_adv))
            hardened_model, best_epoch, history, privacy = dp.model, epochs - 1, [], dp.to_dict()
        else:
            trainer = AdversarialTrainer(METHODS[method], norm=norm, eps=eps, steps=steps, beta=beta, epochs=epochs,
                                         lr=lr, batch_size=BATCH_SIZE, precision=precision, schedule=schedule,
                                         bounds=bounds, seed=seed, progress=lambda _r: bar.advance(t_adv))
            trainer.fit(hardened_net, x_tr, y_tr)
            hardened_model, best_epoch, history = trainer.model_, trainer.best_epoch_, trainer.history_
        adv_seconds = time.perf_counter() - t0
        t_eval = bar.add_task("evaluating both models", total=2)
        standard = _assess(standard_net, x_te, y_te, norm, eps, suite, bounds)
        bar.advance(t_eval)
        hardened = _assess(hardened_model, x_te, y_te, norm, eps, suite, bounds)
        bar.advance(t_eval)
    standard["train_seconds"], hardened["train_seconds"] = std_seconds, adv_seconds
    files = _save(hardened_model, x_tr, paths)
    report: dict[str, Any] = {
        "data": str(data), "test": str(test) if test is not None else f"{TEST_FRACTION:.0%} held out of --data",
        "train_examples": int(x_tr.shape[0]), "test_examples": int(x_te.shape[0]), "arch": arch, "method": method,
        "norm": norm, "eps": eps, "epochs": epochs, "steps": 1 if method == "fgsm-rs" else steps, "precision": precision, "schedule": schedule, "seed": seed, "best_epoch": best_epoch,
        "standard": standard, "hardened": hardened, "history": history, "files": files, "privacy": privacy,
        "provenance": provenance(files["torchscript"], data, command_line()),
        "test_provenance": {"path": str(test), "sha256": sha256_of(test)} if test is not None else None,
    }
    md = write_text_atomic(paths["report"], _markdown(report))
    report["files"]["report"] = str(md)
    if as_json:
        print_json(report)
        return
    typer.echo(f"{'model':<22}{'clean':>8}{'robust @ ' + format(eps, 'g'):>14}")
    typer.echo(f"{'standard':<22}{standard['clean_accuracy']:>8.3f}{standard['robust_accuracy']:>14.3f}")
    typer.echo(f"{'hardened (' + method + ')':<22}{hardened['clean_accuracy']:>8.3f}{hardened['robust_accuracy']:>14.3f}")
    typer.echo(f"evaluated with {hardened['evaluated_with']}; wrote {files['torchscript']}, "
               f"{files['safetensors']}, {md}")

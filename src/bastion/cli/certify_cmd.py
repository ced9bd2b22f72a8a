"""`bastion certify`: certified accuracy of a model file on a data file.

Randomized smoothing certifies L2 radii for any model that returns scores or labels; interval bound
propagation certifies L-inf radii for PyTorch networks built from supported layers. Exit codes: 0 the
certified accuracy meets ``--min-certified-accuracy`` at every radius, 1 it does not, 2 bad input.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # torch loads in seconds; only the command itself pays for it
    import torch

from bastion.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    FACTORY_HELP,
    command_line,
    err_console,
    handle_errors,
    parse_floats,
    parse_shape,
    print_json,
    progress_bar,
    warn_eps,
)
from bastion.errors import InputError

# --backend texts, as in bastion.scale.backend (not imported here: it would load torch for every --help)
BACKEND_HELP = ("local (this process) | ray: shard the examples (or files) over a Ray cluster, one model per "
                "worker; needs pip install 'bastion-ml\\[ray]'.")
ADDRESS_HELP = ("With --backend ray: auto (a running cluster), ray://HOST:PORT, or none to start one on this "
                "machine (RAY_ADDRESS is honoured).")
WORKERS_HELP = "With --backend ray: workers (default: one per CPU of the cluster, or per GPU where it has GPUs)."

METHODS = ("smoothing", "ibp")
DEFAULT_RADII = "0,0.25,0.5,0.75,1.0"
#: examples per IBP batch (one progress step each)
IBP_BATCH = 256
#: runs expected to take longer than this (seconds) get a warning with the estimate before they start
WARN_SECONDS = 60.0


def register(app: typer.Typer) -> None:
    """Add ``bastion certify`` to the app."""
    app.command("certify")(certify)


def _check_fraction(value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise InputError("--min-certified-accuracy", value, "a fraction in [0, 1]")


def _run_smoothing(model: Any, x: torch.Tensor, y: torch.Tensor, radii: list[float], *, sigma: float, n0: int,
                   n: int, alpha: float, batch_size: int, precision: str, seed: int,
                   show_progress: bool) -> dict[str, Any]:
    from bastion.certify import Smoothed

    smoothed = Smoothed(model, sigma, batch_size=batch_size, precision=precision, seed=seed)
    with progress_bar(show_progress) as bar:
        task = bar.add_task(f"smoothing (n={n})", total=x.shape[0])
        result = smoothed.certify(x, n0=n0, n=n, alpha=alpha,
                                  progress=lambda done, _total: bar.update(task, completed=done))
    acc = result.certified_accuracy(y, radii)
    return {"method": "smoothing", "norm": "l2", "sigma": sigma, "n0": n0, "n": n, "alpha": alpha,
            "radii": radii, "certified_accuracy": acc, "abstained": int(result.abstained.sum()),
            "seconds": result.seconds, "per_example": {"prediction": result.prediction.tolist(),
                                                       "radius": result.radius.tolist()}}


def _run_smoothing_sharded(path: Path, x: torch.Tensor, y: torch.Tensor, radii: list[float], *, sigma: float,
                           n0: int, n: int, alpha: float, batch_size: int, precision: str, seed: int,
                           show_progress: bool, load: dict[str, Any], address: str | None,
                           workers: int | None) -> dict[str, Any]:
    """Randomized smoothing on a Ray cluster: each example's noise is seeded by (seed, its index)."""
    from bastion.scale import ModelSpec, certify_sharded, open_backend

    spec = ModelSpec.from_path(path, **load)
    with progress_bar(show_progress) as bar, open_backend("ray", address=address, workers=workers) as cluster:
        task = bar.add_task(f"smoothing (n={n}) on {cluster.workers} Ray worker(s)", total=x.shape[0])
        result = certify_sharded(cluster, spec, x, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                                 precision=precision, seed=seed,
                                 progress=lambda done, _total: bar.update(task, completed=done))
        sharding = cluster.describe()
    acc = result.certified_accuracy(y, radii)
    return {"method": "smoothing", "norm": "l2", "sigma": sigma, "n0": n0, "n": n, "alpha": alpha,
            "radii": radii, "certified_accuracy": acc, "abstained": int(result.abstained.sum()),
            "seconds": result.seconds, "sharding": {**sharding, "seeds": "per example: (seed, index)"},
            "per_example": {"prediction": result.prediction.tolist(), "radius": result.radius.tolist()}}


def _estimate_smoothing(model: Any, x: torch.Tensor, *, n0: int, n: int, batch_size: int) -> float:
    """Seconds randomized smoothing will take, from the time of one batch of noisy inputs measured here."""
    import torch

    batch = min(batch_size, n0 + n)
    noisy = x[:1].to(model.device).expand(batch, *x.shape[1:]).contiguous()
    with torch.no_grad():
        model.scores(noisy[:2])  # first call pays one-off costs (TorchScript optimisation, allocation)
        t0 = time.perf_counter()
        model.scores(noisy)
        per_batch = time.perf_counter() - t0
    return float(x.shape[0] * math.ceil((n0 + n) / batch) * per_batch)


def _format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _warn_if_long(seconds: float, examples: int, n: int) -> None:
    if seconds <= WARN_SECONDS:
        return
    quick = max(100, int(n * WARN_SECONDS / seconds) // 100 * 100)
    err_console.print(f"[yellow]warning:[/] this certification will take about {_format_duration(seconds)} "
                      f"({examples} examples x {n:,} noisy draws, timed on this machine); --n {quick} or "
                      "--limit makes it about a minute (smaller n certifies smaller radii)",
                      highlight=False, soft_wrap=True)


def _run_ibp(model: Any, x: torch.Tensor, y: torch.Tensor, epsilons: list[float], *, bounds: tuple[float, float],
             show_progress: bool) -> dict[str, Any]:
    import torch

    from bastion.certify import ibp_certify

    module = getattr(model, "module", None)
    if not isinstance(module, torch.nn.Module):
        raise InputError("--method ibp", f"a {model.kind} model", "a PyTorch model (TorchScript, or safetensors "
                         "with --factory); use --method smoothing for other models")
    if isinstance(module, torch.jit.ScriptModule):
        from bastion import wrap
        from bastion.cli.torchscript_layers import untrace

        model = wrap(untrace(module, x[:8].to(model.device)), bounds=bounds)
    t0 = time.perf_counter()
    masks = []
    with progress_bar(show_progress) as bar:
        task = bar.add_task("interval bound propagation", total=x.shape[0] * len(epsilons))
        for eps in epsilons:
            parts = []
            for i in range(0, x.shape[0], IBP_BATCH):
                parts.append(ibp_certify(model, x[i:i + IBP_BATCH], y[i:i + IBP_BATCH], eps, bounds))
                bar.advance(task, parts[-1].shape[0])
            masks.append(torch.cat(parts))
    return {"method": "ibp", "norm": "linf", "radii": epsilons,
            "certified_accuracy": [float(m.double().mean()) for m in masks], "abstained": None,
            "seconds": time.perf_counter() - t0}


def _print_human(report: dict[str, Any]) -> None:
    header = "radius (L2)" if report["method"] == "smoothing" else "eps (L-inf)"
    if report["method"] == "smoothing":
        typer.echo(f"randomized smoothing: sigma={report['sigma']}, n0={report['n0']}, n={report['n']}, "
                   f"alpha={report['alpha']}")
    else:
        typer.echo("interval bound propagation")
    typer.echo(f"{report['model']} on {report['data']}: {report['examples']} examples")
    typer.echo(f"  {header:<12} certified accuracy")
    for r, a in zip(report["radii"], report["certified_accuracy"], strict=True):
        typer.echo(f"  {r:<12.4g} {a:.3f}")
    if report["abstained"] is not None:
        typer.echo(f"abstained: {report['abstained']} of {report['examples']}")
    rate = report["examples"] / max(report["seconds"], 1e-9)
    typer.echo(f"time: {report['seconds']:.2f} s ({rate:.1f} examples/s)")
    if report["min_certified_accuracy"] is not None:
        floor = report["min_certified_accuracy"]
        if report["passed"]:
            typer.echo(f"PASS: certified accuracy >= {floor} at every radius")
        else:
            worst = min(report["certified_accuracy"])
            typer.echo(f"FAIL: certified accuracy {worst:.3f} < {floor} at some radius")


@handle_errors
def certify(
    model: Path = typer.Option(..., "--model", help="Model file: TorchScript, ONNX, skops, or safetensors with --factory."),
    data: Path = typer.Option(..., "--data", help="Labelled data: .npz (x, y), .csv with a label column, image folder."),
    method: str = typer.Option("smoothing", "--method", help="smoothing (L2, any model) or ibp (L-inf, PyTorch layers)."),
    sigma: float = typer.Option(0.25, "--sigma", help="Smoothing: Gaussian noise level, in input units."),
    n: int = typer.Option(100_000, "--n", help="Smoothing: noisy draws per example to estimate pA."),
    n0: int = typer.Option(100, "--n0", help="Smoothing: noisy draws per example to select the class."),
    alpha: float = typer.Option(0.001, "--alpha", help="Smoothing: failure probability of each certificate."),
    radii: str | None = typer.Option(None, "--radii", help=f"Smoothing: L2 radii to report (default {DEFAULT_RADII})."),
    eps: str | None = typer.Option(None, "--eps", help="IBP: L-inf radii to certify, e.g. 0.1 or 0.05,0.1."),
    limit: int | None = typer.Option(None, "--limit", help="Certify only the first N examples."),
    batch_size: int = typer.Option(1000, "--batch-size", help="Smoothing: noisy inputs per forward pass."),
    precision: str = typer.Option("fp32", "--precision", help="Smoothing: fp32, bf16 or fp16 forward passes."),
    seed: int = typer.Option(0, "--seed", help="Seed for the noise."),
    bounds: str = typer.Option("0,1", "--bounds", help="Input bounds low,high."),
    input_shape: str | None = typer.Option(None, "--input-shape", help="Reshape inputs, e.g. 1,8,8."),
    factory: str | None = typer.Option(None, "--factory", help=FACTORY_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickle model files (they can run code).", metavar=""),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: the model's device)."),
    min_certified_accuracy: float | None = typer.Option(
        None, "--min-certified-accuracy", help="Exit 1 if certified accuracy is below this at any radius."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report instead of text.", metavar=""),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    workers: int | None = typer.Option(None, "--workers", help=WORKERS_HELP),
) -> None:
    """Certify a model: the fraction of examples provably classified right within each radius.

    Examples:

      bastion certify --model model.pt --data test.npz --method smoothing --sigma 0.25 --radii 0.25,0.5

      bastion certify --model mlp.safetensors --factory 'bastion.zoo:MLP(64, 10)' --data test.npz \\
          --method ibp --eps 0.05 --min-certified-accuracy 0.5 --json

    Exit codes: 0 passed (or no gate given); 1 certified accuracy below --min-certified-accuracy at
    some radius; 2 could not run (bad file, bad arguments).
    """
    from bastion.assess.result import provenance
    from bastion.core.loading import load_model
    from bastion.datasets import load_data
    from bastion.scale.backend import check_backend_args

    if method not in METHODS:
        raise InputError("--method", repr(method), f"one of {', '.join(METHODS)}")
    check_backend_args(backend, address, workers)
    if backend == "ray" and method != "smoothing":
        raise InputError("--backend", "ray with --method ibp", "--method smoothing (IBP is one bound pass per "
                         "example, nothing worth sharding; run it with --backend local)")
    _check_fraction(min_certified_accuracy)
    if limit is not None and limit < 1:
        raise InputError("--limit", limit, "a positive number of examples")
    lo_hi = parse_floats(bounds, "--bounds")
    if len(lo_hi) != 2:
        raise InputError("--bounds", repr(bounds), "two numbers low,high")
    if method == "smoothing":
        if eps is not None:
            raise InputError("--eps", eps, "no --eps with --method smoothing (it certifies L2 --radii)")
        levels = parse_floats(radii or DEFAULT_RADII, "--radii")
    else:
        if radii is not None:
            raise InputError("--radii", radii, "no --radii with --method ibp (it certifies L-inf --eps)")
        if eps is None:
            raise InputError("--eps", None, "the L-inf radius to certify with --method ibp, e.g. --eps 0.1")
        levels = parse_floats(eps, "--eps")
    if any(v < 0 for v in levels):
        raise InputError("--radii/--eps", levels, "radii >= 0")

    m = load_model(model, factory=factory, bounds=(lo_hi[0], lo_hi[1]), trust_pickle=trust_pickle, device=device)
    x, y = load_data(data, input_shape=parse_shape(input_shape))
    if y is None:
        raise InputError("--data", f"{data} without labels", "labels: 'y' in .npz, a 'label' column in .csv")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    from bastion.core.validation import check_fits, check_inputs, check_labels

    xt = check_inputs(x, m.bounds, argument="--data", device=m.device)
    if xt.shape[0] > 0:
        classes = check_fits(m, xt, "--data")
        y = check_labels(y, xt.shape[0], classes, argument="--data labels").cpu()
        warn_eps(m, x, levels, [format(v, "g") for v in levels], "linf" if method == "ibp" else "l2",
                 "--eps" if method == "ibp" else "--radii")

    show = not json_out
    if method == "smoothing":
        _warn_if_long(_estimate_smoothing(m, x, n0=n0, n=n, batch_size=batch_size), int(x.shape[0]), n)
        if backend == "ray":
            report = _run_smoothing_sharded(model, x, y, levels, sigma=sigma, n0=n0, n=n, alpha=alpha,
                                            batch_size=batch_size, precision=precision, seed=seed, show_progress=show,
                                            load={"factory": factory, "bounds": (lo_hi[0], lo_hi[1]),
                                                  "trust_pickle": trust_pickle, "device": device},
                                            address=address, workers=workers)
        else:
            report = _run_smoothing(m, x, y, levels, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                                    precision=precision, seed=seed, show_progress=show)
    else:
        report = _run_ibp(m, x, y, levels, bounds=(lo_hi[0], lo_hi[1]), show_progress=show)
    passed = min_certified_accuracy is None or all(a >= min_certified_accuracy for a in report["certified_accuracy"])
    report.update({"model": str(model), "data": str(data), "examples": int(x.shape[0]),
                   "device": str(m.device), "min_certified_accuracy": min_certified_accuracy, "passed": passed,
                   "verdict": "NO GATE" if min_certified_accuracy is None else "PASS" if passed else "FAIL",
                   "provenance": provenance(model, data, command_line())})
    if json_out:
        print_json(report)
    else:
        _print_human(report)
    raise typer.Exit(EXIT_OK if passed else EXIT_FAILED)

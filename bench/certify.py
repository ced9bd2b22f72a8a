"""Randomized smoothing certification: Bastion against ART, and against the model's own forward pass.

    .venv/bin/python bench/certify.py --n 10000 --images 20 --out /tmp/certify.json

Trains a SmallCNN on the scikit-learn digits with Gaussian noise (seeded, so every run certifies the same
model), then certifies the same test images with the same sigma, n0, n, alpha and batch size through

- Bastion's :class:`bastion.certify.Smoothed` (flat (example, draw) stream, counts kept on the device);
- ART's ``PyTorchRandomizedSmoothing.certify`` (its ``sample_size`` is Cohen's n0);

and times the bare model on the same number of forward passes of the same batch size. The target is
smoothing at >= 90 % of that speed: noise, counting and statistics should cost next to nothing. The two
are timed alternately ``--repeats`` times (medians reported) because a shared machine's load drifts, and
on a CPU the ratio uses this process's CPU time, which the neighbours' load does not inflate; ART runs
once, as it is the slow one. Prints one Markdown row for bench/RESULTS.md
and writes all figures as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import bastion as bn
from bastion.certify import Smoothed, train_with_noise

RADII = (0.0, 0.25, 0.5, 0.75)


def timed(fn: Any, device: torch.device) -> tuple[float, float, Any]:
    """Run ``fn()``; return (wall seconds, CPU seconds of this process, its result).

    On a shared CPU the wall clock measures the neighbours' load as much as our work; this process's CPU
    time does not (with one thread). On a GPU only the wall clock means anything.
    """
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - w0, time.process_time() - c0, out


def forward_only(model: nn.Module, shape: tuple[int, ...], batch_size: int, batches: int, device: torch.device,
                 precision: str) -> None:
    """The bare model on ``batches`` batches of ``batch_size``: the forward passes certification makes."""
    from bastion.attacks.evasion.base import autocast

    x = torch.rand((batch_size, *shape), device=device)
    with torch.no_grad(), autocast(device, precision):
        for _ in range(batches):
            model(x).argmax(1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def art_certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    np.random.seed(args.seed)
    device_type = "gpu" if args.device.startswith("cuda") else "cpu"
    art = PyTorchRandomizedSmoothing(model, nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                                     device_type=device_type, sample_size=args.n0, scale=args.sigma, alpha=args.alpha)
    wall, cpu, (pred, radius) = timed(lambda: art.certify(x.numpy(), n=args.n, batch_size=args.batch_size),
                                      torch.device(args.device))
    yn = y.numpy()
    acc = [float(np.mean((pred == yn) & (radius >= r))) for r in RADII]
    return {"seconds": wall, "cpu_seconds": cpu, "images_per_s": x.shape[0] / wall, "certified_accuracy": acc,
            "abstained": int(np.sum(pred == -1))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=int, default=16, help="SmallCNN width")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the dev machine has 2, shared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-art", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    data = bn.datasets.digits()
    torch.manual_seed(args.seed)
    model = bn.zoo.SmallCNN(1, 10, 8, width=args.width)
    train_with_noise(model, data.x_train, data.y_train, args.sigma, epochs=args.epochs, lr=2e-3, seed=args.seed,
                     device=device)
    x, y = data.x_test[: args.images], data.y_test[: args.images]
    draws = x.shape[0] * (args.n0 + args.n)
    per_pass = [math.ceil(x.shape[0] * k / args.batch_size) for k in (args.n0, args.n)]
    batches = sum(per_pass)

    smoothed = Smoothed(model, args.sigma, batch_size=args.batch_size, precision=args.precision, seed=args.seed)
    shape = tuple(x.shape[1:])
    forward_only(model, shape, args.batch_size, 3, device, args.precision)  # warm-up
    fwd: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    result = None
    for rep in range(args.repeats):
        # alternate which goes first, so a drifting load does not always favour the same one
        for job in (("forward", "bastion") if rep % 2 == 0 else ("bastion", "forward")):
            if job == "forward":
                w, c, _none = timed(lambda: forward_only(model, shape, args.batch_size, batches, device,
                                                         args.precision), device)
                fwd.append((w, c))
            else:
                w, c, result = timed(lambda: smoothed.certify(x, n0=args.n0, n=args.n, alpha=args.alpha), device)
                ours.append((w, c))
    assert result is not None
    wall = statistics.median(r[0] for r in ours)
    fwd_wall = statistics.median(r[0] for r in fwd)
    clock = 1 if device.type == "cpu" else 0  # which clock the headline ratio uses
    ratio = statistics.median(f[clock] for f in fwd) / statistics.median(o[clock] for o in ours)
    bastion_fig = {"seconds": wall, "images_per_s": x.shape[0] / wall, "draws_per_s": draws / wall,
                   "certified_accuracy": result.certified_accuracy(y, RADII),
                   "abstained": int(result.abstained.sum()), "runs_wall_cpu_s": ours}
    report: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "device": device_name(device), "threads": args.threads,
        "command": "python " + " ".join(["bench/certify.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": f"SmallCNN(width={args.width}) digits, noise-trained sigma={args.sigma}",
        "sigma": args.sigma, "n0": args.n0, "n": args.n, "alpha": args.alpha, "images": x.shape[0],
        "batch_size": args.batch_size, "forward_batches": batches, "precision": args.precision,
        "radii": list(RADII), "forward_inputs_per_s": batches * args.batch_size / fwd_wall,
        "forward_runs_wall_cpu_s": fwd, "ratio_clock": "process CPU time" if clock else "wall",
        "bastion": bastion_fig, "fraction_of_forward": ratio,
    }
    if not args.skip_art:
        report["art"] = art_certify(model.cpu() if device.type == "cpu" else model, x, y, args)
        art_time = report["art"]["cpu_seconds" if clock else "seconds"]
        report["speedup_vs_art"] = art_time / statistics.median(o[clock] for o in ours)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))
    print(markdown_row(report))
    return report


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}"


def markdown_row(r: dict[str, Any]) -> str:
    acc = "/".join(f"{a:.2f}" for a in r["bastion"]["certified_accuracy"])
    figures = (f"{r['images']} digits, sigma {r['sigma']}, n0 {r['n0']}, n {r['n']}, alpha {r['alpha']}, batch "
               f"{r['batch_size']}, {r['precision']}: Bastion {r['bastion']['images_per_s']:.2f} img/s "
               f"({r['fraction_of_forward']:.0%} of the bare forward passes' speed by {r['ratio_clock']}; "
               f"forward {r['forward_inputs_per_s']:,.0f} inputs/s wall), "
               f"certified acc @ r={'/'.join(str(x) for x in r['radii'])}: {acc}")
    if "art" in r:
        art_acc = "/".join(f"{a:.2f}" for a in r["art"]["certified_accuracy"])
        figures += (f"; ART {r['art']['images_per_s']:.2f} img/s, certified acc {art_acc} "
                    f"(Bastion {r['speedup_vs_art']:.1f}x faster by {r['ratio_clock']})")
    return f"| {r['date']} | randomized smoothing certify | {r['device']}, {r['threads']} thread(s) | `{r['command']}` | {figures} |"


if __name__ == "__main__":
    main()

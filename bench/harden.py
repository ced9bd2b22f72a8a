"""Adversarial training speed and result: Bastion's PGD-AT vs ART's Madry trainer vs a plain loop.

Every contender trains the same SmallCNN (same initial weights) on the same digits, with the same
L-inf eps, PGD steps, step size, epochs, batch size and optimiser (Adam, constant learning rate, no
validation split), and every result is measured the same way on the test split: bastion.evaluate's
default ensemble (the robust accuracy that counts) and PGD-20 (for reference).
Bastion runs in fp32 and bf16 (autocast; bf16 pays on GPUs and on CPUs with native bf16 matrix units,
and is emulated, hence slower, on other CPUs). The plain loop is the textbook PGD-AT loop (Madry et al.;
``loss.backward()`` on the perturbation, as in Rice et al.'s reference code): the floor to beat.

    .venv/bin/python bench/harden.py --epochs 5 --out /tmp/harden.json

Prints one Markdown row for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import bastion as bn
from bastion.defenses import AdversarialTrainer


def plain_pgd_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
                 epochs: int, lr: float, batch_size: int, seed: int) -> nn.Module:
    """The textbook loop: k PGD steps with loss.backward() on delta, then one training step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            model.eval()
            delta = (torch.rand_like(xb) * 2 - 1) * eps
            delta = ((xb + delta).clamp(0, 1) - xb).requires_grad_(True)
            for _ in range(steps):
                loss = F.cross_entropy(model(xb + delta), yb)
                loss.backward()
                assert delta.grad is not None
                delta.data = (delta + alpha * delta.grad.sign()).clamp(-eps, eps)
                delta.data = (xb + delta.data).clamp(0, 1) - xb
                delta.grad.zero_()
            model.train()
            opt.zero_grad()
            F.cross_entropy(model(xb + delta.detach()), yb).backward()
            opt.step()
    return model.eval()


def art_madry(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
              epochs: int, lr: float, batch_size: int, num_classes: int, device: str) -> nn.Module:
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=num_classes, optimizer=torch.optim.Adam(model.parameters(), lr=lr),
                            clip_values=(0.0, 1.0), device_type="gpu" if device == "cuda" else "cpu")
    trainer = AdversarialTrainerMadryPGD(clf, nb_epochs=epochs, batch_size=batch_size, eps=eps, eps_step=alpha,
                                         max_iter=steps, num_random_init=1)
    trainer.fit(x.cpu().numpy(), y.cpu().numpy())
    return model.eval()


def robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, float]:
    m = bn.wrap(model)
    with torch.no_grad():
        clean = float((m.predict(x) == y).float().mean())
    _, _, success = bn.attacks.PGD(norm="linf", steps=20)(m, x, y, epsilons=eps)
    # The figure that decides: bastion.evaluate's default ensemble (PGD-20 overstates robustness).
    res = bn.evaluate(m, x, y, epsilons=[eps], checks=False, keep_examples=0)
    return {"clean_accuracy": clean, "robust_accuracy_pgd20": 1.0 - float(success.float().mean()),
            "robust_accuracy": res.robust_accuracy[0]}


def timed(fn: Callable[[], nn.Module], device: str) -> tuple[nn.Module, float, float]:
    """Wall seconds and this process's CPU seconds (the fairer figure on a loaded, shared CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    model = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return model, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--width", type=int, default=16, help="SmallCNN width")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per contender (median reported)")
    ap.add_argument("--skip-art", action="store_true")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    d = bn.datasets.digits()
    dev = args.device
    x, y = d.x_train.to(dev), d.y_train.to(dev)
    xt, yt = d.x_test.to(dev), d.y_test.to(dev)
    alpha = 2.5 * args.eps / args.steps
    torch.manual_seed(0)
    init = bn.zoo.SmallCNN(1, d.num_classes, 8, width=args.width).to(dev)
    common: dict[str, Any] = {"eps": args.eps, "alpha": alpha, "steps": args.steps, "epochs": args.epochs,
                              "lr": args.lr, "batch_size": args.batch_size}

    def bastion_fit(precision: str) -> Callable[[], nn.Module]:
        def run() -> nn.Module:
            t = AdversarialTrainer("pgd", eps=args.eps, steps=args.steps, step_size=alpha, epochs=args.epochs,
                                   lr=args.lr, batch_size=args.batch_size, schedule="constant",
                                   precision=precision, val_fraction=0.0, seed=0)
            return t.fit(copy.deepcopy(init), x, y).model_
        return run

    contenders: dict[str, Callable[[], nn.Module]] = {
        "plain_loop_fp32": lambda: plain_pgd_at(copy.deepcopy(init), x, y, seed=0, **common),
        "bastion_fp32": bastion_fit("fp32"),
        "bastion_bf16": bastion_fit("bf16"),
    }
    if not args.skip_art:
        contenders["art_madry_fp32"] = lambda: art_madry(copy.deepcopy(init), x, y, num_classes=d.num_classes,
                                                         device=dev, **common)
    # Warm-up (kernels, allocator, autocast caches): one epoch of the Bastion trainer and of the plain loop.
    AdversarialTrainer("pgd", eps=args.eps, steps=args.steps, epochs=1, val_fraction=0.0).fit(
        copy.deepcopy(init), x[:256], y[:256])
    plain_pgd_at(copy.deepcopy(init), x[:256], y[:256], seed=0, **{**common, "epochs": 1})
    results: dict[str, Any] = {}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    models: dict[str, nn.Module] = {}
    for _ in range(args.repeats):
        # Round-robin, so a burst of load on a shared machine does not land on one contender only.
        for name, fn in contenders.items():
            models[name], seconds, cpu_seconds = timed(fn, dev)
            times[name].append(seconds)
            cpu[name].append(cpu_seconds)
    for name in contenders:
        seconds = float(np.median(times[name]))
        results[name] = {"total_s": seconds, "per_epoch_s": seconds / args.epochs, "runs_s": times[name],
                         "cpu_s": float(np.median(cpu[name])),
                         **robust(models[name], xt, yt, args.eps)}
        print(f"{name}: {seconds:.2f} s, {results[name]}", file=sys.stderr)
    floor = results["plain_loop_fp32"]["total_s"]
    cpu_floor = results["plain_loop_fp32"]["cpu_s"]
    for r in results.values():
        r["vs_plain_loop"] = r["total_s"] / floor
        r["cpu_vs_plain_loop"] = r["cpu_s"] / cpu_floor
    device_name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU ({platform.processor() or 'x86'}, " \
                                                                     f"{args.threads} thread(s))"
    command = "python bench/harden.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"benchmark": "harden", "device": device_name, "command": command, "config": vars(args),
               "train_examples": int(x.shape[0]), "test_examples": int(xt.shape[0]), "results": results,
               "torch": torch.__version__, "numpy": np.__version__}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(payload, fh, indent=2)
    figures = "; ".join(f"{k}: {v['total_s']:.1f} s wall ({v['vs_plain_loop']:.2f}x plain), "
                        f"{v['cpu_s']:.1f} s CPU ({v['cpu_vs_plain_loop']:.2f}x), "
                        f"clean {v['clean_accuracy']:.3f}, evaluate {v['robust_accuracy']:.3f} "
                        f"(PGD-20 {v['robust_accuracy_pgd20']:.3f})"
                        for k, v in results.items())
    print(f"| {dt.date.today()} | harden (PGD-{args.steps} AT, SmallCNN w{args.width}, digits, eps {args.eps}, "
          f"{args.epochs} epochs) | {device_name} | `{command}` | {figures} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

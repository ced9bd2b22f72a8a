"""White-box evasion speed and strength: Bastion's PGD against torchattacks and ART on one model.

    .venv/bin/python bench/evasion.py --device cuda --n 10000 --batch 500 --out /tmp/evasion.json
    .venv/bin/python bench/evasion.py --device cpu --n 200 --batch 100 --no-bf16 --out /tmp/evasion.json

PGD-10, L-inf, eps 8/255 (``--eps``), step eps/4, one random start, on a CIFAR-style ResNet-18
(``bastion.zoo``) at 32x32, or ``--arch smallcnn`` at 8x8 for a cheap CPU run. Data: scikit-learn's real
digits (upsampled to 32x32x3 for ResNet-18), repeated with small pixel noise to reach ``--n``; the model
is trained for ``--train-steps`` Adam steps on another noisy draw. Each tool attacks the model's own
predictions, so robust accuracy starts at 100 % and every example has to be moved.

Rows (time is the median of ``--repeats`` runs over all N images, with ``torch.cuda.synchronize``):
- floor: the model's own 10 forward+backward passes (gradient with respect to the input), fp32 and bf16
  autocast: what any PGD-10 must pay without early exit;
- Bastion ``PGD`` fp32 and bf16 (early exit on: examples already broken stop and leave the batch), and
  fp32 with ``early_exit=False`` (the same work as the floor plus the attack's own bookkeeping);
- torchattacks ``PGD`` if it imports (``pip install --no-deps torchattacks``; it needs no torchvision);
- ART ``ProjectedGradientDescent`` (``num_random_init=1``) unless ``--skip-art``.

Robust accuracy is measured by this script on each tool's output. The comparison with AutoAttack lives in
bench/evaluate.py (``--evaluate`` only points there). Prints one Markdown line for bench/RESULTS.md; all
figures go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import bastion as bn
from bastion.attacks.evasion import PGD

STEPS = 10
EPS = 8 / 255
REL_STEP = 0.25


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Any, float, list[float]]:
    """Run ``fn`` ``repeats`` times; return the last output, the median and all wall times."""
    times: list[float] = []
    out: Any = None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), times


def digits_inputs(arch: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """N real digits (repeated with small pixel noise past the 1,797 that ship with scikit-learn).

    ResNet-18 gets them upsampled to 32x32 with three channels, the input size of the brief's anchor; the
    SmallCNN gets them at their native 8x8.
    """
    d = bn.datasets.digits()
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.shape[0], (n,), generator=gen)
    xs = (x[idx] + 0.02 * torch.randn(n, *x.shape[1:], generator=gen)).clamp(0, 1)
    if arch == "resnet18":
        xs = F.interpolate(xs, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return xs, y[idx]


def build_model(arch: str, seed: int, train_steps: int, device: torch.device) -> nn.Module:
    """Train on the digits (a different noisy draw from the benchmark's) for ``train_steps`` Adam steps."""
    torch.manual_seed(seed)
    model: nn.Module = bn.zoo.ResNet18(10) if arch == "resnet18" else bn.zoo.SmallCNN(1, 10, 8)
    model = model.to(device)
    if train_steps > 0:
        xt, yt = digits_inputs(arch, 128 * train_steps, seed + 100)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for i in range(train_steps):
            xb, yb = xt[128 * i:128 * (i + 1)].to(device), yt[128 * i:128 * (i + 1)].to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def predict(model: nn.Module, x: Tensor, batch: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int) -> float:
    return float((predict(model, x, batch) == y).float().mean())


def floor(model: nn.Module, x: Tensor, y: Tensor, batch: int, precision: str) -> None:
    """The model's own STEPS forward+backward passes over every batch, gradient to the input only."""
    dtype = torch.bfloat16 if precision == "bf16" else None
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch].clone().requires_grad_(True)
        yb = y[i:i + batch]
        for _ in range(STEPS):
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
                out = model(xb)
            (g,) = torch.autograd.grad(F.cross_entropy(out.float(), yb), xb)
            xb = (xb.detach() + 1e-3 * g.sign()).requires_grad_(True)


def run_bastion(model: nn.Module, x: Tensor, y: Tensor, batch: int, precision: str, early_exit: bool) -> float:
    attack = PGD("linf", steps=STEPS, rel_stepsize=REL_STEP, precision=precision, batch_size=batch,
                 early_exit=early_exit)
    return 1 - attack(model, x, y, epsilons=EPS).success_rate[0]


def run_torchattacks(model: nn.Module, x: Tensor, y: Tensor, batch: int) -> Tensor:
    import torchattacks

    atk = torchattacks.PGD(model, eps=EPS, alpha=REL_STEP * EPS, steps=STEPS, random_start=True)
    return torch.cat([atk(x[i:i + batch], y[i:i + batch]) for i in range(0, x.shape[0], batch)])


def make_art(model: nn.Module, batch: int, device: torch.device) -> Callable[[Tensor, Tensor], Tensor]:
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")
    atk = ProjectedGradientDescent(clf, eps=EPS, eps_step=REL_STEP * EPS, max_iter=STEPS, num_random_init=1,
                                   batch_size=batch, verbose=False)

    def run(x: Tensor, y: Tensor) -> Tensor:
        return torch.from_numpy(atk.generate(x.cpu().numpy(), y=y.cpu().numpy())).to(x.device)
    return run


def main(argv: list[str] | None = None) -> int:
    global EPS  # the attack helpers read the budget chosen on the command line
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=60,
                    help="Adam steps (batch 128) on the digits before the benchmark (0: random init)")
    ap.add_argument("--arch", default="resnet18", choices=["resnet18", "smallcnn"],
                    help="resnet18 at 32x32 (the brief's anchor) or smallcnn at 8x8 (cheap on a CPU)")
    ap.add_argument("--eps", type=float, default=EPS, help="L-inf budget (default 8/255)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bf16", action="store_true",
                    help="leave out the bf16 rows (bf16 autocast on a CPU is far slower than fp32)")
    ap.add_argument("--skip-art", action="store_true", help="leave ART out (slow on a CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="write all figures here as JSON")
    ap.add_argument("--evaluate", action="store_true",
                    help="the evaluate-vs-AutoAttack comparison is bench/evaluate.py; this flag only says so")
    args = ap.parse_args(argv)
    if args.evaluate:
        print("robustness evaluation vs AutoAttack: run bench/evaluate.py (this script times PGD only)")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    EPS = args.eps
    model = build_model(args.arch, args.seed, args.train_steps, device)
    x, y_true = digits_inputs(args.arch, args.n, args.seed + 1)
    x = x.to(device)
    clean_acc = accuracy(model, x, y_true.to(device), args.batch)
    # Attack the model's own decisions, so every example has to be moved (robust accuracy starts at 100 %).
    y = predict(model, x, args.batch)
    r, b = args.repeats, args.batch
    rows: dict[str, dict[str, Any]] = {}

    def record(name: str, fn: Callable[[], Any], robust: Callable[[Any], float | None]) -> None:
        out, med, times = timed(fn, device, r)
        rows[name] = {"median_s": med, "times_s": times, "robust_accuracy": robust(out)}
        acc = rows[name]["robust_accuracy"]
        print(f"{name:32s} {med:8.3f} s   robust acc {'-' if acc is None else f'{acc:.4f}'}", file=sys.stderr)

    record("floor fp32 (10 fwd+bwd)", lambda: floor(model, x, y, b, "fp32"), lambda _: None)
    if not args.no_bf16:
        record("floor bf16 (10 fwd+bwd)", lambda: floor(model, x, y, b, "bf16"), lambda _: None)
    record("bastion PGD fp32", lambda: run_bastion(model, x, y, b, "fp32", True), lambda a: a)
    if not args.no_bf16:
        record("bastion PGD bf16", lambda: run_bastion(model, x, y, b, "bf16", True), lambda a: a)
    record("bastion PGD fp32 no early exit", lambda: run_bastion(model, x, y, b, "fp32", False), lambda a: a)
    notes: list[str] = []
    try:
        import torchattacks  # noqa: F401
    except Exception as exc:  # torchattacks missing or broken: say so and go on
        notes.append(f"torchattacks skipped: {type(exc).__name__}: {exc}")
    else:
        record("torchattacks PGD", lambda: run_torchattacks(model, x, y, b), lambda xa: accuracy(model, xa, y, b))
    if args.skip_art:
        notes.append("ART skipped (--skip-art)")
    else:
        try:
            art_run = make_art(model, b, device)
        except Exception as exc:
            notes.append(f"ART skipped: {type(exc).__name__}: {exc}")
        else:
            record("ART PGD", lambda: art_run(x, y), lambda xa: accuracy(model, xa, y, b))
    for note in notes:
        print(note, file=sys.stderr)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    command = "python bench/evasion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "benchmark": f"evasion PGD-10 L-inf eps {EPS:.4g}, {args.arch}", "clean_accuracy_on_true_labels": clean_acc,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": dev_name, "torch": torch.__version__, "command": command,
        "n": args.n, "batch": b, "repeats": r, "train_steps": args.train_steps, "seed": args.seed,
        "model": f"bastion.zoo {args.arch}, {args.train_steps} Adam steps on noisy digits",
        "rows": rows, "notes": notes,
    }
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)

    def cell(name: str) -> str:
        if name not in rows:
            return "n/a"
        row = rows[name]
        acc = row["robust_accuracy"]
        return f"{row['median_s']:.2f} s" + ("" if acc is None else f" ({100 * acc:.1f} %)")

    print(f"| evasion: PGD-10 L-inf {EPS:.4g}, {args.arch} on digits (clean {100 * clean_acc:.1f} %), N={args.n}, "
          f"batch {b} | {dev_name} | "
          f"floor fp32 {cell('floor fp32 (10 fwd+bwd)')}, bf16 {cell('floor bf16 (10 fwd+bwd)')} | "
          f"Bastion fp32 {cell('bastion PGD fp32')}, bf16 {cell('bastion PGD bf16')}, "
          f"no early exit {cell('bastion PGD fp32 no early exit')} | torchattacks {cell('torchattacks PGD')} | "
          f"ART {cell('ART PGD')} | `{command}` |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

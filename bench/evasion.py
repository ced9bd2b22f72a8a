"""White-box evasion speed and strength: Bastion's PGD against torchattacks and ART on one model.

    .venv/bin/python bench/evasion.py --device cuda --n 10000 --batch 500 --out /tmp/evasion.json
    .venv/bin/python bench/evasion.py --device cpu --n 200 --batch 100 --no-bf16 --out /tmp/evasion.json

PGD-10, L-inf, eps 8/255, step eps/4, one random start, on a CIFAR-style ResNet-18 (``bastion.zoo``) at
32x32. The model is randomly initialised with ``--seed`` and then trained for ``--train-steps`` SGD steps
on random images with random labels (0 keeps the random initialisation), so no data set is needed; the
inputs are uniform random images labelled with the model's own clean predictions, so clean accuracy is
100 % and every example has to be moved.

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


def build_model(seed: int, train_steps: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    model = bn.zoo.ResNet18(10).to(device)
    if train_steps > 0:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        model.train()
        for _ in range(train_steps):
            xb = torch.rand(128, 3, 32, 32, generator=gen).to(device)
            yb = torch.randint(0, 10, (128,), generator=gen).to(device)
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=20,
                    help="SGD steps on random images and labels before the benchmark (0: random init)")
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
    model = build_model(args.seed, args.train_steps, device)
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    x = torch.rand(args.n, 3, 32, 32, generator=gen).to(device)
    y = predict(model, x, args.batch)  # the model's own decisions: clean accuracy is 100 % by construction
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
        "benchmark": "evasion PGD-10 L-inf eps 8/255, ResNet-18 32x32",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": dev_name, "torch": torch.__version__, "command": command,
        "n": args.n, "batch": b, "repeats": r, "train_steps": args.train_steps, "seed": args.seed,
        "model": "bastion.zoo.ResNet18, random init" + (f" + {args.train_steps} SGD steps on random data"
                                                       if args.train_steps else ""),
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

    print(f"| evasion: PGD-10 L-inf 8/255, ResNet-18 32x32, N={args.n}, batch {b} | {dev_name} | "
          f"floor fp32 {cell('floor fp32 (10 fwd+bwd)')}, bf16 {cell('floor bf16 (10 fwd+bwd)')} | "
          f"Bastion fp32 {cell('bastion PGD fp32')}, bf16 {cell('bastion PGD bf16')}, "
          f"no early exit {cell('bastion PGD fp32 no early exit')} | torchattacks {cell('torchattacks PGD')} | "
          f"ART {cell('ART PGD')} | `{command}` |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

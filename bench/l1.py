"""L1 attacks on images, where the box binds: Bastion's PGD-L1 and APGD-L1 against ART's, same model and budget.

    .venv/bin/python bench/l1.py --n 300 --eps 1,2,4 --steps 50 --out /tmp/l1.json

A SmallCNN trained on the 8x8 digits; most pixels sit at 0 (the background), so an L1 step that ignores the
[0, 1] box spends its budget on coordinates that clipping then undoes. Robust accuracy (lower is a stronger
attack) and wall time per attack and epsilon; every adversarial is checked against the budget and the box.
Prints one Markdown row for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn

import bastion as bn


def _check(x: torch.Tensor, adv: torch.Tensor, eps: float) -> None:
    assert float((adv - x).flatten(1).abs().sum(1).max()) <= eps * (1 + 1e-4) + 1e-5, "L1 budget exceeded"
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0, "outside the box"


def _robust(model: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def run_bastion(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, kind: str) -> dict[str, Any]:
    atk = bn.attacks.PGD(norm="l1", steps=steps) if kind == "pgd" else bn.attacks.APGD(norm="l1", steps=steps)
    t = time.perf_counter()
    res = atk(model, x, y, epsilons=[eps])
    wall = time.perf_counter() - t
    _check(x, res.clipped[0], eps)
    return {"robust_accuracy": _robust(model, res.clipped[0], y), "wall_s": wall}


def run_art(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, kind: str) -> dict[str, Any]:
    from art.attacks.evasion import AutoProjectedGradientDescent, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    if kind == "pgd":
        atk: Any = ProjectedGradientDescent(clf, norm=1, eps=eps, eps_step=eps / 4, max_iter=steps,
                                            batch_size=x.shape[0], verbose=False)
    else:
        atk = AutoProjectedGradientDescent(clf, norm=1, eps=eps, eps_step=eps / 4, max_iter=steps,
                                           batch_size=x.shape[0], verbose=False)
    t = time.perf_counter()
    adv = torch.from_numpy(atk.generate(x.numpy(), y=y.numpy()))
    wall = time.perf_counter() - t
    _check(x, adv, eps)
    return {"robust_accuracy": _robust(model, adv, y), "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--eps", default="1,2,4")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-art", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    d = bn.datasets.digits()
    torch.manual_seed(0)
    model = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=16), d.x_train, d.y_train, epochs=15, lr=2e-3, seed=0)
    x, y = d.x_test[:args.n], d.y_test[:args.n]
    out: dict[str, Any] = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                           "machine": platform.machine(), "threads": args.threads, "n": args.n, "steps": args.steps,
                           "clean_accuracy": _robust(model, x, y), "runs": []}
    for eps in (float(e) for e in args.eps.split(",")):
        run: dict[str, Any] = {"eps": eps}
        for kind in ("pgd", "apgd"):
            run[f"bastion_{kind}"] = run_bastion(model, x, y, eps, args.steps, kind)
            if not args.no_art:
                run[f"art_{kind}"] = run_art(model, x, y, eps, args.steps, kind)
        out["runs"].append(run)
    text = json.dumps(out, indent=2)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)

    def cell(r: dict[str, Any] | None) -> str:
        return "not run" if r is None else f"{100 * r['robust_accuracy']:.1f} % ({r['wall_s']:.2f} s)"

    parts = [f"ε={r['eps']:g}: Bastion PGD {cell(r['bastion_pgd'])}, APGD {cell(r['bastion_apgd'])} · ART PGD "
             f"{cell(r.get('art_pgd'))}, APGD {cell(r.get('art_apgd'))}" for r in out["runs"]]
    print(f"| L1 attacks, digits SmallCNN (clean {100 * out['clean_accuracy']:.1f} %), n={args.n}, {args.steps} steps, "
          f"robust accuracy (time) | " + " ; ".join(parts) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

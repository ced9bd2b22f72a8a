"""``bastion evaluate --suite autoattack`` against AutoAttack itself: the authors' code and torchattacks' port.

    PYTHONPATH=/tmp/peer-site .venv/bin/python bench/autoattack.py --n 200 --eps 0.1,0.2 --rounds 3 \\
        --out bench/out/autoattack.json

Same model, data, epsilons and process for every contestant: an adversarially trained (PGD-AT, ε=0.1)
SmallCNN on the 8x8 digits (``bench/evaluate.py``'s model), the first ``--n`` test digits, L-inf ε from
``--eps``, one thread each. Each round runs every (ε, contestant) pair once, in an order rotated between
rounds so that a burst of load on the shared machine does not always land on the same one; figures are
medians over rounds, ratios are of medians. Wall and process CPU time are both recorded, with the load
average (``os.getloadavg``) before and after each run: CPU time is what the neighbours' load inflates least.

- ``bastion``: ``bn.evaluate(model, x, y, epsilons=[ε], suite="autoattack", checks=False)``: APGD-CE
  (100 steps), APGD-T (100 steps, 9 target classes), FAB-T (100 steps, 9 target classes), Square (5000
  queries), each on the examples still standing;
- ``original``: the authors' ``autoattack.AutoAttack(version="standard")`` (github.com/fra31/auto-attack,
  commit a392200), same composition and budgets; import path from ``--original-path`` (a checkout of
  that repository) or the environment;
- ``torchattacks``: ``torchattacks.AutoAttack(version="standard")`` (3.5.1), the issue's peer. Its members
  run their class defaults: **10** iterations for APGD-CE, APGD-T and FAB-T, where the paper and the
  authors' code run 100 (the budgets are read off the attack objects and stored in the JSON). It is a
  tenth of the gradient work, so it is compared for robust accuracy and time but is not the same budget.

Peer setup (nothing here becomes a project dependency; torchattacks declares torchvision as a dependency,
which is not installed here and which its AutoAttack does not import, so no stub is needed)::

    .venv/bin/pip download torchattacks==3.5.1 --no-deps -d /tmp/peerdl
    .venv/bin/pip install --no-deps --target /tmp/peer-site /tmp/peerdl/torchattacks-3.5.1-py3-none-any.whl
    # the authors' AutoAttack: a checkout of github.com/fra31/auto-attack (a392200), passed as --original-path

Robust accuracy is always measured here on the contestant's adversarial inputs by the model itself
(Bastion's figure is its report, which counts only adversarials checked on the model inside the ball).
Prints one Markdown row for bench/RESULTS.md; all figures go to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import bastion as bn

# bench/evaluate.py's PGD-AT digits CNN; imported here, before main() takes bench/ off sys.path
from evaluate import train_robust

CONTESTANTS = ("bastion", "bastion-ta", "original", "torchattacks")


def _robust(model: nn.Module, x_adv: Tensor, x: Tensor, y: Tensor, eps: float) -> float:
    # An adversarial outside the ball would not count: check the budget as well as the decision.
    inside = (x_adv - x).abs().flatten(1).amax(dim=1) <= eps + 1e-6
    with torch.no_grad():
        wrong = model(x_adv).argmax(dim=1) != y
    return 1.0 - int((wrong & inside).sum()) / int(y.shape[0])


def _timed(fn: Callable[[], Any]) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    return {"robust_accuracy": out, "wall_s": wall, "cpu_s": cpu, "load_before": load0,
            "load_after": os.getloadavg()[0]}


def run_bastion(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int) -> dict[str, Any]:
    per_attack: list[dict[str, Any]] = []

    def go() -> float:
        res = bn.evaluate(model, x, y, epsilons=[eps], suite="autoattack", checks=False, keep_examples=0, seed=seed)
        per_attack.extend({"name": a.name, "broken": a.broken[0], "attempted": a.attempted[0],
                           "seconds": round(a.seconds, 2)} for a in res.attacks)
        measured = _robust(model, res.x_adv, x, y, eps)
        if abs(measured - float(res.robust_accuracy[0])) > 1e-9:
            raise AssertionError(f"report says {res.robust_accuracy[0]}, its adversarials give {measured}")
        return measured

    out = _timed(go)
    out["per_attack"] = per_attack
    return out


def run_bastion_ta(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int) -> dict[str, Any]:
    """Bastion's autoattack composition at torchattacks' budgets (its members' class defaults: 10 steps for
    APGD-CE, APGD-T and FAB-T, 5000 Square queries), so the port is also compared like for like."""
    from bastion.attacks import evasion as ev

    suite = [ev.APGD(norm="linf", loss="ce", steps=10, seed=seed),
             ev.APGD(norm="linf", loss="dlr", steps=10, n_target_classes=9, seed=seed),
             ev.FAB(norm="linf", steps=10, n_target_classes=9, seed=seed),
             ev.Square(norm="linf", queries=5000, seed=seed)]

    def go() -> float:
        res = bn.evaluate(model, x, y, epsilons=[eps], suite=suite, checks=False, keep_examples=0, seed=seed)
        return _robust(model, res.x_adv, x, y, eps)

    out = _timed(go)
    out["budgets"] = {"apgd_ce_steps": 10, "apgd_t_steps": 10, "fab_t_steps": 10, "square_queries": 5000}
    return out


def run_original(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int) -> dict[str, Any]:
    # By module name: this script is itself called autoattack.py (see main() for the import path).
    aa = importlib.import_module("autoattack").AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", verbose=False, seed=seed)
    out = _timed(lambda: _robust(model, aa.run_standard_evaluation(x, y, bs=x.shape[0]), x, y, eps))
    out["budgets"] = {"apgd_ce_steps": aa.apgd.n_iter, "apgd_t_steps": aa.apgd_targeted.n_iter,
                      "apgd_t_targets": aa.apgd_targeted.n_target_classes, "fab_t_steps": aa.fab.n_iter,
                      "fab_t_targets": aa.fab.n_target_classes, "square_queries": aa.square.n_queries}
    return out


def run_torchattacks(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int) -> dict[str, Any]:
    import torchattacks

    atk = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
    out = _timed(lambda: _robust(model, atk(x, y), x, y, eps))
    members = atk._autoattack.attacks
    out["budgets"] = {type(a).__name__: {k: getattr(a, k) for k in ("steps", "n_queries", "n_target_classes")
                                         if hasattr(a, k)} for a in members}
    out["version"] = torchattacks.__version__
    return out


RUNNERS: dict[str, Callable[[nn.Module, Tensor, Tensor, float, int], dict[str, Any]]] = {
    "bastion": run_bastion, "bastion-ta": run_bastion_ta, "original": run_original, "torchattacks": run_torchattacks}


def available(name: str) -> str | None:
    """None when the contestant can run here, else why not."""
    module = {"original": "autoattack", "torchattacks": "torchattacks"}.get(name)
    if module is None:
        return None
    try:
        __import__(module)
    except Exception as exc:  # report any import failure instead of crashing the whole comparison
        return f"cannot import {module}: {exc}"
    return None


def summarise(runs: list[dict[str, Any]], eps_list: list[float], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for eps in eps_list:
        per: dict[str, Any] = {}
        for name in names:
            rs = [r[name] for r in runs if r["eps"] == eps and name in r]
            if not rs:
                continue
            per[name] = {k: statistics.median(r[k] for r in rs) for k in ("robust_accuracy", "wall_s", "cpu_s")}
            per[name]["robust_accuracy_all"] = sorted({r["robust_accuracy"] for r in rs})
            per[name]["load_median"] = statistics.median(r["load_before"] for r in rs)
            per[name]["runs"] = len(rs)
        out[str(eps)] = per
    return out


def _row(summary: dict[str, Any], args: argparse.Namespace, load: tuple[float, float]) -> str:
    cells = []
    for eps, per in summary.items():
        b = per.get("bastion")
        if b is None:
            continue
        parts = [f"ε={eps}: Bastion **{100 * b['robust_accuracy']:.1f} % in {b['cpu_s']:.0f} s CPU** "
                 f"({b['wall_s']:.0f} s wall)"]
        for name, label in (("original", "AutoAttack (authors)"), ("torchattacks", "torchattacks AA (10-step members)")):
            p = per.get(name)
            if p is None:
                continue
            parts.append(f"{label} {100 * p['robust_accuracy']:.1f} % in {p['cpu_s']:.0f} s CPU "
                         f"({p['wall_s']:.0f} s wall; Bastion/{name} CPU {b['cpu_s'] / p['cpu_s']:.2f}×)")
        ta, tp = per.get("bastion-ta"), per.get("torchattacks")
        if ta is not None:
            same = f"Bastion at torchattacks' budgets {100 * ta['robust_accuracy']:.1f} % in {ta['cpu_s']:.0f} s CPU"
            if tp is not None:
                same += f" (vs torchattacks CPU {ta['cpu_s'] / tp['cpu_s']:.2f}×)"
            parts.append(same)
        cells.append(" vs ".join(parts))
    return (f"| {dt.date.today().isoformat()} | `evaluate --suite autoattack` vs AutoAttack: PGD-AT (ε=0.1) SmallCNN on "
            f"digits, L-inf, n={args.n}, medians of {args.rounds} interleaved rounds | CPU, 1 thread, shared 2-core "
            f"machine (load {load[0]:.1f}–{load[1]:.1f}) | `PYTHONPATH=/tmp/peer-site python bench/autoattack.py --original-path auto-attack "
            f"--n {args.n} --eps {args.eps} --rounds {args.rounds}` | " + " · ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="test digits (450 is the whole test split)")
    ap.add_argument("--eps", default="0.1,0.2", help="L-inf budgets, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-eps", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=",".join(CONTESTANTS), help="contestants, comma-separated")
    ap.add_argument("--original-path", default=None, help="a checkout of github.com/fra31/auto-attack")
    ap.add_argument("--out", default="bench/out/autoattack.json")
    args = ap.parse_args(argv)
    # Python puts this script's folder first on the path, where "autoattack" would be this very file.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    if args.original_path:
        sys.path.insert(0, args.original_path)
    torch.set_num_threads(args.threads)
    eps_list = [float(e) for e in args.eps.split(",")]
    names, skipped = [], {}
    for name in (s.strip() for s in args.only.split(",") if s.strip()):
        if name not in RUNNERS:
            ap.error(f"--only: {name!r} is not one of {', '.join(CONTESTANTS)}")
        why = available(name)
        if why is None:
            names.append(name)
        else:
            skipped[name] = why
    model = train_robust(args.train_eps, args.epochs, args.width, args.seed)
    data = bn.datasets.digits()
    x, y = data.x_test[:args.n], data.y_test[:args.n]
    runs: list[dict[str, Any]] = []
    pairs = [(eps, name) for eps in eps_list for name in names]
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        k = r % len(pairs)
        for eps, name in pairs[k:] + pairs[:k]:
            res = RUNNERS[name](model, x, y, eps, args.seed)
            loads.append(res["load_after"])
            runs.append({"round": r, "eps": eps, name: res})
            print(f"round {r} ε={eps} {name}: robust {100 * res['robust_accuracy']:.1f} %, "
                  f"{res['cpu_s']:.1f} s CPU, {res['wall_s']:.1f} s wall, load {res['load_before']:.1f}", flush=True)
            # Written after every run: on a loaded machine a long comparison may have to be cut short.
            summary = _write(args, eps_list, names, skipped, loads, runs, complete=False)
    summary = _write(args, eps_list, names, skipped, loads, runs, complete=True)
    print(json.dumps(summary, indent=2))
    print(_row(summary, args, (min(loads), max(loads))))
    return 0


def _write(args: argparse.Namespace, eps_list: list[float], names: list[str], skipped: dict[str, str],
           loads: list[float], runs: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    summary = summarise(runs, eps_list, names)
    out = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "python": sys.version.split()[0],
           "torch": torch.__version__, "machine": platform.machine(), "threads": args.threads, "n": args.n,
           "train_eps": args.train_eps, "epsilons": eps_list, "rounds": args.rounds, "complete": complete,
           "skipped": skipped, "load_min_max": [min(loads), max(loads)], "summary": summary,
           "row": _row(summary, args, (min(loads), max(loads))), "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    raise SystemExit(main())

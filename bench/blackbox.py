"""Black-box evasion: Bastion's Square and HopSkipJump against ART's, same model, data and budget.

    .venv/bin/python bench/blackbox.py --n 100 --queries 1000 --out /tmp/blackbox.json

The model is a scikit-learn LogisticRegression on the 8x8 digits, attacked as images (ART's Square
accepts nothing else). Both libraries see the same
``predict_proba`` (Square) or ``predict`` (HopSkipJump) through a function that counts every row it is
sent, so queries are counted the same way for both:

- Square, L-inf and L2: Bastion ``Square(queries=Q)`` against ART ``SquareAttack(max_iter=Q)``. ART does
  not say which example a queried row belongs to; each row is attributed to the nearest clean input
  (every candidate lies within epsilon of its own input, far closer than to any other digit).
- HopSkipJump, L2: same steps, initial and maximum gradient samples; ART attacks one example at a time,
  so its per-example counts are read off the counter between calls. Success is "adversarial within
  ``--hsj-eps``"; the median L2 distance is reported too.

ART's L2 Square update divides where it should multiply (``delta /= norm * budget``) and produces NaN
on these inputs; the error is recorded instead of figures. Success is measured on the attack's output by the model itself (not counted as queries). Wall and
process CPU time are both reported: the development machine is shared, and CPU time is what the
neighbours' load does not inflate. Prints one Markdown row for bench/RESULTS.md; all figures go to --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

import bastion as bn
from bastion.attacks.evasion import HopSkipJump, Square


class Counter:
    """Counts rows sent to the model; optionally attributes each row to the nearest clean input."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], clean: np.ndarray | None = None) -> None:
        self.fn, self.total = fn, 0
        self.clean = None if clean is None else torch.from_numpy(clean.reshape(len(clean), -1)).double()
        self.per_example = None if clean is None else np.zeros(len(clean), dtype=np.int64)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        flat = a.reshape(a.shape[0], -1)
        self.total += a.shape[0]
        if self.clean is not None and self.per_example is not None:
            owner = torch.cdist(torch.from_numpy(flat).double(), self.clean).argmin(dim=1).numpy()
            np.add.at(self.per_example, owner, 1)
        return self.fn(flat)


def data(n: int) -> tuple[LogisticRegression, np.ndarray, np.ndarray, float]:
    d = bn.datasets.digits()
    x_tr, x_te = d.x_train.numpy(), d.x_test.numpy()
    clf = LogisticRegression(max_iter=1000).fit(x_tr.reshape(len(x_tr), -1), d.y_train.numpy())
    acc = float((clf.predict(x_te.reshape(len(x_te), -1)) == d.y_test.numpy()).mean())
    return clf, x_te[:n], d.y_test.numpy()[:n], acc


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def summary(success: np.ndarray, per_example: np.ndarray, wall: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {"success_rate": round(float(success.mean()), 4), "queries_mean": round(float(per_example.mean()), 1),
            "queries_median": float(np.median(per_example)), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), **extra}


def square_pair(clf: LogisticRegression, x: np.ndarray, y: np.ndarray, norm: str, eps: float,
                queries: int) -> dict[str, Any]:
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    out: dict[str, Any] = {"norm": norm, "eps": eps}
    ours = Counter(clf.predict_proba)
    bastion_model = bn.wrap(_Proba(ours), num_classes=10)
    res, wall, cpu = timed(lambda: Square(norm, queries=queries)(bastion_model, torch.from_numpy(x),
                                                                torch.from_numpy(y), epsilons=eps))
    adv = res.clipped[0].numpy()
    succ = clf.predict(adv.reshape(len(adv), -1)) != y
    out["bastion"] = summary(succ, res.extras["queries_per_example"].numpy(), wall, cpu)

    theirs = Counter(clf.predict_proba, clean=x)
    model = BlackBoxClassifierNeuralNetwork(theirs, x.shape[1:], 10, clip_values=(0.0, 1.0))
    # ART's max_iter is its query budget per example (one query per iteration per unbroken example).
    attack = SquareAttack(model, norm=np.inf if norm == "linf" else 2, eps=eps, max_iter=queries, verbose=False)
    try:
        adv, wall, cpu = timed(lambda: attack.generate(x, y=np.eye(10)[y]))
    except ValueError as exc:  # NaN candidates rejected by scikit-learn (see the module docstring)
        out["art"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
        return out
    succ = clf.predict(adv.reshape(len(adv), -1)) != y
    assert theirs.per_example is not None
    out["art"] = summary(succ, theirs.per_example, wall, cpu)
    return out


class _Proba:
    """A scikit-learn-like wrapper so Bastion's counted calls go through the same Counter as ART's."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def predict_proba(self, a: np.ndarray) -> np.ndarray:
        return self.counter(a)

    def predict(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(self.counter(a)).argmax(axis=1)


def hsj_pair(clf: LogisticRegression, x: np.ndarray, y: np.ndarray, eps: float, steps: int) -> dict[str, Any]:
    from art.attacks.evasion import HopSkipJump as ArtHSJ
    from art.estimators.classification import BlackBoxClassifier

    out: dict[str, Any] = {"norm": "l2", "eps": eps, "steps": steps}
    init_evals, max_evals = 100, 1000
    budget = 10**6  # steps bound both; the query cap must not
    labels = Counter(lambda a: np.eye(10)[clf.predict(a)])
    model = bn.wrap(_Labels(labels), num_classes=10)
    attack = HopSkipJump("l2", queries=budget, init_evals=init_evals, max_evals=max_evals, steps=steps)
    res, wall, cpu = timed(lambda: attack(model, torch.from_numpy(x), torch.from_numpy(y)))
    adv = res.clipped[0].numpy()
    dist = np.linalg.norm((adv - x).reshape(len(x), -1), axis=1)
    fooled = clf.predict(adv.reshape(len(adv), -1)) != y
    out["bastion"] = summary(fooled & (dist <= eps), res.extras["queries_per_example"].numpy(), wall, cpu,
                             median_l2=round(float(np.median(dist[fooled])), 4))

    theirs = Counter(lambda a: np.eye(10)[clf.predict(a)])
    art_model = BlackBoxClassifier(theirs, x.shape[1:], 10, clip_values=(0.0, 1.0))
    art = ArtHSJ(art_model, norm=2, max_iter=steps, max_eval=max_evals, init_eval=init_evals, init_size=100,
                 verbose=False)
    per, advs = [], []

    def run_art() -> None:
        for i in range(len(x)):
            before = theirs.total
            advs.append(art.generate(x[i:i + 1], y=np.eye(10)[y[i:i + 1]]))
            per.append(theirs.total - before)

    _, wall, cpu = timed(run_art)
    adv = np.concatenate(advs)
    dist = np.linalg.norm((adv - x).reshape(len(x), -1), axis=1)
    fooled = clf.predict(adv.reshape(len(adv), -1)) != y
    out["art"] = summary(fooled & (dist <= eps), np.asarray(per), wall, cpu,
                         median_l2=round(float(np.median(dist[fooled])), 4) if fooled.any() else None)
    return out


class _Labels:
    """Labels only: no predict_proba, so Bastion treats it exactly like ART's label-only black box."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def predict(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(self.counter(a)).argmax(axis=1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="test digits attacked by Square")
    p.add_argument("--hsj-n", type=int, default=30, help="test digits attacked by HopSkipJump")
    p.add_argument("--queries", type=int, default=1000, help="Square's per-example budget")
    p.add_argument("--linf-eps", type=float, default=0.1)
    p.add_argument("--l2-eps", type=float, default=1.0)
    p.add_argument("--hsj-eps", type=float, default=1.0)
    p.add_argument("--hsj-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clf, x, y, acc = data(max(args.n, args.hsj_n))
    results: dict[str, Any] = {
        "benchmark": "blackbox", "date": dt.date.today().isoformat(),
        "device": f"CPU ({platform.processor() or platform.machine()}, {args.threads} thread(s))",
        "command": "python bench/blackbox.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": f"LogisticRegression, digits 8x8, clean test accuracy {acc:.3f}",
        "square_linf": square_pair(clf, x[:args.n], y[:args.n], "linf", args.linf_eps, args.queries),
        "square_l2": square_pair(clf, x[:args.n], y[:args.n], "l2", args.l2_eps, args.queries),
        "hopskipjump_l2": hsj_pair(clf, x[:args.hsj_n], y[:args.hsj_n], args.hsj_eps, args.hsj_steps),
    }
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))

    def cell(key: str) -> str:
        r = results[key]
        b, a = r["bastion"], r["art"]
        if "error" in a:
            return (f"{key} eps={r['eps']}: success {b['success_rate']:.2f}, queries median "
                    f"{b['queries_median']:.0f}/mean {b['queries_mean']:.0f}, CPU {b['cpu_s']} s; ART failed ({a['error']})")
        extra = f", median L2 {b['median_l2']} vs {a['median_l2']}" if "median_l2" in b else ""
        return (f"{key} eps={r['eps']}: success {b['success_rate']:.2f} vs ART {a['success_rate']:.2f}, "
                f"queries median {b['queries_median']:.0f}/mean {b['queries_mean']:.0f} vs ART "
                f"{a['queries_median']:.0f}/{a['queries_mean']:.0f}, CPU {b['cpu_s']} s vs {a['cpu_s']} s{extra}")

    figures = "; ".join(cell(k) for k in ("square_linf", "square_l2", "hopskipjump_l2"))
    print(f"| {results['date']} | blackbox | {results['device']} | `{results['command']}` | {figures} |")
    return results


if __name__ == "__main__":
    main()

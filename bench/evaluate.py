"""Robustness evaluation: Bastion's ``evaluate`` against torchattacks' and ART's AutoAttack.

    .venv/bin/python bench/evaluate.py --n 450 --eps 0.2,0.25 --suite standard,autoattack --out /tmp/evaluate.json

One adversarially trained (PGD-AT) SmallCNN on the 8x8 digits, the first ``--n`` test digits, one L-inf
epsilon at which the model is partly broken. Each evaluator reports robust accuracy (lower is a stronger
evaluation) and its time; PGD-20 is the baseline every evaluator must beat. Our bar: robust accuracy no
higher than standard AutoAttack's, in a quarter of its time.

- Bastion: ``bn.evaluate(..., suite=S, checks=False)`` for each ``--suite`` S (``standard`` by default, the
  evaluator's default; ``autoattack`` replays AutoAttack's own budgets), and once more with the masking
  checks on, to show what they cost;
- torchattacks: ``AutoAttack(version="standard")`` (APGD-CE, APGD-T, FAB-T, Square 5000), if importable;
- ART: ``AutoAttack`` with its default members (APGD-CE and APGD-DLR with 5 restarts, DeepFool, Square
  5000), if ``--art`` is given (slow on a CPU).

Wall and process CPU time are both reported (the development machine is shared; CPU time is what the
neighbours' load does not inflate). Prints one Markdown row; all figures go to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import bastion as bn


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _robust(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def train_robust(eps: float, epochs: int, width: int, seed: int) -> nn.Module:
    data = bn.datasets.digits()
    torch.manual_seed(seed)
    trainer = bn.defenses.AdversarialTrainer("pgd", eps=eps, steps=7, epochs=epochs, seed=seed, val_fraction=0.0)
    trainer.fit(bn.zoo.SmallCNN(1, 10, 8, width=width), data.x_train, data.y_train)
    model: nn.Module = trainer.model_
    return model.eval()


def run_bastion(model: nn.Module, x: Tensor, y: Tensor, eps: float, suite: str, checks: bool) -> dict[str, Any]:
    res, wall, cpu = _timed(lambda: bn.evaluate(model, x, y, epsilons=[eps], suite=suite, checks=checks,
                                                keep_examples=0))
    return {"robust_accuracy": res.robust_accuracy[0], "clean_accuracy": res.clean_accuracy, "wall_s": wall,
            "cpu_s": cpu, "per_attack": [a.to_dict() for a in res.attacks],
            "findings": [f.check for f in res.findings]}


def run_pgd20(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> dict[str, Any]:
    res, wall, cpu = _timed(lambda: bn.attacks.PGD(norm="linf", steps=20)(model, x, y, epsilons=[eps]))
    return {"robust_accuracy": 1.0 - res.success_rate[0], "wall_s": wall, "cpu_s": cpu}


def run_torchattacks(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int) -> dict[str, Any]:
    try:
        import torchattacks
    except Exception as exc:  # torchattacks imports torchvision-free here, but report any failure
        return {"error": f"cannot import torchattacks: {exc}"}
    atk = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
    adv, wall, cpu = _timed(lambda: atk(x, y))
    return {"robust_accuracy": _robust(model, adv, y), "wall_s": wall, "cpu_s": cpu,
            "version": getattr(torchattacks, "__version__", "?")}


def run_art(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> dict[str, Any]:
    import numpy as np
    from art.attacks.evasion import AutoAttack
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    atk = AutoAttack(clf, norm=np.inf, eps=eps, eps_step=eps / 4, batch_size=x.shape[0])
    adv, wall, cpu = _timed(lambda: atk.generate(x.numpy(), y=y.numpy()))
    return {"robust_accuracy": _robust(model, torch.from_numpy(adv), y), "wall_s": wall, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="test digits evaluated (450 is the whole test split)")
    ap.add_argument("--eps", default="0.2", help="L-inf budget(s) for evaluation, comma-separated")
    ap.add_argument("--train-eps", type=float, default=None, help="PGD-AT budget (default: the first --eps)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--suite", default="standard", help="Bastion suite(s), comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-checks-run", action="store_true", help="skip the extra run with masking checks on")
    ap.add_argument("--art", action="store_true", help="also run ART's default AutoAttack (slow)")
    ap.add_argument("--no-torchattacks", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--sklearn", action="store_true", help="instead: scikit-learn models, black-box only vs "
                    "exact replica (linear, MLP) and vs the tree split search (random forest)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.sklearn:
        return sklearn_bench(args)
    eps_list = [float(e) for e in args.eps.split(",")]
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    train_eps = args.train_eps or eps_list[0]
    model, train_wall, _ = _timed(lambda: train_robust(train_eps, args.epochs, args.width, args.seed))
    data = bn.datasets.digits()
    x, y = data.x_test[:args.n], data.y_test[:args.n]
    out: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "python": sys.version.split()[0],
        "torch": torch.__version__, "machine": platform.machine(), "threads": args.threads, "n": args.n,
        "train_eps": train_eps, "epochs": args.epochs, "train_wall_s": train_wall, "runs": [],
    }
    rows = []
    for eps in eps_list:
        run: dict[str, Any] = {"eps": eps, "pgd20": run_pgd20(model, x, y, eps)}
        for suite in suites:
            run[f"bastion:{suite}"] = run_bastion(model, x, y, eps, suite, checks=False)
            if not args.no_checks_run:
                run[f"bastion:{suite}+checks"] = run_bastion(model, x, y, eps, suite, checks=True)
        if not args.no_torchattacks:
            run["torchattacks"] = run_torchattacks(model, x, y, eps, args.seed)
        if args.art:
            run["art"] = run_art(model, x, y, eps)
        out["runs"].append(run)
        rows.append(_row(run, args.n, train_eps, suites))
    text = json.dumps(out, indent=2)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    print("\n".join(rows))
    return 0


def sklearn_bench(args: argparse.Namespace) -> int:
    """Black-box-only figures (upper bounds) against the opened evaluation on the same models and data."""
    import warnings

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.simplefilter("ignore", ConvergenceWarning)
    flat = bn.datasets.digits(flatten=True)
    xtr, ytr = flat.x_train.numpy(), flat.y_train.numpy()
    x, y = flat.x_test[:args.n], flat.y_test[:args.n]
    models = {"LogisticRegression": LogisticRegression(max_iter=500),
              "StandardScaler+MLPClassifier(64)": make_pipeline(StandardScaler(),
                                                                MLPClassifier((64,), max_iter=300, random_state=0)),
              "RandomForest(50, depth 8)": RandomForestClassifier(50, max_depth=8, random_state=0)}
    settings = [("linf", [0.05, 0.1]), ("l2", [0.5, 1.0])]
    out: dict[str, Any] = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "threads": args.threads, "n": args.n, "suite": args.suite, "runs": []}
    rows = []
    for name, est in models.items():
        est.fit(xtr, ytr)
        for norm, eps in settings:
            def ev(est: Any = est, norm: str = norm, eps: list[float] = eps, **kw: Any) -> Any:
                return bn.evaluate(est, x, y, norm=norm, epsilons=eps, checks=False, seed=args.seed,
                                   allow_blackbox_only=True, **kw)

            tree = name.startswith("RandomForest")
            # Black-box only: the suite without a replica; for the forest, Square alone (no structure attack).
            blind_suite: Any = [bn.attacks.Square(norm, queries=500)] if tree else args.suite
            blind, _, bc = _timed(lambda ev=ev, s=blind_suite: ev(suite=s, replica=False))
            opened, _, oc = _timed(lambda ev=ev: ev(suite=args.suite))
            run = {"model": name, "norm": norm, "eps": eps, "clean": opened.clean_accuracy,
                   "blackbox_only": blind.robust_accuracy, "blackbox_attacks": [a.name for a in blind.attacks],
                   "opened": opened.robust_accuracy, "opened_attacks": [a.name for a in opened.attacks],
                   "opened_upper_bound": opened.upper_bound, "blackbox_cpu_s": bc, "opened_cpu_s": oc}
            out["runs"].append(run)
            fig = " / ".join(f"ε={e}: {100 * b:.1f} % → {100 * o:.1f} %"
                             for e, b, o in zip(eps, blind.robust_accuracy, opened.robust_accuracy, strict=True))
            how = "tree split search + surrogate transfer (upper bound)" if opened.upper_bound else "exact replica"
            rows.append(f"| evaluate sklearn {name}, {norm}, n={args.n}, suite {args.suite} | black-box only "
                        f"({', '.join(run['blackbox_attacks'])}) → {how}: {fig} | {bc:.1f} s vs {oc:.1f} s CPU |")
    text = json.dumps(out, indent=2)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print("\n".join(rows))
    return 0


def _row(run: dict[str, Any], n: int, train_eps: float, suites: list[str]) -> str:
    def cell(key: str) -> str:
        r = run.get(key)
        if not r:
            return "not run"
        if "error" in r:
            return str(r["error"])
        return f"{100 * r['robust_accuracy']:.1f} % in {r['cpu_s']:.1f} s CPU"

    ta = run.get("torchattacks") or {}
    parts = []
    for suite in suites:
        b = run[f"bastion:{suite}"]
        ratio = f", {ta['cpu_s'] / b['cpu_s']:.1f}x faster than torchattacks AA" if "cpu_s" in ta else ""
        parts.append(f"Bastion {suite}: {cell(f'bastion:{suite}')}{ratio}")
    return (f"| evaluate, digits SmallCNN PGD-AT ε={train_eps}, L-inf ε={run['eps']}, n={n} | " + " · ".join(parts)
            + f" | torchattacks AA: {cell('torchattacks')} | ART AA: {cell('art')} | PGD-20: {cell('pgd20')} |")


if __name__ == "__main__":
    raise SystemExit(main())

"""Privacy and IP: Bastion's membership inference, extraction and defences against ART 1.20, same run.

    .venv/bin/python bench/privacy.py --out bench/out/privacy.json

1. Membership inference on an overfit MLP (digits, 500 members trained to 100 % train accuracy, 500
   non-members). Every attack is scored on the same evaluation halves (250 + 250); ART's
   MembershipInferenceBlackBox is fitted on the other halves (it needs labelled members), Bastion's LiRA
   only sees the pooled records for its shadows (never who is a member). ART's LabelOnlyDecisionBoundary
   runs HopSkipJump per record, so it is scored on a subset (--label-only-n of each).
2. Logistic regression on breast cancer: Tramèr equation solving, fidelity on held-out records, queries.
3. Digits SmallCNN behind probabilities: Knockoff Nets (Bastion random and adaptive, ART random) at 1k and
   10k queries; the same query distribution for both (pool records, then mixtures of two); transfer
   success of PGD from Bastion's copy.
4. Defences on the MIA setting: DP-SGD (Opacus) at ε = 8 re-measured by LiRA with DP-trained shadows;
   label-only output re-measured by the confidence attacks; the accuracy each costs.
Prints one Markdown row for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bastion.attacks.extraction import EquationSolving, KnockoffNets, transfer_from_copy
from bastion.attacks.inference import ConfidenceThreshold, LiRA, LossThreshold, membership_metrics
from bastion.attacks.inference.shadows import torch_trainer
from bastion.datasets import breast_cancer, digits
from bastion.defenses.coarsening import LabelOnly
from bastion.defenses.dp import train_dp
from bastion.zoo.models import MLP, SmallCNN
from bastion.zoo.train import accuracy, train

MIA_EPOCHS = 100


def _mlp() -> nn.Module:
    return MLP(64, 10)


def _summ(r: Any) -> dict[str, Any]:
    return {"auc": r.auc, "tpr_at_0.1%": r.tpr_at_fpr[0.001], "tpr_at_1%": r.tpr_at_fpr[0.01],
            "balanced_accuracy": r.balanced_accuracy}


class _Float32(nn.Module):
    """ART's HopSkipJump sends float64 arrays; the models compute in float32."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float())


def _art_classifier(model: nn.Module, shape: tuple[int, ...], classes: int) -> Any:
    from art.estimators.classification import PyTorchClassifier

    model = _Float32(model)
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=classes,
                             clip_values=(0.0, 1.0), device_type="cpu",
                             optimizer=torch.optim.Adam(model.parameters(), lr=1e-3))


def membership(args: argparse.Namespace, log: dict[str, Any]) -> None:
    ds = digits(flatten=True)
    x = torch.cat([ds.x_train, ds.x_test])
    y = torch.cat([ds.y_train, ds.y_test])
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    xm, ym = x[perm[:500]], y[perm[:500]]
    xn, yn = x[perm[500:1000]], y[perm[500:1000]]
    target = train(_mlp(), xm, ym, epochs=MIA_EPOCHS, seed=0)
    log["mia_setting"] = {"train_accuracy": accuracy(target, xm, ym), "test_accuracy": accuracy(target, xn, yn),
                          "members": 500, "non_members": 500, "evaluated": "250 + 250 (second halves)"}
    ev_m, ev_n = slice(250, 500), slice(250, 500)
    res: dict[str, Any] = {}
    t = time.perf_counter()
    lira = LiRA(n_shadows=args.shadows, trainer=torch_trainer(_mlp(), epochs=MIA_EPOCHS))
    lira.prepare(bn_wrap(target), (xm, ym), (xn, yn))
    for online in (True, False):
        attack = lira if online else LiRA(online=False, pool=lira.pool_)
        r = attack.run(target, (xm[ev_m], ym[ev_m]), (xn[ev_n], yn[ev_n]))
        res[r.attack] = _summ(r)
    res["LiRA (online)"]["seconds_incl_shadows"] = time.perf_counter() - t
    for attack in (LossThreshold(), ConfidenceThreshold()):
        r = attack.run(target, (xm[ev_m], ym[ev_m]), (xn[ev_n], yn[ev_n]))
        res["Bastion " + r.attack] = _summ(r)
    from art.attacks.inference.membership_inference import (
        LabelOnlyDecisionBoundary,
        MembershipInferenceBlackBox,
    )

    # ART's black-box attack reads predictions as probabilities (input_type="prediction"): give it the softmax
    clf = _art_classifier(nn.Sequential(target, nn.Softmax(dim=1)), (64,), 10)
    for kind in ("nn", "rf", "gb"):
        t = time.perf_counter()
        art = MembershipInferenceBlackBox(clf, attack_model_type=kind)
        art.fit(xm[:250].numpy(), ym[:250].numpy(), xn[:250].numpy(), yn[:250].numpy())
        s_in = art.infer(xm[ev_m].numpy(), ym[ev_m].numpy(), probabilities=True)
        s_out = art.infer(xn[ev_n].numpy(), yn[ev_n].numpy(), probabilities=True)
        r = membership_metrics(f"ART black-box ({kind})", np.asarray(s_in)[:, -1], np.asarray(s_out)[:, -1])
        res[r.attack] = {**_summ(r), "seconds": time.perf_counter() - t}
    k = args.label_only_n
    t = time.perf_counter()
    lo = LabelOnlyDecisionBoundary(clf)
    lo.calibrate_distance_threshold(xm[:k].numpy(), ym[:k].numpy(), xn[:k].numpy(), yn[:k].numpy(),
                                    max_iter=10, max_eval=500, init_eval=50, verbose=False)
    s_in = lo.infer(xm[250:250 + k].numpy(), ym[250:250 + k].numpy(), probabilities=True, max_iter=10,
                    max_eval=500, init_eval=50, verbose=False)
    s_out = lo.infer(xn[250:250 + k].numpy(), yn[250:250 + k].numpy(), probabilities=True, max_iter=10,
                     max_eval=500, init_eval=50, verbose=False)
    r = membership_metrics(f"ART label-only decision boundary ({k}+{k})", np.asarray(s_in).reshape(-1),
                           np.asarray(s_out).reshape(-1))
    res[r.attack] = {**_summ(r), "seconds": time.perf_counter() - t}
    log["mia"] = res
    # defences, same members / non-members
    t = time.perf_counter()
    dp = train_dp(_mlp(), xm, ym, target_epsilon=8.0, delta=1e-5, epochs=30, lr=3e-3, batch_size=64)

    def dp_trainer(xs: torch.Tensor, ys: torch.Tensor, seed: int) -> nn.Module:
        return train_dp(_mlp(), xs, ys, target_epsilon=8.0, delta=1e-5, epochs=30, lr=3e-3, batch_size=64,
                        seed=seed).model

    # the shadows' population is the same pooled records as above: prepare with the full sets
    dp_lira = LiRA(n_shadows=args.dp_shadows, trainer=dp_trainer)
    dp_lira.prepare(bn_wrap(dp.model), (xm, ym), (xn, yn))
    r = dp_lira.run(dp.model, (xm[ev_m], ym[ev_m]), (xn[ev_n], yn[ev_n]))
    label_only = LabelOnly(target)
    log["defences"] = {
        "none": {"test_accuracy": accuracy(target, xn, yn)},
        "dp_sgd_eps8": {"spent_epsilon": dp.epsilon, "delta": dp.delta, "noise_multiplier": dp.noise_multiplier,
                        "test_accuracy": accuracy(dp.model, xn, yn), "train_accuracy": dp.train_accuracy,
                        "lira_online": _summ(r), "seconds": time.perf_counter() - t},
        "label_only_output": {"test_accuracy": float((label_only.predict(xn) == yn).double().mean()),
                              **{a.name: _summ(a.run(label_only, (xm[ev_m], ym[ev_m]), (xn[ev_n], yn[ev_n])))
                                 for a in (LossThreshold(), ConfidenceThreshold())}},
    }


def bn_wrap(m: nn.Module) -> Any:
    from bastion.core import wrap

    return wrap(m)


def equation(log: dict[str, Any]) -> None:
    from sklearn.linear_model import LogisticRegression

    ds = breast_cancer()
    lr = LogisticRegression(max_iter=5000).fit(ds.x_train.numpy(), ds.y_train.numpy())
    r = EquationSolving().run(lr, ds.input_shape, eval_x=ds.x_test, eval_y=ds.y_test)
    log["equation_solving"] = {"features": ds.x_train.shape[1], "queries": r.queries, "fidelity": r.fidelity,
                               "held_out": int(ds.x_test.shape[0]),
                               "art": "FunctionallyEquivalentExtraction targets 2-layer ReLU nets; no ART "
                                      "counterpart for logistic regression"}


def knockoff(args: argparse.Namespace, log: dict[str, Any]) -> None:
    ds = digits()
    half = ds.x_train.shape[0] // 2
    victim = train(SmallCNN(), ds.x_train[:half], ds.y_train[:half], epochs=20, seed=0)
    pool = ds.x_train[half:]
    budgets = sorted(args.budgets)
    out: dict[str, Any] = {"victim_test_accuracy": accuracy(victim, ds.x_test, ds.y_test), "pool": int(pool.shape[0])}
    for strategy in ("random", "adaptive"):
        t = time.perf_counter()
        r = KnockoffNets(strategy, epochs=args.epochs, seed=0).run(victim, pool, budgets, eval_x=ds.x_test,
                                                                  eval_y=ds.y_test)
        out[f"bastion_{strategy}"] = {"curve": [p.to_dict() for p in r.curve], "seconds": time.perf_counter() - t}
        if strategy == "random":
            tr = transfer_from_copy(r.copy, victim, ds.x_test, ds.y_test, epsilon=0.2)
            out["transfer_from_bastion_random_copy"] = tr.to_dict()
    from art.attacks.extraction import KnockoffNets as ArtKnockoff

    gen = torch.Generator().manual_seed(1)
    mixes = []
    need = max(budgets) - pool.shape[0]
    a = torch.randint(0, pool.shape[0], (need,), generator=gen)
    b = torch.randint(0, pool.shape[0], (need,), generator=gen)
    lam = torch.rand(need, 1, 1, 1, generator=gen)
    mixes.append(lam * pool[a] + (1 - lam) * pool[b])
    queries = torch.cat([pool[torch.randperm(pool.shape[0], generator=gen)], *mixes]).numpy()
    # ART's KnockoffNets reads the victim's output as probabilities: give it the softmax, as an API would
    victim_clf = _art_classifier(nn.Sequential(victim, nn.Softmax(dim=1)), (1, 8, 8), 10)
    art_curve = []
    for budget in budgets:
        t = time.perf_counter()
        thief = _art_classifier(SmallCNN(), (1, 8, 8), 10)
        atk = ArtKnockoff(victim_clf, batch_size_fit=128, batch_size_query=256, nb_epochs=args.epochs, nb_stolen=budget,
                          sampling_strategy="random", use_probability=True, verbose=False)
        stolen = atk.extract(queries[:budget], thieved_classifier=thief)
        pred = stolen.predict(ds.x_test.numpy()).argmax(1)
        with torch.no_grad():
            vpred = victim(ds.x_test).argmax(1).numpy()
        art_curve.append({"queries": budget, "fidelity": float((pred == vpred).mean()),
                          "accuracy": float((pred == ds.y_test.numpy()).mean()), "seconds": time.perf_counter() - t})
    out["art_random"] = {"curve": art_curve}
    log["knockoff"] = out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shadows", type=int, default=16)
    p.add_argument("--dp-shadows", type=int, default=8)
    p.add_argument("--label-only-n", type=int, default=40)
    p.add_argument("--budgets", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("bench/out/privacy.json"))
    p.add_argument("--only", choices=["mia", "equation", "knockoff"], nargs="*")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    log: dict[str, Any] = {"date": dt.date.today().isoformat(), "command": " ".join(sys.argv),
                           "device": f"CPU ({platform.processor() or platform.machine()}), 1 thread",
                           "torch": torch.__version__}
    t0 = time.perf_counter()
    parts = args.only or ["equation", "knockoff", "mia"]
    if "equation" in parts:
        equation(log)
    if "knockoff" in parts:
        knockoff(args, log)
    if "mia" in parts:
        membership(args, log)
    log["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(log, indent=2))
    print(json.dumps(log, indent=1))
    print(row(log))


def row(log: dict[str, Any]) -> str:
    cells = []
    if "mia" in log:
        m = log["mia"]
        lira = m["LiRA (online)"]
        art_best = max((v for k, v in m.items() if k.startswith("ART")), key=lambda v: v["tpr_at_0.1%"])
        art_auc = max(v["auc"] for k, v in m.items() if k.startswith("ART"))
        cells.append(f"LiRA AUC {lira['auc']:.3f}, TPR@0.1%FPR {lira['tpr_at_0.1%']:.1%} vs ART best "
                     f"AUC {art_auc:.3f}, TPR@0.1% {art_best['tpr_at_0.1%']:.1%}")
        d = log["defences"]
        cells.append(f"DP-SGD ε={d['dp_sgd_eps8']['spent_epsilon']:.2f}: LiRA AUC {d['dp_sgd_eps8']['lira_online']['auc']:.3f}, "
                     f"test acc {d['none']['test_accuracy']:.3f}→{d['dp_sgd_eps8']['test_accuracy']:.3f}")
        lo = d["label_only_output"]
        cells.append(f"label-only output: loss-attack AUC {lo['loss threshold (Yeom)']['auc']:.3f} (acc unchanged)")
    if "equation_solving" in log:
        e = log["equation_solving"]
        cells.append(f"LR extraction: fidelity {e['fidelity']:.3f} with {e['queries']} queries (d={e['features']})")
    if "knockoff" in log:
        k = log["knockoff"]
        for i, pt in enumerate(k["bastion_random"]["curve"]):
            art = k["art_random"]["curve"][i]
            ada = k["bastion_adaptive"]["curve"][i]
            cells.append(f"Knockoff {pt['queries']}: fidelity {pt['fidelity']:.3f} (adaptive {ada['fidelity']:.3f}) vs "
                         f"ART {art['fidelity']:.3f}")
        cells.append(f"transfer PGD ε=0.2 from copy: {k['transfer_from_bastion_random_copy']['success_on_victim']:.1%}")
    return (f"| {log['date']} | privacy: digits MLP overfit on 500 (MIA), breast-cancer LR, digits SmallCNN (Knockoff) "
            f"| {log['device']} | `{log['command']}` | " + " · ".join(cells) + " |")


if __name__ == "__main__":
    main()

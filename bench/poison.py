"""Poisoning: Bastion's detectors vs ART's ActivationDefence and SpectralSignatureDefense on the same
poisoned sets; cleaning and retraining; label-flip detection with cleanlab; the Neural-Cleanse audit.

    .venv/bin/python bench/poison.py --out bench/out/poison.json

Digits CNN (SmallCNN, 15 epochs) poisoned with BadNets (2x2 bottom-right patch, target 0) at 1 % and 5 %
(``--seeds``), a blended trigger (alpha 0.2) and a clean-label backdoor (Turner et al., PGD eps 0.3);
breast-cancer MLP with a tabular trigger (two columns at extremes) (``--extra-seeds``). TPR = poison
records flagged, FPR = clean records flagged; seconds of each detector's fit; ``spectre_confirmed`` is Spectre
with the overlay confirmation (``confirm=True``), the poison check of ``bastion data audit/clean``. Cleaning is what
``bastion data clean --model M --retrain smallcnn`` does (its audit with the default removals: duplicates,
leakage, label issues, poison), and the retrained model uses the same recipe and seed as the
never-poisoned reference, so the only difference is the data. Prints medians over seeds as one Markdown
row for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bastion as bn
from bastion.attacks.poisoning import BadNets, Blended, CleanLabel, LabelFlip, PoisonResult, TabularTrigger
from bastion.detect import STRIP, ActivationClustering, LabelIssues, NeuralCleanse, SpectralSignature, Spectre

EPOCHS = 15


def _rates(flags: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return {"tpr": float(flags[mask].mean()), "fpr": float(flags[~mask].mean()),
            "flagged": int(flags.sum())}


def _train(x: torch.Tensor, y: torch.Tensor, arch: str, shape: tuple[int, ...], classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return bn.zoo.train(bn.zoo.build(arch, shape, classes), x, y, epochs=EPOCHS if arch == "smallcnn" else 60,
                        seed=seed)


def _art(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int, rate: float) -> dict[str, Any]:
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(net, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=classes,
                            clip_values=(0.0, 1.0))
    xs, ys = x.numpy(), np.eye(classes)[y.numpy()]
    out: dict[str, Any] = {}
    t = time.perf_counter()
    try:
        _, clean = ActivationDefence(clf, xs, ys).detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA")
        out["art_activation_defence"] = {"flags": ~np.asarray(clean, dtype=bool), "seconds": time.perf_counter() - t}
    except Exception as exc:  # reported, not hidden: ART's defences fail on some models
        out["art_activation_defence"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    t = time.perf_counter()
    try:
        _, clean = SpectralSignatureDefense(clf, xs, ys, expected_pp_poison=max(rate, 0.01)).detect_poison()
        out["art_spectral_signature"] = {"flags": ~np.asarray(clean, dtype=bool), "seconds": time.perf_counter() - t}
    except Exception as exc:
        out["art_spectral_signature"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


def _detectors(net: torch.nn.Module, res: PoisonResult, rate: float, classes: int, with_art: bool) -> dict[str, Any]:
    mask = res.mask.numpy()
    out: dict[str, Any] = {}
    for name, det in (("spectre", Spectre()), ("spectre_confirmed", Spectre(confirm=True)), ("spectre_que", Spectre(alpha=4.0)),
                      ("activation_clustering", ActivationClustering()), ("spectral_signature", SpectralSignature(eps=max(rate, 0.01)))):
        t = time.perf_counter()
        flags = det.fit_predict(net, res.x, res.y)
        out[name] = {**_rates(flags, mask), "seconds": round(time.perf_counter() - t, 2)}
    if with_art:
        for name, r in _art(net, res.x, res.y, classes, rate).items():
            out[name] = ({**_rates(r["flags"], mask), "seconds": round(r["seconds"], 2)} if "flags" in r else r)
    return out


def _strip(net: torch.nn.Module, res: PoisonResult, d: bn.datasets.Dataset) -> dict[str, float]:
    half = d.x_test.shape[0] // 2
    s = STRIP(n_overlays=20, frr=0.01).fit(net, d.x_test[:half])
    xt, yt = d.x_test[half:], d.y_test[half:]
    return {"triggered_flagged": float(s.predict(res.apply_trigger(xt[yt != res.target])).mean()),
            "clean_flagged": float(s.predict(xt).mean())}


#: where each finished run is written as it completes, so a long benchmark stopped early keeps its rows
PARTIAL = "bench/out/poison.partial.json"


def checkpoint(images: dict[str, Any]) -> None:
    Path(PARTIAL).parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no bench/out
    with open(PARTIAL, "w") as fh:
        json.dump(images, fh, indent=1, default=str)


def _records(x: torch.Tensor, y: torch.Tensor, name: str) -> Any:
    from pathlib import Path

    from bastion.data.records import Records

    xs, ys = x.numpy(), y.numpy()
    return Records(Path(name), "npz", xs, ys, [str(i) for i in range(len(ys))],
                   [xs[i].tobytes() + ys[i].tobytes() for i in range(len(ys))])


def _data_clean(net: torch.nn.Module, res: PoisonResult, d: bn.datasets.Dataset) -> tuple[torch.Tensor, dict[str, int]]:
    """The rows `bastion data clean --model` keeps (its default removals), and how many each check removed."""
    from bastion.data import clean
    from bastion.data.audit import audit

    rec = _records(res.x, res.y, "poisoned.npz")
    checks = clean.DEFAULT_REMOVE
    result = audit(rec, model=net, test=_records(d.x_test, d.y_test, "test.npz"), checks=checks, seed=0)
    plan = clean.plan(rec, result, checks)
    return torch.from_numpy(plan.kept), {c: n for c, n in result.counts().items() if n}


def image_backdoors(d: bn.datasets.Dataset, seeds: list[int], extra_seeds: list[int], clean_seeds: list[int],
                    with_art: bool) -> dict[str, Any]:
    shape, classes = tuple(d.x_train.shape[1:]), d.num_classes
    out: dict[str, Any] = {}
    clean_refs = {s: _train(d.x_train, d.y_train, "smallcnn", shape, classes, s)
                  for s in sorted(set(seeds) | set(extra_seeds) | set(clean_seeds))}
    out["never_poisoned_accuracy"] = {s: bn.zoo.accuracy(m, d.x_test, d.y_test) for s, m in clean_refs.items()}
    surrogate = clean_refs[seeds[0]]
    nc_clean = {}
    for s in clean_seeds:
        m = clean_refs[s]
        nc = NeuralCleanse(seed=s).fit(m, d.x_test[:200])
        nc_clean[s] = {"backdoored": nc.is_backdoored_, "max_score": round(float(nc.scores_.max()), 2),
                       "threshold": round(nc.threshold_, 2), "max_reach": round(float(nc.reach_.max()), 3),
                       "paper_max_anomaly_index": round(float(nc.anomaly_index_.max()), 2)}
    out["neural_cleanse_clean_models"] = nc_clean
    print("nc clean", nc_clean, flush=True)
    checkpoint(out)
    attacks: list[tuple[str, Any]] = [("badnets_1pct", BadNets(0, 0.01, size=2)), ("badnets_5pct", BadNets(0, 0.05, size=2)),
                                      ("blended_5pct", Blended(0, 0.05, alpha=0.2)),
                                      ("clean_label_5pct", CleanLabel(0, 0.05, eps=0.3, size=2))]
    for name, attack in attacks:
        for seed in (seeds if name.startswith("badnets") else extra_seeds):
            attack.seed = seed
            if isinstance(attack, CleanLabel):
                attack.patch.seed = seed
                res = attack(d.x_train, d.y_train, model=surrogate)
            else:
                res = attack(d.x_train, d.y_train)
            net = _train(res.x, res.y, "smallcnn", shape, classes, seed)
            rate = res.rate
            row: dict[str, Any] = {"poison": int(res.indices.numel()), "rate": rate,
                                   "asr": res.attack_success_rate(net, d.x_test, d.y_test),
                                   "clean_accuracy": bn.zoo.accuracy(net, d.x_test, d.y_test)}
            row["detectors"] = _detectors(net, res, rate, classes, with_art and name.startswith("badnets"))
            row["strip"] = _strip(net, res, d)
            # Clean as `bastion data clean` does, retrain with the reference's recipe and seed, measure again.
            kept, removed = _data_clean(net, res, d)
            net2 = _train(res.x[kept], res.y[kept], "smallcnn", shape, classes, seed)
            mask = res.mask.numpy()
            gone = np.ones(mask.shape[0], dtype=bool)
            gone[kept.numpy()] = False
            acc2 = bn.zoo.accuracy(net2, d.x_test, d.y_test)
            row["after_clean"] = {"removed": int(gone.sum()), "by_check": removed, "poison_removed": float(gone[mask].mean()),
                                  "clean_removed": float(gone[~mask].mean()),
                                  "asr": res.attack_success_rate(net2, d.x_test, d.y_test), "clean_accuracy": acc2,
                                  "accuracy_vs_never_poisoned": acc2 - out["never_poisoned_accuracy"][seed]}
            if name.startswith("badnets"):
                t = time.perf_counter()
                nc = NeuralCleanse(seed=seed).fit(net, d.x_test[:200])
                row["neural_cleanse"] = {"backdoored": nc.is_backdoored_, "target": nc.target_,
                                         "score": [round(float(a), 2) for a in nc.scores_],
                                         "threshold": round(nc.threshold_, 2),
                                         "reach": [round(float(a), 3) for a in nc.reach_],
                                         "paper_anomaly_index": [round(float(a), 2) for a in nc.anomaly_index_],
                                         "seconds": round(time.perf_counter() - t, 1)}
            out[f"{name}/seed{seed}"] = row
            print(name, seed, json.dumps(row, default=str), flush=True)
            checkpoint(out)
    return out


def tabular(seeds: list[int]) -> dict[str, Any]:
    d = bn.datasets.breast_cancer()
    shape = tuple(d.x_train.shape[1:])
    out: dict[str, Any] = {}
    for seed in seeds:
        res = TabularTrigger(columns=[0, 7], values=[1.0, 0.0], target=1, rate=0.05, seed=seed)(d.x_train, d.y_train)
        net = _train(res.x, res.y, "mlp", shape, 2, seed)
        row: dict[str, Any] = {"asr": res.attack_success_rate(net, d.x_test, d.y_test),
                               "clean_accuracy": bn.zoo.accuracy(net, d.x_test, d.y_test),
                               "detectors": _detectors(net, res, 0.05, 2, False)}
        out[f"tabular_5pct/seed{seed}"] = row
        print("tabular", seed, json.dumps(row)[:600], flush=True)
    return out


def label_flips(seeds: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, d in (("breast_cancer", bn.datasets.breast_cancer()), ("digits", bn.datasets.digits(flatten=True))):
        for seed in seeds:
            res = LabelFlip(0.1, seed=seed)(d.x_train, d.y_train)
            t = time.perf_counter()
            det = LabelIssues(seed=seed).fit(None, res.x, res.y)
            mask = res.mask.numpy()
            out[f"{name}/seed{seed}"] = {"recall": float(det.labels_[mask].mean()),
                                         "precision": float(mask[det.labels_].mean()) if det.labels_.any() else 0.0,
                                         "seconds": round(time.perf_counter() - t, 2)}
            print("flips", name, seed, out[f"{name}/seed{seed}"], flush=True)
    return out


def _median(vals: list[float]) -> float:
    return float(np.median(vals)) if vals else float("nan")


def summary(result: dict[str, Any]) -> str:
    """The RESULTS.md row: medians over seeds."""
    img = result["images"]

    def runs(key: str) -> list[dict[str, Any]]:
        return [v for k, v in img.items() if k.startswith(key + "/")]

    def det(key: str, name: str, field: str) -> float:
        return _median([r["detectors"][name][field] for r in runs(key) if field in r["detectors"].get(name, {})])

    cells = []
    for key in ("badnets_1pct", "badnets_5pct"):
        rs = runs(key)
        nc = [r["neural_cleanse"] for r in rs]
        cells.append(
            f"{key} ({len(rs)} seeds): Bastion Spectre TPR {det(key, 'spectre', 'tpr'):.1%} / FPR "
            f"{det(key, 'spectre', 'fpr'):.1%} ({det(key, 'spectre', 'seconds'):.1f} s), with the overlay confirmation "
            f"(what `data clean` removes) {det(key, 'spectre_confirmed', 'tpr'):.1%} / {det(key, 'spectre_confirmed', 'fpr'):.1%}"
            f" ({det(key, 'spectre_confirmed', 'seconds'):.1f} s) · ART AC "
            f"{det(key, 'art_activation_defence', 'tpr'):.1%} / {det(key, 'art_activation_defence', 'fpr'):.1%} · "
            f"ART spectral {det(key, 'art_spectral_signature', 'tpr'):.1%} / {det(key, 'art_spectral_signature', 'fpr'):.1%}"
            f" · data clean + retrain: ASR {_median([r['asr'] for r in rs]):.1%} -> "
            f"{_median([r['after_clean']['asr'] for r in rs]):.1%}, clean accuracy vs never-poisoned "
            f"{_median([r['after_clean']['accuracy_vs_never_poisoned'] for r in rs]) * 100:+.1f} pt "
            f"(removed {_median([r['after_clean']['clean_removed'] for r in rs]):.1%} of clean records)"
            f" · Neural Cleanse flagged {sum(n['backdoored'] for n in nc)}/{len(nc)}, target named "
            f"{sum(n['target'] == 0 for n in nc)}/{len(nc)} (target reach "
            f"{', '.join(format(n['reach'][0], '.2f') for n in nc if 'reach' in n)})")
    for key in ("blended_5pct", "clean_label_5pct"):
        if runs(key):
            cells.append(f"{key}: Spectre {det(key, 'spectre', 'tpr'):.1%} / {det(key, 'spectre', 'fpr'):.1%} "
                         f"(confirmed {det(key, 'spectre_confirmed', 'tpr'):.1%} / {det(key, 'spectre_confirmed', 'fpr'):.1%}), "
                         f"AC {det(key, 'activation_clustering', 'tpr'):.1%} / {det(key, 'activation_clustering', 'fpr'):.1%}, "
                         f"spectral {det(key, 'spectral_signature', 'tpr'):.1%} / {det(key, 'spectral_signature', 'fpr'):.1%}")
    nc_clean = img["neural_cleanse_clean_models"]
    cells.append(f"Neural Cleanse alarms on clean models: {sum(v['backdoored'] for v in nc_clean.values())}/{len(nc_clean)}"
                 f" (largest reach {max(v.get('max_reach', 0.0) for v in nc_clean.values()):.2f})")
    for name in ("breast_cancer", "digits"):
        fl = [v for k, v in result["label_flips"].items() if k.startswith(name + "/")]
        cells.append(f"label flips 10 % {name}: recall {_median([v['recall'] for v in fl]):.1%} at precision "
                     f"{_median([v['precision'] for v in fl]):.1%} (min recall {min(v['recall'] for v in fl):.1%})")
    return f"| poisoning (digits CNN; medians over seeds) | {result['device']} | `{result['command']}` | " + " · ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the BadNets runs and the label flips")
    ap.add_argument("--extra-seeds", default="0", help="seeds of the blended, clean-label and tabular runs")
    ap.add_argument("--clean-seeds", default="0,1,2", help="seeds of the clean models the audit must not flag")
    ap.add_argument("--no-art", action="store_true")
    ap.add_argument("--out", default="bench/out/poison.json")
    args = ap.parse_args()
    global PARTIAL
    PARTIAL = args.out + ".partial"
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = [int(s) for s in args.extra_seeds.split(",")]
    t0 = time.perf_counter()
    result: dict[str, Any] = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "device": f"CPU ({platform.processor() or platform.machine()}), torch threads 2",
                              "command": f"python bench/poison.py --seeds {args.seeds} --extra-seeds {args.extra_seeds} "
                                         f"--clean-seeds {args.clean_seeds}", "seeds": seeds}
    clean_seeds = [int(s) for s in args.clean_seeds.split(",")]
    result["images"] = image_backdoors(bn.datasets.digits(), seeds, extra, clean_seeds, not args.no_art)
    result["label_flips"] = label_flips(seeds)
    result["tabular"] = tabular(extra)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    print(summary(result))


if __name__ == "__main__":
    main()

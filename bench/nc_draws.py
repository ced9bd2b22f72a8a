"""How much the Neural Cleanse audit's statistic depends on the clean inputs it draws, and what averaging
several draws (``NeuralCleanse(draws=K)``) does to it: BadNets 2x2 models at 1 % and 5 % poison and clean
models, digits CNN (the recipe of bench/poison.py), K single-draw audits per model and their average.

Writes a JSON result and prints a bench/RESULTS.md line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

# bench/poison.py's training recipe, so the models are the ones that benchmark audits
sys.path.insert(0, str(Path(__file__).parent))
import bastion as bn
from bastion.attacks.poisoning import BadNets
from bastion.detect import NeuralCleanse
from bastion.detect.neural_cleanse import leave_one_out_scores
from poison import _train


def audit(net: torch.nn.Module, x: torch.Tensor, seed: int, draws: int, alpha: float) -> dict[str, Any]:
    t = time.perf_counter()
    logs = []
    for k in range(draws):
        nc = NeuralCleanse(seed=seed * 100 + k, alpha=alpha).fit(net, x)
        logs.append(np.log(np.maximum(nc.mask_norms_, 1e-6)))
    single = [leave_one_out_scores(v) for v in logs]
    avg = leave_one_out_scores(np.mean(logs, axis=0))
    return {"single_max": [float(s.max()) for s in single], "single_argmax": [int(s.argmax()) for s in single],
            "mean_max": float(avg.max()), "mean_argmax": int(avg.argmax()), "seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--clean-seeds", default="0,1,2,3,4,5")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--out", type=Path, default=Path("bench/out/nc_draws.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = bn.datasets.digits()
    shape, classes = tuple(d.x_train.shape[1:]), d.num_classes
    thr = float(stats.t.ppf(1 - args.alpha / classes, classes - 2))
    x = d.x_test[:200]
    rows: dict[str, Any] = {}
    for rate in (0.01, 0.05):
        for seed in (int(s) for s in args.seeds.split(",")):
            res = BadNets(0, rate, size=2, seed=seed)(d.x_train, d.y_train)
            net = _train(res.x, res.y, "smallcnn", shape, classes, seed)
            r = audit(net, x, seed, args.draws, args.alpha)
            r["asr"] = res.attack_success_rate(net, d.x_test, d.y_test)
            rows[f"badnets_{rate:.2f}/seed{seed}"] = r
            print(f"badnets {rate} seed {seed}: {r}", file=sys.stderr, flush=True)
    for seed in (int(s) for s in args.clean_seeds.split(",")):
        net = _train(d.x_train, d.y_train, "smallcnn", shape, classes, seed)
        rows[f"clean/seed{seed}"] = audit(net, x, seed, args.draws, args.alpha)
        print(f"clean seed {seed}: {rows[f'clean/seed{seed}']}", file=sys.stderr, flush=True)
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "device": f"CPU ({os.cpu_count()} cores, {platform.machine()})", "command": " ".join(sys.argv),
              "threshold": thr, "draws": args.draws, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    def flagged(kind: str, key: str) -> str:
        rs = [r for k, r in rows.items() if k.startswith(kind)]
        if key == "single":
            hits = sum(v > thr for r in rs for v in r["single_max"])
            return f"{hits}/{sum(len(r['single_max']) for r in rs)}"
        return f"{sum(r['mean_max'] > thr for r in rs)}/{len(rs)}"

    parts = [f"threshold {thr:.2f} (alpha {args.alpha})"]
    for kind, label in (("badnets_0.01", "BadNets 1 %"), ("badnets_0.05", "BadNets 5 %"), ("clean", "clean")):
        rs = [r for k, r in rows.items() if k.startswith(kind)]
        means = ", ".join(f"{r['mean_max']:.2f}" for r in rs)
        parts.append(f"{label}: single draws flagged {flagged(kind, 'single')} (max statistic "
                     f"{min(min(r['single_max']) for r in rs):.2f}-{max(max(r['single_max']) for r in rs):.2f}), "
                     f"mean of {args.draws} flagged {flagged(kind, 'mean')} "
                     f"({means})")
    print(f"| {result['date'][:10]} | Neural Cleanse statistic vs input draw | {result['device']} | "
          f"`python {' '.join(sys.argv)}` | {' · '.join(parts)} |")


if __name__ == "__main__":
    main()

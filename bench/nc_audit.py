"""The Neural Cleanse model audit's decisions on BadNets and clean digits CNNs: does it flag each backdoored
model with the right target, and stay quiet on clean ones? BadNets 2x2 bottom-right patch (target 0) at 1 % and
5 % poison and clean models, trained with bench/poison.py's recipe, each audited with the default
``NeuralCleanse()`` under ``--audit-seeds`` (different input draws and starts).

    .venv/bin/python bench/nc_audit.py --out bench/out/nc_audit.json

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

# bench/poison.py's training recipe, so the models are the ones that benchmark audits
sys.path.insert(0, str(Path(__file__).parent))
import bastion as bn
from bastion.attacks.poisoning import BadNets
from bastion.detect import NeuralCleanse
from poison import _train


def _audit(net: torch.nn.Module, x: torch.Tensor, seeds: list[int]) -> list[dict[str, Any]]:
    out = []
    for s in seeds:
        t = time.perf_counter()
        nc = NeuralCleanse(seed=s).fit(net, x)
        out.append({"backdoored": nc.is_backdoored_, "target": nc.target_, "reach": nc.reach_.round(3).tolist(),
                    "norm_score": nc.scores_.round(2).tolist(), "threshold": round(nc.threshold_, 2),
                    "seconds": round(time.perf_counter() - t, 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9,10,11", help="BadNets 1 %% models")
    ap.add_argument("--seeds-5", default="0,1,2", help="BadNets 5 %% models")
    ap.add_argument("--clean-seeds", default="0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15")
    ap.add_argument("--audit-seeds", default="0,1")
    ap.add_argument("--out", type=Path, default=Path("bench/out/nc_audit.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    d = bn.datasets.digits()
    shape, classes = tuple(d.x_train.shape[1:]), d.num_classes
    x = d.x_test[:200]
    audit_seeds = [int(s) for s in args.audit_seeds.split(",")]
    rows: dict[str, Any] = {}
    for rate, seeds in ((0.01, args.seeds), (0.05, args.seeds_5)):
        for seed in (int(s) for s in seeds.split(",")):
            res = BadNets(0, rate, size=2, seed=seed)(d.x_train, d.y_train)
            net = _train(res.x, res.y, "smallcnn", shape, classes, seed)
            rows[f"badnets_{rate:.2f}/seed{seed}"] = {"asr": res.attack_success_rate(net, d.x_test, d.y_test),
                                                      "audits": _audit(net, x, audit_seeds)}
            print(f"badnets {rate} seed {seed}: {rows[f'badnets_{rate:.2f}/seed{seed}']}", file=sys.stderr, flush=True)
    for seed in (int(s) for s in args.clean_seeds.split(",")):
        net = _train(d.x_train, d.y_train, "smallcnn", shape, classes, seed)
        rows[f"clean/seed{seed}"] = {"audits": _audit(net, x, audit_seeds)}
        print(f"clean seed {seed}: {rows[f'clean/seed{seed}']}", file=sys.stderr, flush=True)
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "device": f"CPU ({os.cpu_count()} cores, {platform.machine()})", "command": " ".join(sys.argv),
              "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    parts = []
    for kind, label in (("badnets_0.01", "BadNets 1 %"), ("badnets_0.05", "BadNets 5 %"), ("clean", "clean")):
        rs = [r for k, r in rows.items() if k.startswith(kind)]
        audits = [a for r in rs for a in r["audits"]]
        flagged = sum(a["backdoored"] for a in audits)
        if kind == "clean":
            parts.append(f"{label} ({len(rs)} models): **{flagged}/{len(audits)} audits alarm**, largest reach "
                         f"{max(max(a['reach']) for a in audits):.2f}, largest mask-norm statistic "
                         f"{max(max(a['norm_score']) for a in audits):.2f} (threshold {audits[0]['threshold']:.2f})")
        else:
            named = sum(a["target"] == 0 for a in audits)
            asr = [r["asr"] for r in rs]
            parts.append(f"{label} ({len(rs)} models, ASR {min(asr):.0%}-{max(asr):.0%}): **flagged {flagged}/"
                         f"{len(audits)}, target named {named}/{len(audits)}**, target reach "
                         f"{min(a['reach'][0] for a in audits):.2f}-{max(a['reach'][0] for a in audits):.2f}, "
                         f"largest other reach {max(max(a['reach'][1:]) for a in audits):.2f}")
    secs = np.median([a["seconds"] for r in rows.values() for a in r["audits"]])
    print(f"| {result['date'][:10]} | Neural Cleanse audit with the patch check (default NeuralCleanse(), "
          f"{len(audit_seeds)} audits per model) | {result['device']} | `python {' '.join(sys.argv)}` | "
          f"{' · '.join(parts)} · {secs:.1f} s per audit, {result['seconds']:.0f} s in all |")


if __name__ == "__main__":
    main()

"""Drift and attack monitoring on the digits: false alarms on clean traffic, and requests until detection.

    .venv/bin/python bench/monitor.py --out bench/out/monitor.json

A SmallCNN is trained on 900 digits; the baseline is fitted on 400 others; traffic is drawn from the
remaining 497, which neither saw. For each window size, clean windows measure the false-alarm rate
(the baseline promises at most ``--alpha`` per window for all five monitors together), and four shifted
streams measure the share of windows flagged and the expected number of requests until the first alarm
(window size / detection rate, the mean of a geometric number of windows): Gaussian noise, rotation,
an L-inf PGD stream (the evasion campaign the seed describes), and a boundary-probing stream (inputs
interpolated to the decision boundary between two digits, as HopSkipJump and extraction queries are).
Prints one Markdown row per stream for bench/RESULTS.md and writes all figures to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import bastion as bn
from bastion.monitor import Baseline


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    theta = math.radians(degrees)
    rot = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0]])
    grid = F.affine_grid(rot.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros").clamp(0, 1)


def boundary_probes(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """Bisect between each input and one of another class until the pair straddles the boundary."""
    g = torch.Generator().manual_seed(seed)
    partner = torch.randperm(len(x), generator=g)
    a, b = x, x[partner]
    keep = y != y[partner]
    lo, hi = torch.zeros(len(x)), torch.ones(len(x))
    with torch.no_grad():
        pa = net(a).argmax(1)
        for _ in range(12):
            mid = (lo + hi) / 2
            xm = a + mid.view(-1, 1, 1, 1) * (b - a)
            same = net(xm).argmax(1) == pa
            lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    out = a + lo.view(-1, 1, 1, 1) * (b - a)
    return out[keep]


def digits_victim() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits CNN both monitor benches watch, its reference inputs, and the traffic pool (inputs, labels):
    one seeded split of all 1,797 digits into 900 training, 400 reference and the rest as traffic."""
    d = bn.datasets.digits()
    x, y = torch.cat([d.x_train, d.x_test]), torch.cat([d.y_train, d.y_test])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, ref, pool = perm[:900], perm[900:1300], perm[1300:]
    net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=16), x[tr], y[tr], epochs=15, lr=2e-3, seed=0)
    return net, x[ref], x[pool], y[pool]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--windows", type=int, default=300, help="clean windows per window size")
    ap.add_argument("--attack-windows", type=int, default=50, help="windows per shifted stream and size")
    ap.add_argument("--sizes", default="10,25,50")
    ap.add_argument("--out", type=Path, default=Path("bench/out/monitor.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    net, xref, xp, yp = digits_victim()
    t0 = time.perf_counter()
    base = Baseline(alpha=args.alpha).fit_model(net, xref)
    fit_s = time.perf_counter() - t0
    torch.manual_seed(1)
    _, (pgd_small, pgd), _ = bn.attacks.PGD(norm="linf", steps=10)(net, xp, yp, epsilons=[0.03, 0.1])
    streams = {"clean": xp,
               "noise sigma=0.05": (xp + 0.05 * torch.randn_like(xp)).clamp(0, 1),
               "noise sigma=0.1": (xp + 0.1 * torch.randn_like(xp)).clamp(0, 1),
               "rotation 10 deg": rotate(xp, 10.0), "rotation 20 deg": rotate(xp, 20.0),
               "PGD linf eps=0.03": pgd_small, "PGD linf eps=0.1": pgd,
               "boundary probes": boundary_probes(net, xp, yp, seed=0)}
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        for name, stream in streams.items():
            n_win = args.windows if name == "clean" else args.attack_windows
            fired: dict[str, int] = {}
            flagged, seconds = 0, 0.0
            for _ in range(n_win):
                idx = torch.as_tensor(rng.choice(len(stream), size, replace=False))
                t = time.perf_counter()
                rep = base.check_model(net, stream[idx])
                seconds += time.perf_counter() - t
                flagged += rep.drift
                for m in rep.fired:
                    fired[m] = fired.get(m, 0) + 1
            rate = flagged / n_win
            rows.append({"window": size, "stream": name, "windows": n_win, "flag_rate": rate,
                         "requests_to_alarm": (size / rate) if rate > 0 else None,
                         "fired_by_monitor": fired, "ms_per_window": 1000 * seconds / n_win})
            print(f"| monitor | CPU 2 cores | W={size} | {name} | windows flagged {flagged}/{n_win} ({rate:.1%}) | "
                  f"requests to alarm {'-' if not rate else f'{size / rate:.0f}'} | {1000 * seconds / n_win:.1f} ms/window |"
                  f" alpha {args.alpha} | `python bench/monitor.py` |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": dt.datetime.now(dt.timezone.utc).isoformat(), "machine": platform.processor()
                                    or platform.machine(), "torch": torch.__version__, "alpha": args.alpha,
                                    "fit_seconds": fit_s, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Ray scale-out: speed-up of a sharded evaluation at 1 and 2 workers, and the cost of one Ray task.

    .venv/bin/python bench/scale.py --examples 256 --out bench/out/scale.json

Trains a SmallCNN on the scikit-learn digits (seeded), then runs the same sharded robustness evaluation
(fast suite: APGD-CE, APGD-T, Square at L-inf 0.1, blocks of 64 examples) through

- the in-process plan (``--backend local`` of bastion.scale, one thread),
- a local Ray cluster of 2 CPUs with 1 worker, then with 2 workers,

checks that the three results are identical bit for bit, and times empty round trips to an actor (the
per-task overhead). From these, the time on N workers is about T1 / N + (shards / N) * overhead + start-up,
so the speed-up on N GPUs can be stated on paper. The machine is shared: the load average is recorded
before and after, and wall-clock figures are inflated by the neighbours' work. Prints one Markdown row for
bench/RESULTS.md and writes every figure as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import bastion as bn
from bastion.scale import BLOCK, ModelSpec, evaluate_sharded, open_backend


def same(a: Any, b: Any) -> bool:
    return (a.robust_accuracy == b.robust_accuracy and torch.equal(a.broken_eps, b.broken_eps)
            and torch.equal(a.x_adv, b.x_adv) and a.broken_by == b.broken_by)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=256, help="test examples evaluated (blocks of 64)")
    ap.add_argument("--suite", default="fast")
    ap.add_argument("--pings", type=int, default=200, help="empty round trips for the per-task overhead")
    ap.add_argument("--repeats", type=int, default=3, help="1- and 2-worker runs alternate this many times "
                    "(medians reported): the neighbours' load drifts")
    ap.add_argument("--out", type=Path, default=Path("bench/out/scale.json"))
    args = ap.parse_args()

    import ray

    load_before = os.getloadavg()
    d = bn.datasets.digits()
    net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8), d.x_train, d.y_train, epochs=10, seed=0).eval()
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    torch.jit.script(net).save(str(folder / "model.pt"))
    spec = ModelSpec.from_path(folder / "model.pt")
    x, y = d.x_test[:args.examples], d.y_test[:args.examples]
    kw: dict[str, Any] = {"norm": "linf", "epsilons": [0.1], "suite": args.suite, "seed": 0, "checks": False}
    shards = -(-x.shape[0] // BLOCK)

    t0 = time.perf_counter()
    with open_backend("local") as local:
        ref = evaluate_sharded(local, spec, x, y, **kw)
    t_local = time.perf_counter() - t0

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    t_init = time.perf_counter() - t0
    samples: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    identical = True
    for r in range(args.repeats):
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            with open_backend("ray", workers=workers) as backend:
                t0 = time.perf_counter()
                backend.ping(workers)  # actors up and torch imported: start-up, not work
                t_start = time.perf_counter() - t0
                t0 = time.perf_counter()
                got = evaluate_sharded(backend, spec, x, y, **kw)  # includes each actor's one model load
                t_run = time.perf_counter() - t0
                identical &= same(got, ref)
                lat = []
                for _ in range(args.pings):
                    p0 = time.perf_counter()
                    backend.ping(1)
                    lat.append(time.perf_counter() - p0)
                p0 = time.perf_counter()
                backend.ping(args.pings)
                burst = (time.perf_counter() - p0) / args.pings
                samples[workers].append({"actor_start_s": t_start, "evaluate_s": t_run,
                                         "task_round_trip_median_ms": 1e3 * statistics.median(lat),
                                         "task_round_trip_p90_ms": 1e3 * sorted(lat)[int(0.9 * len(lat))],
                                         "task_throughput_ms_per_task": 1e3 * burst})
    runs: dict[str, Any] = {str(w): {k: statistics.median(s[k] for s in ss) for k in ss[0]} | {"runs": ss}
                            for w, ss in samples.items()}
    ray.shutdown()
    load_after = os.getloadavg()
    t1, t2 = runs["1"]["evaluate_s"], runs["2"]["evaluate_s"]
    overhead_ms = runs["1"]["task_round_trip_median_ms"]
    out = {
        "date": dt.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared)", "load_before": load_before, "load_after": load_after,
        "examples": int(x.shape[0]), "block": BLOCK, "repeats": args.repeats, "shards": shards, "suite": args.suite,
        "robust_accuracy": ref.robust_accuracy[0], "identical_bit_for_bit": identical,
        "local_plan_1_thread_s": t_local, "ray_init_s": t_init, "ray": runs,
        "speedup_2_over_1_workers": t1 / t2, "speedup_2_workers_over_local": t_local / t2,
        "per_task_overhead_ms": overhead_ms,
        "model_on_paper": "T(N) ~ T1 / N + ceil(shards / N) * overhead + actor start-up (once) + model load (once "
                          "per actor); speed-up ~ N while a shard's work (here T1 / shards) >> overhead",
        "work_per_shard_s": t1 / shards,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(json.dumps(out, indent=2))
    print(f"| {out['date']} | Ray scale-out: sharded evaluation ({args.suite} suite, L-inf 0.1, {x.shape[0]} digits, "
          f"{shards} shards of {BLOCK}) | CPU, 2 cores (shared, load ≈{load_before[0]:.0f}→{load_after[0]:.0f}) | "
          f"`.venv/bin/python bench/scale.py --examples {args.examples} --repeats {args.repeats}` | medians: in-process plan {t_local:.1f} s · "
          f"Ray 1 worker {t1:.1f} s · 2 workers {t2:.1f} s (speed-up {t1 / t2:.2f}×) · per-task round trip "
          f"{overhead_ms:.1f} ms (median), {runs['2']['task_throughput_ms_per_task']:.2f} ms/task in a burst · "
          f"ray.init {t_init:.1f} s, actor start {runs['2']['actor_start_s']:.1f} s · results identical bit for bit: "
          f"{'yes' if identical else 'NO'} |")


if __name__ == "__main__":
    main()

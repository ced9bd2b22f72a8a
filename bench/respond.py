"""Automatic response through the gateway: time from the first attack request to the playbook's action, and
false alarms over clean traffic.

    .venv/bin/python bench/respond.py --out bench/out/respond.json

The digits SmallCNN (trained on 900 digits) is pushed, signed, as two registry versions; version 2 is served
from production (``registry://digits@production``) behind the in-process gateway (FastAPI TestClient: the
whole request path, audit log included, without sockets). Live monitors: windows of ``--window`` examples,
global and per API key, at a false-alarm rate ``--alpha`` per window; the baseline is fitted on 400 held-out
digits. One per-key playbook: any of boundary/confidence/predictions fires -> alert (XSOAR body to a local
receiver), revoke the key, route traffic to ``digits@1``.

1. False alarms: ``--clean`` single-example requests drawn (with replacement) from 497 digits neither the
   model nor the baseline saw, spread over ``--clean-keys`` keys. Counted: alarmed windows (global and per
   key) and incidents raised.
2. Reaction: per stream and trial, a fresh key sends attack requests of ``--batch`` examples back to back
   (no pause for the monitors) until it is refused. Measured: requests answered before the refusal, and
   seconds from sending the first attack request to the response action and to the alert's arrival.
   Streams: L-inf PGD at eps 0.1 and 0.03 against the served model, and boundary probes (inputs bisected onto
   the decision boundary between two digits, as extraction and HopSkipJump queries are). Each trial's
   incident is resolved before the next (route lifted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bastion as bn
import monitor as monitor_bench


def receiver() -> tuple[ThreadingHTTPServer, str, list[float]]:
    arrivals: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            arrivals.append(time.time())
            self.send_response(201)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/incident", arrivals


def body(x: torch.Tensor) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", type=int, default=10_000, help="clean single-example requests")
    ap.add_argument("--clean-keys", type=int, default=10)
    ap.add_argument("--trials", type=int, default=5, help="attack trials per stream")
    ap.add_argument("--batch", type=int, default=5, help="examples per attack request")
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--out", type=Path, default=Path("bench/out/respond.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from fastapi.testclient import TestClient

    from bastion.guard import ServeOptions, build_gateway, create_app
    from bastion.registry import Registry
    from bastion.respond import ResponseState, resolve

    net, xref, xp, yp = monitor_bench.digits_victim()
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-respond-"))
    priv, pub = bn.sign.keys.keygen(tmp / "release")
    db, store = f"sqlite:///{tmp / 'bastion.db'}", str(tmp / "store")
    reg = Registry(db, store)
    for v in ("1", "2"):
        folder = tmp / f"v{v}"
        folder.mkdir()
        torch.jit.script(net).save(str(folder / "model.pt"))
        bn.sign.sign_model(folder, priv)
        reg.push(folder, "digits", v, public_key=pub)
        reg.promote("digits", v, to="production")
    np.savez(tmp / "ref.npz", x=xref.numpy())
    server, url, arrivals = receiver()
    (tmp / "guard.yaml").write_text(yaml.safe_dump({
        "audit_sync": "normal", "defaults": {"rate": 100000, "burst": 100000},
        "monitor": {"window": args.window, "alpha": args.alpha, "per_key": True, "global": True},
        "playbooks": [{"name": "attack-from-one-key", "severity": "high",
                       "when": {"source": ["boundary", "confidence", "predictions"], "per_key": True, "count": 1},
                       "actions": ["alert", "revoke", {"route-to": "digits@1"}]}],
        "alerts": {"url": url, "format": "xsoar", "retries": 2, "backoff": 0.1}, "poll_s": 1.0}))
    gw = build_gateway(ServeOptions(model="registry://digits@production", db=db, registry_db=db, registry_store=store,
                                    config=str(tmp / "guard.yaml"), reference=str(tmp / "ref.npz")))
    live = gw.live
    assert live is not None
    state = ResponseState(db)
    torch.manual_seed(1)
    _, (pgd_small, pgd), _ = bn.attacks.PGD(norm="linf", steps=10)(net, xp, yp, epsilons=[0.03, 0.1])
    streams = {"PGD linf eps=0.1": pgd, "PGD linf eps=0.03": pgd_small,
               "boundary probes": monitor_bench.boundary_probes(net, xp, yp, seed=0)}
    load = os.getloadavg()
    out: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(), "machine": platform.machine(),
                           "cpus": os.cpu_count(), "load_before": load, "window": args.window, "alpha": args.alpha,
                           "batch": args.batch}
    rng = np.random.default_rng(0)
    with TestClient(create_app(gw)) as c:
        # 1. clean traffic
        keys = [gw.keys.create(f"clean-{i}", ["infer"])[0] for i in range(args.clean_keys)]
        t0 = time.perf_counter()
        idx = rng.integers(0, len(xp), args.clean)
        refused: list[dict[str, Any]] = []
        for n_req, j in enumerate(idx):
            r = c.post("/v2/models/digits/infer", json=body(xp[j:j + 1]),
                       headers={"Authorization": f"Bearer {keys[n_req % len(keys)]}"})
            if r.status_code != 200:
                # a false alarm revoked this clean key (and routed traffic): recorded, undone, key replaced, so
                # the rest of the clean traffic is still measured against the primary model
                refused.append({"request": n_req, "status": r.status_code, "error": r.json().get("error")})
                live.drain(60)
                for open_id in list(live.incident_ids):
                    if state.incident(open_id)["status"] == "open":
                        resolve(state, open_id, "bench: false alarm on clean traffic")
                live.refresh()
                keys[n_req % len(keys)] = gw.keys.create(f"clean-{n_req}", ["infer"])[0]
        clean_s = time.perf_counter() - t0
        live.drain(120)
        counts = state.window_counts("digits")
        out["clean"] = {"requests": args.clean, "api_keys": args.clean_keys, "seconds": clean_s, **counts,
                        "incidents": len(live.incident_ids), "refused": refused,
                        "false_alarm_incidents": [state.incident(k) for k in live.incident_ids]}
        print(f"clean: {args.clean} requests in {clean_s:.1f} s; windows {counts['global']} global "
              f"({counts['global_alarms']} alarmed), {counts['keys']} per key ({counts['key_alarms']} alarmed); "
              f"incidents raised: {len(live.incident_ids)}; clean requests refused: {len(refused)}", flush=True)
        for open_id in list(live.incident_ids):
            if state.incident(open_id)["status"] == "open":
                resolve(state, open_id, "bench: clean traffic")
        live.refresh()
        # 2. attacks
        rows = []
        for name, stream in streams.items():
            for trial in range(args.trials):
                key, _ = gw.keys.create(f"attacker-{trial}-{name}", ["infer"])
                before = len(live.incident_ids)
                n_alerts = len(arrivals)
                order = rng.permutation(len(stream))
                sent, status, first = 0, 200, time.time()
                while status == 200 and sent * args.batch < len(stream):
                    sel = order[sent * args.batch:(sent + 1) * args.batch]
                    status = c.post("/v2/models/digits/infer", json=body(stream[sel]),
                                    headers={"Authorization": f"Bearer {key}"}).status_code
                    sent += 1
                refused_at = time.time()
                live.drain(60)
                new = live.incident_ids[before:]
                inc = state.incident(new[0]) if new else None
                action_s = None
                if inc is not None:
                    action_s = dt.datetime.fromisoformat(inc["created"]).timestamp() - first
                deadline = time.time() + 10
                while len(arrivals) == n_alerts and time.time() < deadline:
                    time.sleep(0.01)
                alert_s = arrivals[n_alerts] - first if len(arrivals) > n_alerts else None
                answered = sent - 1 if status == 401 else sent
                rows.append({"stream": name, "trial": trial, "refused": status == 401, "answered": answered,
                             "examples_answered": answered * args.batch, "seconds_to_incident": action_s,
                             "seconds_to_refusal": refused_at - first if status == 401 else None,
                             "seconds_to_alert": alert_s})
                print(f"{name} trial {trial}: {'revoked' if status == 401 else 'NOT revoked'} after {answered} "
                      f"requests ({answered * args.batch} examples); incident after "
                      f"{'-' if action_s is None else f'{action_s:.3f}'} s, alert arrived after "
                      f"{'-' if alert_s is None else f'{alert_s:.3f}'} s", flush=True)
                for new_id in new:
                    resolve(state, new_id, "bench trial")
                live.refresh()
        out["attacks"] = rows
    out["load_after"] = os.getloadavg()
    server.shutdown()
    summary = {}
    for name in streams:
        rs = [r for r in rows if r["stream"] == name]
        t = [r["seconds_to_incident"] for r in rs if r["seconds_to_incident"] is not None]
        summary[name] = {"revoked": sum(r["refused"] for r in rs), "trials": len(rs),
                         "median_requests": float(np.median([r["answered"] for r in rs])),
                         "max_requests": max(r["answered"] for r in rs),
                         "median_seconds": float(np.median(t)) if t else None, "max_seconds": max(t) if t else None}
        s = summary[name]
        print(f"| respond | CPU {os.cpu_count()} cores, shared, load {load[0]:.1f} | {name}, W={args.window}, "
              f"alpha {args.alpha}, {args.batch} examples/request | revoked+routed in {s['revoked']}/{s['trials']} "
              f"trials after median {s['median_requests']:.0f} (max {s['max_requests']}) requests, median "
              f"{s['median_seconds'] if s['median_seconds'] is None else round(s['median_seconds'], 3)} s "
              f"(max {s['max_seconds'] if s['max_seconds'] is None else round(s['max_seconds'], 3)} s) from the first "
              f"attack request | `python bench/respond.py` |")
    out["summary"] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()

"""The guarded gateway: added latency over a plain FastAPI wrapper, detection at the configured FPR, crash safety.

    .venv/bin/python bench/guard.py --out bench/out/guard.json      # needs wrk (apt-get install wrk)

1. Detection: each detector is fitted on 300 clean test digits (thresholds at ``--fpr``) and scored on the
   other 150 clean digits (the false-positive rate actually met) and on successful PGD (L-inf 0.2), Square
   (L-inf 0.2, 1,000 queries) and HopSkipJump (L2, 1,000 queries) adversarial examples against the same
   digits CNN. A batch of one example per request, as in the gateway.
2. Latency at about ``--rate`` requests/s on loopback, measured by wrk (``--conns`` connections with
   exponential think times, so arrivals are close to a Poisson stream; wrk's own latency percentiles):
   the model called directly in-process; a plain FastAPI + Uvicorn wrapper of the same TorchScript model;
   the gateway with auth, validation, rate limit and the SQLite audit log (``audit_sync: normal``, the
   default); the same plus two detectors (margin, Mahalanobis); the same with ``audit_sync: full`` (an
   fsync before every answer); the same two on PostgreSQL.
   Added latency = gateway percentile - plain wrapper percentile, from the same run.
3. Crash safety: the gateway under load is killed with SIGKILL; every 2xx that wrk logged (with the record's
   sequence number from ``X-Audit-Seq``) must be in the database, and ``audit verify`` must pass.
4. Per-stage cost (``stages`` in the JSON, a table on stderr): the ASGI apps driven in-process at ``--rate``
   (bench/guard_stages.py: no sockets, no load generator sharing the cores), each stage of the request path
   timed with perf_counter_ns and the thread's CPU time. CPU figures stay meaningful on a loaded machine;
   wall figures there include time waiting for a core. The plain wrapper runs through the same driver, so
   gateway total CPU - plain total CPU is the gateway's own cost per request.

Flags: ``--duration`` (s per wrk run, default 10), ``--repeats`` (interleaved rounds of every wrk run, default
3; figures are medians), ``--stage-requests`` (requests per in-process run, default 1000), ``--skip-detection``,
``--skip-pg``, ``--skip-wrk`` (stages only: no wrk needed). The default run takes about 8 minutes on a quiet
2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bastion as bn
from bastion.guard.detectors import _probs, build

BASTION = str(Path(sys.executable).with_name("bastion"))
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

PLAIN_APP = '''
import numpy as np, torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
torch.set_num_threads(1)
model = torch.jit.load(MODEL).eval()
app = FastAPI()

@app.post("/v2/models/model/infer")
async def infer(request: Request):
    body = await request.json()
    t = body["inputs"][0]
    x = torch.from_numpy(np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]))
    with torch.no_grad():
        p = model(x).softmax(1)
    return JSONResponse({"outputs": [{"name": "probabilities", "shape": list(p.shape), "datatype": "FP32",
                                      "data": p.flatten().tolist()}]})
'''

RATE_LUA = '''
wrk.method = "POST"
wrk.body = io.open(os.getenv("BODY_FILE")):read("*a")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_KEY")
local log = nil
function init(args)
  if os.getenv("LOG_FILE") ~= "" then log = io.open(os.getenv("LOG_FILE"), "a") end
end
-- Exponential think times (mean DELAY_MS): arrivals close to a Poisson stream. A constant delay keeps the
-- connections in lockstep, so requests arrive in bursts of --conns and the last of each burst queues.
local mean = tonumber(os.getenv("DELAY_MS"))
math.randomseed(tonumber(os.getenv("SEED") or "1"))
function delay() return math.floor(-mean * math.log(1 - math.random()) + 0.5) end
function response(status, headers, body)
  if log then log:write(status, " ", headers["x-audit-seq"] or "-", "\\n"); log:flush() end
end
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
        except Exception:
            time.sleep(0.5)
    raise RuntimeError("server did not become ready")


def parse_wrk(text: str) -> dict[str, float]:
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
    out: dict[str, float] = {}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            out[f"p{pct}_ms"] = float(m.group(1)) * units[m.group(2)]
    m = re.search(r"^\s+Latency\s+([\d.]+)(us|ms|s)\s", text, re.M)
    if m:
        out["mean_ms"] = float(m.group(1)) * units[m.group(2)]
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = float(m.group(1)) if m else 0.0
    return out


def run_wrk(port: int, path: str, work: Path, key: str, duration: int, rate: float, conns: int,
            log: Path | None = None, timeout_s: float | None = None, warmup_s: int = 2) -> tuple[dict[str, float], str]:
    """wrk at about ``rate`` requests/s: each connection waits DELAY between requests, so the rate is
    conns / (delay + latency). A ``warmup_s`` run first (not measured: TorchScript optimises its graph on the
    first calls, pools fill), then a second one measures the median latency, which DELAY is shortened by, so
    every server gets the same rate whatever its own latency (a fractional DELAY: the think times are
    drawn per request, so their mean need not be whole milliseconds)."""

    def once(seconds: int, delay_ms: float, log_file: Path | None) -> tuple[dict[str, float], str]:
        env = {**os.environ, "BODY_FILE": str(work / "body.json"), "API_KEY": key, "DELAY_MS": str(delay_ms),
               "LOG_FILE": str(log_file or "")}
        cmd = [*PIN["wrk"], "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(work / "rate.lua"), f"http://127.0.0.1:{port}{path}"]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s or seconds + 60)
        return parse_wrk(res.stdout), res.stdout

    period_ms = 1000 * conns / rate
    delay_ms = max(1.0, period_ms - 1)
    if warmup_s > 0:
        once(warmup_s, delay_ms, None)
        calib, _ = once(warmup_s, delay_ms, None)
        # the median, not the mean: one stall in a 2 s run would move the mean, and the rate with it
        if calib.get("p50_ms", 0) > 0:
            delay_ms = max(1.0, round(period_ms - calib["p50_ms"], 2))
    stats, text = once(duration, delay_ms, log)
    stats["delay_ms"] = delay_ms
    return stats, text


#: ``taskset`` prefixes with --pin: the load generator on one core, the server under test on the other
PIN: dict[str, list[str]] = {"wrk": [], "server": []}


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*PIN["server"], *cmd], env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def detection(model: bn.Model, ref: torch.Tensor, held: torch.Tensor, y: torch.Tensor, fpr: float,
              n_bb: int) -> dict[str, Any]:
    attacks: dict[str, torch.Tensor] = {}
    t0 = time.time()
    for name, attack, xs, ys, eps in (
        ("pgd", bn.attacks.PGD(norm="linf"), held, y, 0.2),
        ("square", bn.attacks.Square(norm="linf", queries=1000), held[:n_bb], y[:n_bb], 0.2),
        ("hopskipjump", bn.attacks.HopSkipJump(queries=1000), held[:n_bb], y[:n_bb], None),
    ):
        res = attack(model, xs, ys, epsilons=eps)
        adv = res.clipped[0]
        ok = res.success[0] if res.success.dim() > 1 else res.success
        attacks[name] = adv[ok.bool()]
        print(f"  {name}: {int(ok.sum())}/{len(xs)} successful ({time.time() - t0:.0f} s)", file=sys.stderr)
    rows: dict[str, Any] = {}
    for kind in ("mahalanobis", "knn", "squeeze", "margin", "gradnorm"):
        det = build({"kind": kind, "fpr": fpr}, (0.0, 1.0)).fit(model, ref)

        def rate(x: torch.Tensor, det: Any = det) -> float:
            if len(x) == 0:
                return float("nan")
            return float((det.score(model, x, _probs(model, x)) > det.threshold_).mean())

        rows[kind] = {"threshold": det.threshold_, "clean_fpr": rate(held),
                      **{f"{a}_detected": rate(x) for a, x in attacks.items()}}
    rows["_attacks"] = {a: len(x) for a, x in attacks.items()}
    return rows


def direct_latency(model: torch.jit.ScriptModule, x: torch.Tensor, n: int = 3000) -> dict[str, float]:
    times = []
    with torch.no_grad():
        for i in range(n):
            t = time.perf_counter()
            model(x[i % len(x)].unsqueeze(0)).softmax(1)
            times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench/out/guard.json"))
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of wrk runs; figures are medians over rounds")
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--fpr", type=float, default=0.01)
    ap.add_argument("--blackbox-examples", type=int, default=40)
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--skip-detection", action="store_true")
    ap.add_argument("--skip-wrk", action="store_true", help="only the in-process per-stage costs (no wrk needed)")
    ap.add_argument("--stage-requests", type=int, default=1000)
    ap.add_argument("--variants", default="", help="comma-separated gateway variants to run (default all), e.g. "
                                                   "sqlite_two_detectors,postgres_two_detectors")
    ap.add_argument("--skip-crash", action="store_true", help="no kill -9 run")
    ap.add_argument("--pin", action="store_true",
                    help="wrk on the first CPU, every server on the second (taskset), so the two never trade "
                         "cores mid-run (on this 2-core VM it did not narrow the spread between rounds)")
    args = ap.parse_args()
    if shutil.which("wrk") is None and not args.skip_wrk:
        sys.exit("bench/guard.py needs wrk (Debian: apt-get install wrk), or --skip-wrk for the stage costs only")
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and shutil.which("taskset") and len(cpus) >= 2:
        PIN["wrk"] = ["taskset", "-c", str(cpus[0])]
        PIN["server"] = ["taskset", "-c", str(cpus[1])]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = bn.datasets.digits()
    net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=16), d.x_train, d.y_train, epochs=15, lr=2e-3, seed=0)
    model = bn.wrap(net, (0.0, 1.0))
    ref, held, y_held = d.x_test[:300], d.x_test[300:], d.y_test[300:]
    result: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "device": f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
                              "command": " ".join(sys.argv), "load_generator": "wrk 4.1.0", "rate_target": args.rate,
                              "pinned": bool(PIN["wrk"])}
    if not args.skip_detection:
        print("detection ...", file=sys.stderr)
        result["detection"] = detection(model, ref, held, y_held, args.fpr, args.blackbox_examples)

    work = Path(tempfile.mkdtemp(prefix="bench-guard-"))
    scripted = torch.jit.script(net)
    scripted.save(str(work / "model.pt"))
    np.savez(work / "ref.npz", x=ref.numpy())
    x1 = held[:1]
    (work / "body.json").write_text(json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8],
                                                             "datatype": "FP32", "data": x1.flatten().tolist()}]}))
    (work / "rate.lua").write_text(RATE_LUA)
    (work / "plain_app.py").write_text(f"MODEL = {str(work / 'model.pt')!r}\n" + PLAIN_APP)
    (work / "none.yaml").write_text("defaults: {rate: 100000, burst: 100000}\n")
    two = ("defaults: {rate: 100000, burst: 100000}\ndetectors:\n"
           f"  - {{kind: margin, fpr: {args.fpr}, action: flag}}\n"
           f"  - {{kind: mahalanobis, fpr: {args.fpr}, action: flag}}\n")
    (work / "two.yaml").write_text(two)
    (work / "two_full.yaml").write_text(two + "audit_sync: full\n")
    subprocess.run([BASTION, "keygen", "--out", str(work / "audit")], check=True, capture_output=True)
    result["load_before"] = os.getloadavg()
    print("per-stage costs (in-process) ...", file=sys.stderr)
    result["stages"] = stage_costs(work, args)
    print(stage_table(result["stages"]), file=sys.stderr)
    if args.skip_wrk:
        result["load_after"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float))
        print(summary(result, args))
        return
    latency: dict[str, Any] = {"direct_model_call": direct_latency(scripted, held)}
    env1 = {"OMP_NUM_THREADS": "1"}

    def plain_run() -> dict[str, float]:
        port = free_port()
        proc = start([sys.executable, "-m", "uvicorn", "plain_app:app", "--port", str(port), "--log-level",
                      "warning", "--no-access-log"], {**env1, "PYTHONPATH": str(work)})
        try:
            wait_ready_plain(port, proc)
            stats, _ = run_wrk(port, "/v2/models/model/infer", work, "none", args.duration, args.rate, args.conns)
            return stats
        finally:
            stop(proc)

    pg_schema = f"bench_guard_{uuid.uuid4().hex[:8]}"
    variants = [("gateway_sqlite_no_detectors", f"sqlite:///{work / 'a.db'}", "none.yaml"),
                ("gateway_sqlite_two_detectors", f"sqlite:///{work / 'b.db'}", "two.yaml"),
                ("gateway_sqlite_full_sync_two_detectors", f"sqlite:///{work / 'c.db'}", "two_full.yaml")]
    if not args.skip_pg:
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        pg = f"{PG}?options=-csearch_path%3D{pg_schema}"
        variants += [("gateway_postgres_two_detectors", pg, "two.yaml"),
                     ("gateway_postgres_full_sync_two_detectors", pg, "two_full.yaml")]
    if args.variants:
        wanted = {v.strip() for v in args.variants.split(",") if v.strip()}
        unknown = wanted - {name.removeprefix("gateway_") for name, _, _ in variants}
        if unknown:
            sys.exit(f"unknown --variants {sorted(unknown)}: choose from "
                     f"{[name.removeprefix('gateway_') for name, _, _ in variants]}")
        variants = [v for v in variants if v[0].removeprefix("gateway_") in wanted]
    try:
        # Rounds interleave the plain wrapper and every gateway variant, so slow drift of the machine touches
        # all alike; each figure is the median over rounds, and added = the gateway's median minus the plain's.
        runs: dict[str, list[dict[str, float]]] = {}
        for r in range(args.repeats):
            runs.setdefault("plain_fastapi", []).append(plain_run())
            print(f"  round {r + 1} plain: {runs['plain_fastapi'][-1]}", file=sys.stderr)
            for name, db, cfg in variants:
                runs.setdefault(name, []).append(gateway_run(work, db, cfg, args))
                print(f"  round {r + 1} {name}: {runs[name][-1]}", file=sys.stderr)
        for name, rs in runs.items():
            latency[name] = {k: float(np.median([x[k] for x in rs])) for k in rs[0]}
            latency[name]["rounds"] = rs
        for name, _, _ in variants:
            for p in ("p50_ms", "p99_ms"):
                latency[name][f"added_{p}"] = latency[name][p] - latency["plain_fastapi"][p]
                latency[name][f"added_{p}_rounds"] = [g[p] - q[p] for g, q in zip(runs[name], runs["plain_fastapi"],
                                                                                   strict=True)]
        result["latency"] = latency
        if not args.skip_crash:
            result["crash"] = crash_run(work, f"sqlite:///{work / 'crash.db'}", args)
            print(f"  crash: {result['crash']}", file=sys.stderr)
    finally:
        if not args.skip_pg:
            import psycopg

            with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{pg_schema}" CASCADE')
    result["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(summary(result, args))


def stage_costs(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """In-process per-stage costs: the plain wrapper, the gateway without and with two detectors (SQLite)."""
    from bastion.guard import ServeOptions, build_gateway
    from bastion.guard.app import create_app
    from guard_stages import profile_gateway, profile_plain

    body = (work / "body.json").read_bytes()
    n = args.stage_requests
    ns: dict[str, Any] = {"MODEL": str(work / "model.pt")}
    exec(compile(PLAIN_APP, "plain_app", "exec"), ns)  # the wrk run's plain wrapper, same code
    out: dict[str, Any] = {"plain_fastapi": profile_plain(ns["app"], body, rate=args.rate, n=n)}
    for name, cfg in (("gateway_no_detectors", "none.yaml"), ("gateway_two_detectors", "two.yaml")):
        gw = build_gateway(ServeOptions(model=str(work / "model.pt"), db=f"sqlite:///{work / ('st-' + cfg)}.db",
                                        config=str(work / cfg), reference=str(work / "ref.npz"),
                                        signing_key=str(work / "audit")))
        key, _ = gw.keys.create("bench", ["infer"])
        try:
            out[name] = profile_gateway(gw, create_app(gw), key, body, rate=args.rate, n=n)
        finally:
            gw.audit.stop()
            gw.audit.engine.dispose()
        plain = out["plain_fastapi"]["stages"]["total"]
        total = out[name]["stages"]["total"]
        out[name]["added_cpu_p50_us"] = total["cpu_p50_us"] - plain["cpu_p50_us"]
        out[name]["added_cpu_mean_us"] = total["cpu_mean_us"] - plain["cpu_mean_us"]
    out["load"] = os.getloadavg()
    return out


def stage_table(st: dict[str, Any]) -> str:
    from guard_stages import table

    return table({k: v for k, v in st.items() if isinstance(v, dict)}) + f"\n(load average {st['load'][0]:.1f})"


def wait_ready_plain(port: int, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError("plain server exited")
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError("plain server did not start")


def _key(db: str) -> str:
    res = subprocess.run([BASTION, "keys", "create", "--db", db, "--name", "bench", "--scope", "infer"],
                         check=True, capture_output=True, text=True)
    return res.stdout.strip()


def _serve(work: Path, db: str, cfg: str, port: int) -> subprocess.Popen[bytes]:
    return start([BASTION, "serve", "--model", str(work / "model.pt"), "--db", db, "--reference",
                  str(work / "ref.npz"), "--config", str(work / cfg), "--signing-key", str(work / "audit"),
                  "--port", str(port)], {"OMP_NUM_THREADS": "1"})


def gateway_run(work: Path, db: str, cfg: str, args: argparse.Namespace) -> dict[str, float]:
    key = _key(db)
    port = free_port()
    proc = _serve(work, db, cfg, port)
    try:
        wait_ready(port, proc)
        stats, _ = run_wrk(port, "/v2/models/model/infer", work, key, args.duration, args.rate, args.conns)
    finally:
        stop(proc)
    return stats


def crash_run(work: Path, db: str, args: argparse.Namespace) -> dict[str, Any]:
    from bastion.guard.audit import _rows, verify
    from bastion.guard.db import make_engine
    from bastion.sign.keys import load_public_key

    key = _key(db)
    port = free_port()
    proc = _serve(work, db, "two.yaml", port)
    log = work / "crash.log"
    wait_ready(port, proc)
    wrk = subprocess.Popen([*PIN["wrk"], "wrk", "-t1", f"-c{args.conns}", "-d8s", "-s", str(work / "rate.lua"),
                            f"http://127.0.0.1:{port}/v2/models/model/infer"],
                           env={**os.environ, "BODY_FILE": str(work / "body.json"), "API_KEY": key,
                                "DELAY_MS": str(max(1, int(1000 * args.conns / args.rate) - 1)), "LOG_FILE": str(log)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wrk.wait(timeout=60)
    ok_seqs = []
    for line in log.read_text().splitlines():
        status, seq = line.split()
        if status.startswith("2"):
            ok_seqs.append(int(seq))
    engine = make_engine(db)
    stored = {r["seq"]: r["status"] for r in _rows(engine)}
    rep = verify(engine, load_public_key(work / "audit.pub"))
    missing = [s for s in ok_seqs if stored.get(s) != 200]
    return {"responses_2xx": len(ok_seqs), "records": len(stored), "missing_records_for_2xx": len(missing),
            "verify_ok": rep.ok, "problems": rep.problems[:3]}


def summary(r: dict[str, Any], args: argparse.Namespace) -> str:
    lat = r.get("latency", {})
    parts = []
    if lat:
        parts.append(f"medians of {args.repeats} interleaved rounds: plain FastAPI p50/p99 "
                     f"{lat['plain_fastapi']['p50_ms']:.2f}/{lat['plain_fastapi']['p99_ms']:.2f} ms at "
                     f"{lat['plain_fastapi']['rps']:.0f} req/s")
    for name in ("gateway_sqlite_no_detectors", "gateway_sqlite_two_detectors",
                 "gateway_sqlite_full_sync_two_detectors", "gateway_postgres_two_detectors",
                 "gateway_postgres_full_sync_two_detectors"):
        if name in lat:
            v = lat[name]
            rounds = "/".join(f"{x:+.2f}" for x in v.get("added_p99_ms_rounds", []))
            parts.append(f"{name.replace('gateway_', '')}: added p50 {v['added_p50_ms']:+.2f} ms, p99 "
                         f"{v['added_p99_ms']:+.2f} ms ({v['rps']:.0f} req/s; p99 rounds {rounds})")
    det = r.get("detection", {})
    if det:
        parts.append(f"detected at FPR {args.fpr:.2f} (clean FPR met; PGD/Square/HSJ): " + "; ".join(
            f"{k} {v['clean_fpr']:.2f} ({v['pgd_detected']:.2f}/{v['square_detected']:.2f}/"
            f"{v['hopskipjump_detected']:.2f})" for k, v in det.items() if not k.startswith("_")))
    c = r.get("crash")
    if c:
        parts.append(f"kill -9 under load: {c['missing_records_for_2xx']} of {c['responses_2xx']} 2xx without a "
                     f"record, verify {'passes' if c['verify_ok'] else 'FAILS'}")
    st = r.get("stages")
    if st:
        two = st["gateway_two_detectors"]["stages"]
        cost = ", ".join(f"{k} {two[k]['cpu_p50_us']:.0f}" for k in ("auth", "ratelimit", "parse_validate", "model",
                                                                      "detectors", "audit_enqueue", "framework"))
        parts.append(f"in-process at {args.rate:.0f} req/s, CPU µs p50 per stage (two detectors): {cost}; "
                     f"audit wait p50/p99 {two['audit_wait']['wall_p50_us'] / 1000:.2f}/"
                     f"{two['audit_wait']['wall_p99_us'] / 1000:.2f} ms; gateway CPU over plain wrapper p50 "
                     f"{st['gateway_no_detectors']['added_cpu_p50_us']:.0f} µs (no detectors), "
                     f"{st['gateway_two_detectors']['added_cpu_p50_us']:.0f} µs (two)")
        slow = [k for k, v in st.items() if isinstance(v, dict) and v["achieved_rps"] < 0.9 * args.rate]
        if slow:  # an open-loop driver above capacity: the waits are queueing, read the CPU figures
            parts.append(f"SATURATED below {args.rate:.0f} req/s in-process: " + ", ".join(
                f"{k} {st[k]['achieved_rps']:.0f} req/s" for k in slow))
    load = r.get("load_before", (float("nan"),))[0]
    return (f"| guard | {r['device']}, load {load:.1f}, ~{args.rate:.0f} req/s, digits CNN | " + " · ".join(parts)
            + f" | `{r['command']}` |")


if __name__ == "__main__":
    main()

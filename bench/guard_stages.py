"""Where the gateway's time goes, stage by stage, measured in-process (meaningful on a loaded machine).

The ASGI app is driven directly (synthetic scope/receive/send, no sockets, no load generator competing
for the two cores) at a fixed open-loop rate: request i starts at t0 + i/rate whether or not earlier
ones have finished, as wrk's clients do. Each stage of the request path is wrapped with a timer that
records its wall time (``time.perf_counter_ns``) and the CPU time of the thread running it
(``time.thread_time_ns``): wall minus CPU is time the thread was runnable but not running (other
processes on the machine, or the GIL held by the audit writer), so the CPU figures hold on a loaded
machine where the wall figures do not.

Stages wrapped in the live app: auth (Authenticator.authenticate), rate limit, parse/validate
(InputSpec.parse), model (Model.scores, outside detectors), each detector, audit enqueue and the wait for
the commit (AuditLog.append), and the commit itself (AuditLog._write: on the event loop with the default
``audit_sync: normal``, where its CPU is in the ``commit`` row and in no request's own stages; on the writer
thread with ``full``). ``framework`` is what is left of the request's wall time: routing, body read, JSON parsing,
pydantic validation, dependency injection, response serialisation, metrics. The isolated pieces of it are
timed separately (``micro``) on the same request body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

STAGES = ("auth", "ratelimit", "parse_validate", "model", "detectors", "audit_enqueue", "audit_wait", "framework",
          "total")


class _Clock:
    """Per-stage wall and CPU nanoseconds of the current request (the request path is synchronous between
    awaits, and the only await inside a stage is the audit wait, so one 'current request' slot suffices
    for the synchronous stages; the audit wait is recorded per request through its own wrapper)."""

    def __init__(self) -> None:
        self.current: dict[str, list[int]] | None = None
        self.depth = 0

    def wrap(self, name: str, fn: Callable[..., Any], nested_ok: bool = False) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            if self.current is None or (self.depth and not nested_ok):
                return fn(*a, **kw)  # outside a timed request, or inside a detector (its own stage)
            self.depth += 1
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            try:
                return fn(*a, **kw)
            finally:
                cur = self.current
                if cur is not None:
                    cur[name][0] += time.perf_counter_ns() - w0
                    cur[name][1] += time.thread_time_ns() - c0
                self.depth -= 1
        return timed


def _scope(path: str, key: str, n: int) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                        (b"authorization", f"Bearer {key}".encode()), (b"content-length", str(n).encode())],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080)}


def profile_gateway(gw: Any, app: Any, key: str, body: bytes, *, rate: float = 200.0, n: int = 2000,
                    warmup: int = 200, path: str = "/v2/models/model/infer") -> dict[str, Any]:
    """Drive ``app`` (built from ``gw``) at ``rate`` requests/s; per-stage wall/CPU percentiles in µs."""
    clock = _Clock()
    auth, limiter, spec, model, audit = gw.auth, gw.limiter, gw.spec, gw.model, gw.audit
    orig = {"auth": auth.authenticate, "ratelimit": limiter.check, "parse": spec.parse, "model": model.scores,
            "append": audit.append, "write": audit._write,
            "dets": [(d, d.score) for d in gw.detectors]}
    import bastion.guard.batching as app_module

    # the model call: detectors.forward (logits and features in one pass), as the micro-batcher makes it
    app_forward = getattr(app_module, "forward", None)
    if app_forward is not None:
        app_module.forward = clock.wrap("model", app_forward)  # type: ignore[attr-defined]
    auth.authenticate = clock.wrap("auth", orig["auth"])
    limiter.check = clock.wrap("ratelimit", orig["ratelimit"])
    object.__setattr__(spec, "parse", clock.wrap("parse_validate", orig["parse"]))  # a frozen dataclass
    model.scores = clock.wrap("model", orig["model"])
    for d, fn in orig["dets"]:
        d.score = clock.wrap("detectors", fn)
    commits: list[tuple[int, int, int]] = []  # (batch size, wall ns, cpu ns) of each durable commit

    def write(entries: list[dict[str, Any]], **kw: Any) -> list[int]:
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        out = orig["write"](entries, **kw)
        commits.append((len(entries), time.perf_counter_ns() - w0, time.thread_time_ns() - c0))
        return out

    class _TimedAppend:
        """Awaitable around ``AuditLog.append``: its synchronous part (building and queueing the record)
        is the enqueue, the rest (until the durable commit wakes it) is the wait."""

        def __init__(self, entry: dict[str, Any], *args: Any) -> None:
            self.entry = entry
            self.args = args

        def __await__(self) -> Any:
            cur = clock.current
            if cur is None:  # another request's end cleared the slot: this append goes untimed
                return (yield from orig["append"](self.entry, *self.args).__await__())
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            it = orig["append"](self.entry, *self.args).__await__()
            try:
                y = it.send(None)
            except StopIteration as stop:
                cur["audit_enqueue"][0] += time.perf_counter_ns() - w0
                cur["audit_enqueue"][1] += time.thread_time_ns() - c0
                return stop.value
            w1, c1 = time.perf_counter_ns(), time.thread_time_ns()
            cur["audit_enqueue"][0] += w1 - w0
            cur["audit_enqueue"][1] += c1 - c0
            while True:
                try:
                    sent = yield y
                except BaseException as exc:  # cancellation: pass it on
                    y = it.throw(exc)
                    continue
                try:
                    y = it.send(sent)
                except StopIteration as stop:
                    clock.current = cur  # other requests ran meanwhile; this one continues
                    cur["audit_wait"][0] += time.perf_counter_ns() - w1
                    # the loop thread's CPU while this request waited belongs to other requests: kept
                    # aside so it is not counted as this request's framework time
                    cur["_loop_cpu_in_wait"][1] += time.thread_time_ns() - c1
                    return stop.value

    def append(entry: dict[str, Any], *args: Any) -> Any:
        return _TimedAppend(entry, *args)

    audit._write = write
    audit.append = append
    per_request: list[dict[str, list[int]]] = []
    statuses: dict[int, int] = defaultdict(int)

    async def one(i: int, t_start: float) -> None:
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        stages: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        sent = [False]
        status = [0]

        async def receive() -> dict[str, Any]:
            if sent[0]:
                await asyncio.sleep(3600)
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}

        done = asyncio.Event()

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            elif msg["type"] == "http.response.body" and not msg.get("more_body"):
                done.set()

        clock.current = stages
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        await app(_scope(path, key, len(body)), receive, send)
        wall = time.perf_counter_ns() - w0
        cpu = time.thread_time_ns() - c0
        clock.current = None
        statuses[status[0]] += 1
        if i >= warmup:
            stages["total"] = [wall, cpu]
            per_request.append(stages)

    async def drive() -> float:
        t0 = time.perf_counter() + 0.05
        tasks = [asyncio.ensure_future(one(i, t0 + i / rate)) for i in range(n + warmup)]
        await asyncio.gather(*tasks)
        return time.perf_counter() - t0

    try:
        elapsed = asyncio.run(drive())
    finally:
        auth.authenticate, limiter.check, model.scores = orig["auth"], orig["ratelimit"], orig["model"]
        object.__setattr__(spec, "parse", orig["parse"])
        audit.append, audit._write = orig["append"], orig["write"]
        if app_forward is not None:
            app_module.forward = app_forward  # type: ignore[attr-defined]
        for d, fn in orig["dets"]:
            d.score = fn
    return summarise(per_request, commits, statuses, elapsed, n + warmup)


def summarise(per_request: list[dict[str, list[int]]], commits: list[tuple[int, int, int]],
              statuses: dict[int, int], elapsed: float, sent: int) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": len(per_request), "achieved_rps": sent / elapsed,
                           "statuses": {str(k): v for k, v in sorted(statuses.items())}, "stages": {}}
    for s in STAGES:
        if s == "framework":
            continue
        wall = np.array([r[s][0] for r in per_request] or [0]) / 1e3
        cpu = np.array([r[s][1] for r in per_request] or [0]) / 1e3
        out["stages"][s] = _pcts(wall, cpu)
    known = [k for k in STAGES if k not in ("framework", "total", "audit_wait")]
    fw_wall = np.array([r["total"][0] - sum(r[k][0] for k in known if k in r) - r["audit_wait"][0]
                        for r in per_request]) / 1e3
    # other requests interleave with this one only at the audit wait, whose loop CPU is excluded
    fw_cpu = np.array([r["total"][1] - sum(r[k][1] for k in known if k in r) - r["_loop_cpu_in_wait"][1]
                       for r in per_request]) / 1e3
    out["stages"]["framework"] = _pcts(fw_wall, fw_cpu)
    # the request's own CPU on the loop thread (what other requests used while it waited excluded)
    own = np.array([r["total"][1] - r["_loop_cpu_in_wait"][1] for r in per_request]) / 1e3
    out["stages"]["total"] = _pcts(np.array([r["total"][0] for r in per_request]) / 1e3, own)
    if commits:
        b = np.array([c[0] for c in commits])
        out["commits"] = {"count": len(commits), "mean_batch": float(b.mean()), "max_batch": int(b.max()),
                          **{f"commit_{k}": v for k, v in _pcts(np.array([c[1] for c in commits]) / 1e3,
                                                               np.array([c[2] for c in commits]) / 1e3).items()}}
    return out


def _pcts(wall: np.ndarray, cpu: np.ndarray) -> dict[str, float]:
    return {"wall_p50_us": float(np.percentile(wall, 50)), "wall_p99_us": float(np.percentile(wall, 99)),
            "wall_mean_us": float(wall.mean()), "cpu_p50_us": float(np.percentile(cpu, 50)),
            "cpu_p99_us": float(np.percentile(cpu, 99)), "cpu_mean_us": float(cpu.mean())}


def micro(body: bytes, gw: Any, n: int = 2000) -> dict[str, float]:
    """Median µs of the framework's pieces, each on its own, on the benchmark's request body."""
    from fastapi.responses import JSONResponse

    from bastion.guard.schemas import InferRequest

    out: dict[str, float] = {}

    def t(name: str, fn: Callable[[], Any]) -> None:
        for _ in range(50):
            fn()
        ts = []
        for _ in range(n):
            c0 = time.thread_time_ns()
            fn()
            ts.append(time.thread_time_ns() - c0)
        out[name] = float(np.median(ts)) / 1e3

    parsed = json.loads(body)
    t("json_loads", lambda: json.loads(body))
    try:
        import orjson

        t("orjson_loads", lambda: orjson.loads(body))
    except ImportError:
        pass
    t("pydantic_validate", lambda: InferRequest.model_validate(parsed))
    t("pydantic_validate_json", lambda: InferRequest.model_validate_json(body))
    resp = {"model_name": "model", "model_version": "abc", "id": "x" * 32,
            "outputs": [{"name": "probabilities", "shape": [1, 10], "datatype": "FP32", "data": [0.1] * 10},
                        {"name": "label", "shape": [1], "datatype": "INT64", "data": [3]}],
            "parameters": {"audit_seq": 1, "decision": "allow", "flags": [], "output_policy": {"kind": "full"}}}
    t("jsonresponse_render", lambda: JSONResponse(resp))
    return out


def profile_plain(app: Any, body: bytes, *, rate: float = 200.0, n: int = 2000, warmup: int = 200,
                  path: str = "/v2/models/model/infer") -> dict[str, Any]:
    """The same driver on a plain FastAPI wrapper of the model: its whole request, wall and CPU (µs)."""
    walls: list[int] = []
    cpus: list[int] = []
    statuses: dict[int, int] = defaultdict(int)

    async def one(i: int, t_start: float) -> None:
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        sent = [False]
        status = [0]

        async def receive() -> dict[str, Any]:
            if sent[0]:
                await asyncio.sleep(3600)
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]

        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        await app(_scope(path, "none", len(body)), receive, send)  # no await inside: CPU is this request's
        wall, cpu = time.perf_counter_ns() - w0, time.thread_time_ns() - c0
        statuses[status[0]] += 1
        if i >= warmup:
            walls.append(wall)
            cpus.append(cpu)

    async def drive() -> float:
        t0 = time.perf_counter() + 0.05
        await asyncio.gather(*(one(i, t0 + i / rate) for i in range(n + warmup)))
        return time.perf_counter() - t0

    elapsed = asyncio.run(drive())
    return {"requests": len(walls), "achieved_rps": (n + warmup) / elapsed,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "stages": {"total": _pcts(np.array(walls) / 1e3, np.array(cpus) / 1e3)}}


def table(results: dict[str, dict[str, Any]]) -> str:
    """Per-stage CPU p50 / p99 (µs) of each configuration, side by side, and the wall figures of the total."""
    names = list(results)
    head = f"{'stage (µs, CPU p50/p99)':26s}" + "".join(f"{n[:24]:>26s}" for n in names)
    lines = [head, "-" * len(head)]
    for s in STAGES:
        row = f"{s:26s}"
        for n in names:
            v = results[n]["stages"].get(s)
            if v is None:
                row += f"{'-':>26s}"
            elif s == "audit_wait":
                row += f"{'wall ' + format(v['wall_p50_us'], '.0f') + ' / ' + format(v['wall_p99_us'], '.0f'):>26s}"
            else:
                row += f"{format(v['cpu_p50_us'], '.0f') + ' / ' + format(v['cpu_p99_us'], '.0f'):>26s}"
        lines.append(row)
    row = f"{'total wall p50/p99':26s}"
    for n in names:
        v = results[n]["stages"]["total"]
        row += f"{format(v['wall_p50_us'], '.0f') + ' / ' + format(v['wall_p99_us'], '.0f'):>26s}"
    lines.append(row)
    row = f"{'commit CPU p50 (batch)':26s}"
    for n in names:
        c = results[n].get("commits")
        cell = "-" if c is None else f"{c['commit_cpu_p50_us']:.0f} ({c['mean_batch']:.1f})"
        row += f"{cell:>26s}"
    lines.append(row)
    row = f"{'achieved req/s':26s}"
    for n in names:
        row += f"{results[n]['achieved_rps']:>26.0f}"
    lines.append(row)
    return "\n".join(lines)

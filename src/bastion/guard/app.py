"""The gateway: a FastAPI app in which every inference request is authenticated, rate-limited, validated,
screened by detectors, answered through the key's output policy, and audited before it is answered.

Request path cost is kept off thread pools: handlers are ``async`` and run the (small) model inline; only
the audit writer is a thread, shared by all requests of the process (group commit, see :mod:`.audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydantic
import pydantic_core
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from bastion.core.adapters import Model
from bastion.guard.asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    headers_of,
    infer_model_name,
    read_body,
    send_json,
    too_large,
)
from bastion.guard.audit import AuditLog
from bastion.guard.batching import MicroBatcher
from bastion.guard.config import GuardConfig
from bastion.guard.detectors import Detector, remember, to_probs
from bastion.guard.keys import Authenticator, KeyInfo, KeyStore
from bastion.guard.live import Live
from bastion.guard.ratelimit import Limit, RateLimiter
from bastion.guard.schemas import ERRORS, InferRequest, InferResponse, ModelMetadata
from bastion.guard.spec import InputSpec, RequestRejected

#: the longest a request waits for the GIL while a gateway thread (audit writer, monitors) holds it
SWITCH_INTERVAL_S = 0.0005


@dataclass
class Gateway:
    """Everything one worker needs to serve: the model and the guards around it."""

    model: Model
    spec: InputSpec
    config: GuardConfig
    keys: KeyStore
    limiter: RateLimiter
    audit: AuditLog
    model_name: str
    model_version: str
    detectors: list[Detector] = field(default_factory=list)
    auth: Authenticator | None = None
    live: Live | None = None  # monitors, playbooks, serving state, registry following (see .live)
    batcher: MicroBatcher = field(default_factory=MicroBatcher)

    def __post_init__(self) -> None:
        if self.auth is None:
            self.auth = Authenticator(self.keys)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("bastion_guard_requests", "Inference requests by decision", ["decision"],
                                registry=self.registry)
        self.latency = Histogram("bastion_guard_latency_seconds", "Time in the gateway per inference request",
                                 registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.detections = Counter("bastion_guard_detections", "Detector firings by detector and action",
                                  ["detector", "action"], registry=self.registry)


class _JSON(JSONResponse):
    """JSONResponse rendered by pydantic-core's serialiser: a third of the time of ``json.dumps`` on an
    inference answer, with no new dependency (FastAPI already needs pydantic)."""

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


class _BodyLimit:
    """Refuse bodies over the limit from Content-Length, before anything is read or parsed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            oversize = too_large(headers_of(scope, b"content-length")[0], self.limit)
            if oversize is not None:
                await send_json(send, 413, oversize.body())
                return
        await self.app(scope, receive, send)


def input_digest(x: np.ndarray) -> str:
    """SHA-256 of the canonical tensor bytes: little-endian float32, C order, shape prefixed."""
    arr = np.ascontiguousarray(x, dtype="<f4")
    return hashlib.sha256(json.dumps(list(arr.shape)).encode() + b"\n" + arr.tobytes()).hexdigest()


def _presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer ...``, else ``X-API-Key``."""
    if authorization is not None and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return api_key


@dataclass
class _Call:
    """What the audit record of one inference request needs, gathered as the request goes."""

    t0: float
    client: str
    key_id: str | None = None
    request_id: str | None = None
    model_version: str | None = None
    digest: str | None = None
    input_data: str | None = None
    scores: dict[str, float] | None = None


class _AuditDown(Exception):
    """The audit log could not commit this request's record: it must not be answered (503)."""


class GatewayApp(FastAPI):
    """The gateway's FastAPI app; ``POST /v2/models/{name}/infer`` is answered before FastAPI's middleware
    and router see it (see :mod:`.asgi`), by the same code the documented FastAPI route runs."""

    fast_infer: Callable[[str, Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.fast_infer is not None:
            name = infer_model_name(scope["path"])
            if name is not None:
                await self.fast_infer(name, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _malformed(errors: list[Any]) -> RequestRejected:
    """422 naming the first field pydantic refused, what was given and what was expected."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field_name = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".") or "body"
    given = first.get("input")
    return RequestRejected(422, "malformed request", field_name, "missing" if first.get("type") == "missing"
                           else json.dumps(given, default=str)[:200], first.get("msg", "a valid request body"))


def create_app(gw: Gateway) -> GatewayApp:
    """The FastAPI app serving ``gw`` (KServe v2 endpoints, /metrics, OpenAPI at /openapi.json)."""
    # imported here, not per request, and not at module import (the defenses package is large)
    from bastion.defenses.coarsening import OutputPolicy, apply_output_policy

    metrics = _Metrics()
    # The audit writer (and the live monitors) are threads: at Python's default 5 ms switch interval a
    # request that is ready to run can wait 5 ms for the GIL while the writer hashes a batch. 0.5 ms bounds
    # that wait, for a few more GIL hand-overs per second.
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    gw.audit.start()
    if gw.live is not None:
        gw.live.start()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything loaded at start-up (torch, the model, SQLAlchemy, FastAPI) lives as long as the
        # process: moved out of the collector's view, a full collection no longer walks ~400k objects
        # (tens of milliseconds with every request in flight waiting on it).
        gc.collect()
        gc.freeze()
        yield
        if gw.live is not None:
            gw.live.stop()
        gw.audit.stop()

    app = GatewayApp(title="Bastion guarded inference gateway", version="2", lifespan=lifespan,
                     description="Open Inference Protocol (KServe v2) with API keys, rate limits, input validation, "
                                 "detectors and a tamper-evident audit log.")
    app.state.gateway = gw

    # inference requests this process is serving now: one that is alone does not wait for the end of the
    # event loop's turn to batch its forward pass or its audit commit with others (see .turns)
    in_flight = [0]

    def alone() -> bool:
        return in_flight[0] <= 1

    policies: dict[int, tuple[dict[str, Any], OutputPolicy, str]] = {}

    def policy_of(spec: dict[str, Any]) -> tuple[OutputPolicy, str]:
        """The policy a key's (or the config's) policy dict describes, built once per dict object: a key's
        dict is the same object until the key row changes (see keys.Authenticator)."""
        hit = policies.get(id(spec))
        if hit is None or hit[0] is not spec:
            policy = OutputPolicy(**spec)
            if len(policies) > 10_000:
                policies.clear()
            hit = policies[id(spec)] = (spec, policy, policy.describe())
        return hit[1], hit[2]

    async def record(call: _Call, status: int, decision: str, reason: str | None = None,
                     output: Any = None) -> int:
        entry = {"request_id": call.request_id or uuid.uuid4().hex, "key_id": call.key_id, "client": call.client,
                 "model_name": gw.model_name, "model_version": call.model_version or gw.model_version,
                 "input_sha256": call.digest, "input_data": call.input_data,
                 # pydantic-core's serialiser: compact JSON like json.dumps(separators=(",", ":")), at a
                 # fifth of the cost; the chain hashes the stored text, whichever serialiser wrote it
                 "output": None if output is None else pydantic_core.to_json(output).decode(),
                 "decision": decision, "status": status, "reason": reason,
                 "scores": pydantic_core.to_json(call.scores).decode() if call.scores else None,
                 "latency_ms": (time.perf_counter() - call.t0) * 1000}
        metrics.requests.labels(decision).inc()
        return await gw.audit.append(entry, alone())

    async def refuse(call: _Call, exc: RequestRejected) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The answer to a refused inference request, whose refusal is audited like an answer."""
        headers = dict(exc.headers)
        try:
            seq = await record(call, exc.status, _decision(exc), exc.reason or exc.error)
        except Exception:
            return 503, {"error": "audit log unavailable"}, {}
        headers["X-Audit-Seq"] = str(seq)
        return exc.status, exc.body(), headers

    @app.exception_handler(RequestRejected)
    async def rejected(request: Request, exc: RequestRejected) -> JSONResponse:
        call = getattr(request.state, "call", None)
        if call is None:  # not an inference request: nothing to audit
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        status, body, headers = await refuse(call, exc)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await rejected(request, _malformed(list(exc.errors())))

    def check_key(presented: str | None, scope: str, call: _Call | None = None) -> KeyInfo:
        if not presented:
            raise RequestRejected(401, "missing API key", "Authorization", "no key",
                                  "'Authorization: Bearer bst_...' or 'X-API-Key: bst_...'",
                                  headers={"WWW-Authenticate": "Bearer"})
        assert gw.auth is not None
        info = gw.auth.authenticate(presented)
        if info is None:
            raise RequestRejected(401, "invalid or revoked API key", "Authorization", "an unknown key",
                                  "a current key from `bastion keys create`", headers={"WWW-Authenticate": "Bearer"})
        if call is not None:
            call.key_id = info.key_id
        if scope not in info.scopes and "admin" not in info.scopes:
            raise RequestRejected(403, "key lacks the scope", "scope", ",".join(info.scopes), scope, reason="scope")
        return info

    def require(scope: str) -> Callable[[Request], Awaitable[KeyInfo]]:
        # async: FastAPI runs a sync dependency in its thread pool, a hop per request.
        async def dependency(request: Request) -> KeyInfo:
            call = None
            if request.method == "POST" and infer_model_name(request.url.path) is not None:
                call = request.state.call = _Call(time.perf_counter(), request.client.host if request.client else "")
            return check_key(_presented_key(request.headers.get("authorization"), request.headers.get("x-api-key")),
                             scope, call)
        return dependency

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"])
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2", tags=["health"])
    async def server_metadata() -> dict[str, Any]:
        return {"name": "bastion-guard", "version": "2", "extensions": ["bastion-audit"]}

    def _check_name(name: str) -> None:
        if name != gw.model_name:
            raise RequestRejected(404, "unknown model", "model_name", name, gw.model_name)

    @app.get("/v2/models/{name}", response_model=ModelMetadata, responses=ERRORS, tags=["inference"])
    async def metadata(name: str, key: KeyInfo = Depends(require("infer"))) -> dict[str, Any]:
        _check_name(name)
        return {"name": gw.model_name, "versions": [gw.model_version], "platform": gw.model.kind,
                "inputs": [gw.spec.metadata()],
                "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, gw.model.num_classes or -1]},
                            {"name": "label", "datatype": "INT64", "shape": [-1]}],
                "parameters": {"output_policy": key.output_policy or gw.config.output_policy,
                               "detectors": [d.describe() for d in gw.detectors]}}

    async def answer(name: str, body: InferRequest, call: _Call, key: KeyInfo) -> tuple[dict[str, Any], int]:
        """The inference answer and its audit sequence number, or RequestRejected / _AuditDown."""
        call.request_id = body.id or uuid.uuid4().hex
        _check_name(name)
        # One read of everything that can change under us (a promotion swaps the model, a playbook routes or
        # takes it offline): this request is answered by one consistent set.
        model, detectors, version, live = gw.model, gw.detectors, gw.model_version, gw.live
        throttle = None
        if live is not None:
            view = live.view
            if view.mode == "offline":
                raise RequestRejected(503, "model offline", "model_name", name,
                                      "a model that is in service (taken offline by a response playbook)",
                                      reason=f"offline:{view.incident or ''}",
                                      headers={"Retry-After": str(view.retry_after)})
            if view.mode == "routed":
                slot = live.fallbacks.get(view.route_to or "")
                if slot is None:  # never answer from the model a playbook took out of service
                    raise RequestRejected(503, "fallback model not loaded yet", "model_name", name,
                                          f"the fallback {view.route_to} (loading or refused: see /monitor/status)",
                                          reason="fallback-unavailable", headers={"Retry-After": "1"})
                model, detectors, version = slot.model, slot.detectors, slot.version
            throttle = view.throttles.get(key.key_id)
        call.model_version = version
        cost = body.inputs[0].shape[0] if body.inputs and body.inputs[0].shape else 1
        limit = Limit(key.rate if key.rate is not None else gw.config.rate,
                      key.burst if key.burst is not None else gw.config.burst,
                      key.daily_budget if key.daily_budget is not None else gw.config.daily_budget)
        if throttle is not None:
            # a playbook's throttle only ever lowers the key's own limit
            limit = Limit(throttle if limit.rate is None else min(limit.rate, throttle),
                          max(1, int(throttle)) if limit.burst is None else min(limit.burst, max(1, int(throttle))),
                          limit.daily_budget)
        verdict = gw.limiter.check(key.key_id, limit, max(1, min(int(cost), gw.spec.max_batch)))
        if not verdict.allowed:
            raise RequestRejected(429, "too many requests", "key", key.key_id,
                                  f"at most {limit.rate}/s (burst {limit.burst})" if verdict.reason == "rate-limit"
                                  else f"at most {limit.daily_budget} examples per UTC day", reason=verdict.reason,
                                  headers={"Retry-After": str(max(1, int(np.ceil(verdict.retry_after))))})
        arr = gw.spec.parse(body.inputs)
        call.digest = input_digest(arr)
        if gw.config.store_inputs:
            call.input_data = json.dumps(arr.tolist())
        x = torch.from_numpy(arr)
        # model.scores(x) with the penultimate features for feature-space detectors (one forward pass), shared
        # with the other requests that reach this point in the same turn of the event loop
        scores, feats = await gw.batcher.scores(model, x, alone())
        remember(model, x, feats)
        probs = to_probs(scores)
        fired: list[Detector] = []
        all_scores: dict[str, float] = {}
        for det in detectors:
            s = det.score(model, x, probs, key.key_id)
            top = float(s.max())
            all_scores[det.kind] = round(top, 6)
            if det.fires(s, top):
                fired.append(det)
                metrics.detections.labels(det.kind, det.action).inc()
                if live is not None:
                    live.detector_fired(det.kind, key.key_id)
        call.scores = all_scores
        if live is not None and model is gw.model:
            # windows hold what the primary model answered: that is what its baseline describes
            live.observe(key.key_id, arr, probs, version)
        rejecting = [d for d in fired if d.action == "reject"]
        if rejecting:
            raise RequestRejected(403, "input rejected by a detector", reason=f"detector:{rejecting[0].kind}")
        policy, described = policy_of(key.output_policy or gw.config.output_policy)
        shown = probs if policy.kind == "full" else apply_output_policy(probs, policy)
        labels = probs.argmax(1).tolist()
        flags = [d.kind for d in fired if d.action == "flag"]
        decision = "flag" if flags else "allow"
        data = shown.flatten().tolist()  # Python floats already (float32 rows widened, as json would print them)
        output = {"label": labels, "probabilities": data}
        try:
            seq = await record(call, 200, decision, ",".join(flags) or None, output)
        except Exception as exc:
            raise _AuditDown from exc
        metrics.latency.observe(time.perf_counter() - call.t0)
        resp = {"model_name": gw.model_name, "model_version": version, "id": call.request_id,
                "outputs": [{"name": "probabilities", "shape": list(shown.shape), "datatype": "FP32", "data": data},
                            {"name": "label", "shape": [len(labels)], "datatype": "INT64", "data": labels}],
                "parameters": {"audit_seq": seq, "decision": decision, "flags": flags,
                               "output_policy": described}}
        return resp, seq

    @app.post("/v2/models/{name}/infer", response_model=InferResponse, responses=ERRORS, tags=["inference"])
    async def infer(name: str, body: InferRequest, request: Request,
                    key: KeyInfo = Depends(require("infer"))) -> JSONResponse:
        """Documents the route for the OpenAPI document; a running gateway answers it in ``fast_infer``."""
        try:
            resp, seq = await answer(name, body, request.state.call, key)
        except _AuditDown:
            return JSONResponse({"error": "audit log unavailable"}, status_code=503)
        return _JSON(resp, headers={"X-Audit-Seq": str(seq)})

    limit = gw.config.max_body_bytes

    async def fast_infer(name: str, scope: Scope, receive: Receive, send: Send) -> None:
        """The infer route as the server runs it: the body's declared size is checked first, then the key
        (before the body is read), then the body is validated by pydantic-core straight from its bytes."""
        in_flight[0] += 1
        try:
            # one yield to the loop first: requests that arrived together (their tasks were created in the
            # same turn) all count themselves in flight before any of them reaches the model, so they share
            # a forward pass and a commit; a request that finds itself alone then waits for no turn at all
            await asyncio.sleep(0)
            await _fast_infer(name, scope, receive, send)
        finally:
            in_flight[0] -= 1

    async def _fast_infer(name: str, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        call = _Call(time.perf_counter(), client[0] if client else "")
        authorization, api_key, length = headers_of(scope, b"authorization", b"x-api-key", b"content-length")
        oversize = too_large(length, limit)
        if oversize is not None:  # before anything is read, parsed or audited, as for every other route
            await send_json(send, 413, oversize.body())
            return
        presented = _presented_key(None if authorization is None else authorization.decode("latin-1"),
                                   None if api_key is None else api_key.decode("latin-1"))
        try:
            try:
                key = check_key(presented, "infer", call)
                raw = await read_body(receive, limit)
                try:
                    body = InferRequest.model_validate_json(raw or b"null")
                except pydantic.ValidationError as exc:
                    raise _malformed(list(exc.errors())) from None
                resp, seq = await answer(name, body, call, key)
            except RequestRejected as exc:
                status, content, headers = await refuse(call, exc)
                await send_json(send, status, content, headers.items())
                return
            except _AuditDown:
                await send_json(send, 503, {"error": "audit log unavailable"})
                return
            await send_json(send, 200, resp, (("X-Audit-Seq", str(seq)),))
        except ClientGone:
            return
        except Exception:
            # what Starlette's ServerErrorMiddleware does for the other routes: a 500 without details, and
            # the exception on to the server, which logs it
            with contextlib.suppress(Exception):
                await send_json(send, 500, {"error": "internal server error"})
            raise

    app.fast_infer = fast_infer

    @app.get("/metrics", tags=["health"])
    async def prometheus() -> Response:
        body = generate_latest(metrics.registry)
        if gw.live is not None:
            body += generate_latest(gw.live.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/monitor/status", responses=ERRORS, tags=["monitor"])
    async def monitor_status(_key: KeyInfo = Depends(require("read-audit"))) -> dict[str, Any]:
        """This worker's live monitors, serving state, fallbacks and the incidents it raised."""
        if gw.live is None:
            return {"model": gw.model_name, "version": gw.model_version, "serving": {"mode": "normal"},
                    "monitor": None, "playbooks": []}
        return gw.live.status()

    @app.get("/ui", tags=["monitor"], include_in_schema=False)
    async def status_page() -> Response:
        from bastion.guard.ui import render

        return Response(render(gw), media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                            "img-src data:; base-uri 'none'; form-action 'none'",
                                 "Cache-Control": "no-store"})

    @app.get("/audit/records", responses=ERRORS, tags=["audit"])
    async def audit_records(since: str | None = None, limit: int = 100,
                            _key: KeyInfo = Depends(require("read-audit"))) -> list[dict[str, Any]]:
        from bastion.errors import InputError
        from bastion.guard.audit import _rows, normalise_time

        try:
            since = None if since is None else normalise_time(since)
        except InputError:
            raise RequestRejected(400, "invalid query", "since", since, "an ISO 8601 time") from None
        out = []
        for row in _rows(gw.audit.engine, since):
            out.append(row)
            if len(out) >= max(1, min(limit, 10_000)):
                break
        return out

    @app.post("/admin/keys/{key_id}/revoke", responses=ERRORS, tags=["admin"])
    async def revoke(key_id: str, _key: KeyInfo = Depends(require("admin"))) -> dict[str, Any]:
        from bastion.errors import InputError

        try:
            return gw.keys.revoke(key_id).to_dict()
        except InputError:
            raise RequestRejected(404, "unknown key", "key_id", key_id, "the id of an existing key") from None

    app.add_middleware(_BodyLimit, limit=gw.config.max_body_bytes)
    return app


def _decision(exc: RequestRejected) -> str:
    return {400: "invalid", 401: "unauthenticated", 403: "reject" if (exc.reason or "").startswith("detector")
            else "forbidden", 404: "unknown-model", 413: "invalid", 422: "invalid", 429: "throttled",
            503: "offline" if (exc.reason or "").startswith("offline") else "unavailable"}.get(
                exc.status, "error")

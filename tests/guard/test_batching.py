"""Micro-batching: concurrent requests share one forward pass and each gets exactly its own answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import torch
from _guard_helpers import batch

import bastion as bn
from bastion.guard import create_app


async def _post(app: Any, path: str, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """One request straight through the ASGI app (no sockets: the requests of a gather reach the model
    stage in the same turn of the event loop, as concurrent connections do in the server)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"test"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {key}".encode()), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080)}
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]
        elif msg["type"] == "http.response.body":
            chunks.append(msg.get("body", b""))

    await app(scope, receive, send)
    return status, json.loads(b"".join(chunks))


def _bodies(digits: bn.datasets.Dataset, sizes: list[int]) -> list[bytes]:
    out, start = [], 300
    for i, n in enumerate(sizes):
        out.append(json.dumps({**batch(digits.x_test[start:start + n]), "id": f"r{i}"}).encode())
        start += n
    return out


def _probs(resp: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(resp["outputs"][0]["data"])


def test_concurrent_requests_share_one_pass(make_gateway: Any, tmp_path: Path, digits: bn.datasets.Dataset) -> None:
    config = {"detectors": [{"kind": "mahalanobis", "fpr": 0.05, "action": "flag"},
                            {"kind": "margin", "fpr": 0.05, "action": "flag"}]}
    gw = make_gateway(f"sqlite:///{tmp_path / 'b.db'}", config)
    key, _ = gw.keys.create("batch", ["infer"])
    app = create_app(gw)
    sizes = [1, 3, 1, 2, 1, 4]
    bodies = _bodies(digits, sizes)
    url = "/v2/models/digits/infer"

    async def alone() -> list[tuple[int, dict[str, Any]]]:
        return [await _post(app, url, key, b) for b in bodies]

    async def together() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*(_post(app, url, key, b) for b in bodies)))

    single = asyncio.run(alone())
    passes = gw.batcher.passes
    assert passes == len(bodies)                                   # one pass per request when they come one by one
    joint = asyncio.run(together())
    assert gw.batcher.passes == passes + 1                         # six concurrent requests: one forward pass
    for (s1, r1), (s2, r2), n in zip(single, joint, sizes, strict=True):
        assert s1 == s2 == 200
        assert _probs(r2).shape == (n * 10,)
        assert torch.allclose(_probs(r1), _probs(r2), atol=1e-5)  # each request gets its own rows
        assert r1["outputs"][1]["data"] == r2["outputs"][1]["data"]
        assert r1["parameters"]["flags"] == r2["parameters"]["flags"]
    # the detectors saw each request's own features: its audit record's scores match the one-by-one run
    from bastion.guard.audit import _rows

    rows = list(_rows(gw.audit.engine))
    assert len(rows) == 2 * len(bodies)
    first = {r["request_id"]: json.loads(r["scores"]) for r in rows[:len(bodies)]}
    second = {r["request_id"]: json.loads(r["scores"]) for r in rows[len(bodies):]}
    assert first.keys() == second.keys() == {f"r{i}" for i in range(len(bodies))}
    for rid, a in first.items():
        b = second[rid]
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])) for k in a), (rid, a, b)


def test_a_model_that_takes_one_request_at_a_time_is_called_per_request(
        make_gateway: Any, tmp_path: Path, digits: bn.datasets.Dataset, monkeypatch: Any) -> None:
    import bastion.guard.batching as batching

    gw = make_gateway(f"sqlite:///{tmp_path / 'one.db'}")
    key, _ = gw.keys.create("one", ["infer"])
    real = batching.forward
    seen: list[int] = []

    def fixed_batch(model: Any, x: torch.Tensor) -> torch.Tensor:  # an ONNX graph with a fixed batch dimension
        seen.append(x.shape[0])
        if x.shape[0] > 4:
            raise RuntimeError("this graph takes at most 4 examples")
        return real(model, x)

    monkeypatch.setattr(batching, "forward", fixed_batch)
    app = create_app(gw)
    bodies = _bodies(digits, [2, 3, 1])

    async def together() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*(_post(app, "/v2/models/digits/infer", key, b) for b in bodies)))

    out = asyncio.run(together())
    assert [s for s, _ in out] == [200, 200, 200]
    assert seen[0] == 6 and sorted(seen[1:]) == [1, 2, 3]           # the joint pass failed, then one per request
    assert [len(r["outputs"][1]["data"]) for _, r in out] == [2, 3, 1]


def test_micro_batch_config(make_gateway: Any, tmp_path: Path) -> None:
    import pytest

    from bastion.errors import InputError
    from bastion.guard import GuardConfig

    assert GuardConfig.from_dict({}).micro_batch and GuardConfig.from_dict({}).micro_batch_max == 256
    assert GuardConfig.from_dict({"micro_batch": {"max_examples": 32}}).micro_batch_max == 32
    for bad in ("yes", {"size": 3}, {"max_examples": 0}):
        with pytest.raises(InputError, match="micro_batch"):
            GuardConfig.from_dict({"micro_batch": bad})
    gw = make_gateway(f"sqlite:///{tmp_path / 'off.db'}", {"micro_batch": False})
    assert not gw.batcher.enabled


def test_turn_batches_run_a_lone_item_at_once_and_join_a_waiting_batch() -> None:
    from bastion.guard.turns import TurnBatches

    runs: list[list[int]] = []

    def run(_key: Any, batch: list[tuple[int, asyncio.Future[int]]]) -> None:
        runs.append([item for item, _ in batch])
        for item, fut in batch:
            fut.set_result(item * 10)

    turns: TurnBatches[int, int] = TurnBatches(run)

    async def main() -> None:
        order: list[str] = []
        asyncio.get_running_loop().call_soon(order.append, "next turn")
        assert await turns.submit("k", 1, defer=False) == 10   # alone: run before the loop turns
        assert order == [] and runs == [[1]]
        deferred = asyncio.ensure_future(turns.submit("k", 2))
        await asyncio.sleep(0)                                  # 2 is now waiting for the end of a turn
        joined = await turns.submit("k", 3, defer=False)        # joins 2's batch instead of jumping ahead
        assert (await deferred, joined) == (20, 30)
        assert runs == [[1], [2, 3]]

    asyncio.run(main())

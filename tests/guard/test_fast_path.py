"""The inference route as the server runs it (GatewayApp's raw ASGI path): what reaches it at the protocol
level that a TestClient never sends (chunked bodies, a client that leaves, a handler that breaks)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from _guard_helpers import batch

import bastion as bn
from bastion.guard import create_app
from bastion.guard.audit import _rows

URL = "/v2/models/digits/infer"


async def _call(app: Any, chunks: list[bytes], headers: list[tuple[bytes, bytes]],
                disconnect: bool = False, path: str = URL) -> tuple[int, dict[str, Any] | None, dict[bytes, bytes]]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"test"), *headers], "client": ("10.1.2.3", 40000), "server": ("127.0.0.1", 8080)}
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        queue = [*queue[:1], {"type": "http.disconnect"}]
    status, body, head = 0, b"", {}

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(msg: dict[str, Any]) -> None:
        nonlocal status, body, head
        if msg["type"] == "http.response.start":
            status, head = msg["status"], dict(msg["headers"])
        else:
            body += msg.get("body", b"")

    await app(scope, receive, send)
    return status, (json.loads(body) if body else None), head


@pytest.fixture
def served(make_gateway: Any, tmp_path: Path) -> Any:
    gw = make_gateway(f"sqlite:///{tmp_path / 'fast.db'}", {"max_body_bytes": 20_000})
    key, _ = gw.keys.create("fast", ["infer"])
    yield gw, create_app(gw), key
    gw.audit.stop()


def test_chunked_body_is_answered_and_one_over_the_limit_refused(served: Any, digits: bn.datasets.Dataset) -> None:
    gw, app, key = served
    body = json.dumps(batch(digits.x_test[:2])).encode()
    auth = [(b"authorization", f"Bearer {key}".encode())]
    # no Content-Length (chunked): read in pieces, answered like any other request
    status, resp, head = asyncio.run(_call(app, [body[:100], body[100:]], auth))
    assert status == 200 and resp is not None and resp["outputs"][1]["shape"] == [2]
    assert head[b"x-audit-seq"] == str(resp["parameters"]["audit_seq"]).encode()
    # a chunked body that passes the limit: 413 once it does, named like the Content-Length refusal
    big = b"[" + b"0," * 15_000 + b"0]"
    status, resp, _ = asyncio.run(_call(app, [big[:15_000], big[15_000:]], auth))
    assert status == 413 and resp is not None and resp["field"] == "body" and "20000" in resp["expected"]
    # a declared length over the limit is refused before the key or body is looked at, and not audited
    before = len(list(_rows(gw.audit.engine)))
    status, resp, _ = asyncio.run(_call(app, [b"{}"], [(b"content-length", b"999999")]))
    assert status == 413
    status, _, _ = asyncio.run(_call(app, [b"{}"], [(b"content-length", b"12ab")]))
    assert status == 413
    assert len(list(_rows(gw.audit.engine))) == before


def test_x_api_key_header_and_refusals_are_audited_with_the_client(served: Any,
                                                                  digits: bn.datasets.Dataset) -> None:
    gw, app, key = served
    body = json.dumps(batch(digits.x_test[:1])).encode()
    status, resp, _ = asyncio.run(_call(app, [body], [(b"x-api-key", key.encode())]))
    assert status == 200
    status, resp, head = asyncio.run(_call(app, [body], [(b"authorization", b"Bearer bst_nope_nope")]))
    assert status == 401 and head[b"www-authenticate"] == b"Bearer" and b"x-audit-seq" in head
    status, resp, _ = asyncio.run(_call(app, [b'{"inputs": "no"}'], [(b"x-api-key", key.encode())]))
    assert status == 422 and resp is not None and resp["field"] == "inputs"
    status, resp, _ = asyncio.run(_call(app, [body], [(b"x-api-key", key.encode())],
                                        path="/v2/models/other/infer"))
    assert status == 404 and resp is not None and resp["given"] == "other"
    rows = list(_rows(gw.audit.engine))
    assert [r["status"] for r in rows] == [200, 401, 422, 404]
    assert {r["client"] for r in rows} == {"10.1.2.3"}
    assert rows[1]["key_id"] is None and rows[0]["key_id"] == rows[2]["key_id"] == key.split("_")[1]


def test_a_client_that_leaves_gets_nothing_and_a_broken_handler_a_500(served: Any, digits: bn.datasets.Dataset,
                                                                       monkeypatch: Any) -> None:
    gw, app, key = served
    body = json.dumps(batch(digits.x_test[:1])).encode()
    auth = [(b"authorization", f"Bearer {key}".encode())]
    status, resp, _ = asyncio.run(_call(app, [body[:50], body[50:]], auth, disconnect=True))
    assert status == 0 and resp is None  # nothing sent to a client that is gone, nothing raised

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("a bug in a detector")

    monkeypatch.setattr(gw.limiter, "check", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # on to the server, which logs it ...
        asyncio.run(_call(app, [body], auth))
    sent: list[int] = []

    async def send_capture() -> None:  # ... after the client got a 500 without details
        scope = {"type": "http", "method": "POST", "path": URL, "headers": auth, "client": None}
        queue = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return queue.pop(0)

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                sent.append(msg["status"])

        with pytest.raises(RuntimeError):
            await app(scope, receive, send)

    asyncio.run(send_capture())
    assert sent == [500]

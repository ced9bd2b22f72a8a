"""The request path: KServe v2 endpoints, typed validation (400/422, never 5xx), keys and scopes, output
policy per key, and one audit record per request, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from _guard_helpers import batch
from fastapi.testclient import TestClient

import bastion as bn
from bastion.guard import create_app, verify


@pytest.fixture
def x(digits: bn.datasets.Dataset) -> torch.Tensor:
    return digits.x_test[300:304]


def test_infer_end_to_end(make_gateway: Any, db_url: str, x: torch.Tensor, digits_cnn: torch.nn.Module) -> None:
    gw = make_gateway(db_url)
    key, info = gw.keys.create("alice", ["infer"])
    with TestClient(create_app(gw)) as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        h = {"Authorization": f"Bearer {key}"}
        meta = c.get("/v2/models/digits", headers=h).json()
        assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8]
        assert meta["inputs"][0]["parameters"]["min"] == 0.0
        r = c.post("/v2/models/digits/infer", json=batch(x), headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        labels = body["outputs"][1]["data"]
        with torch.no_grad():
            assert labels == digits_cnn(x).argmax(1).tolist()
        probs = torch.tensor(body["outputs"][0]["data"]).reshape(4, 10)
        assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
        seq = int(r.headers["X-Audit-Seq"])
        # the same request id comes back, and the record is in the database with the input's digest
        r2 = c.post("/v2/models/digits/infer", json={**batch(x), "id": "req-42"}, headers={"X-API-Key": key})
        assert r2.json()["id"] == "req-42"
        assert "bastion_guard_requests_total" in c.get("/metrics").text
    from bastion.guard.audit import _rows

    rows = list(_rows(gw.audit.engine))
    assert [r["seq"] for r in rows] == [seq, seq + 1]
    assert rows[0]["key_id"] == info.key_id and key not in json.dumps(rows, default=str)
    assert rows[0]["decision"] == "allow" and rows[0]["status"] == 200
    assert rows[0]["input_sha256"] == rows[1]["input_sha256"] and len(rows[0]["input_sha256"]) == 64
    assert json.loads(rows[0]["output"])["label"] == labels
    assert verify(gw.audit.engine).ok


def _error(c: TestClient, body: Any, key: str, status: int) -> dict[str, Any]:
    r = c.post("/v2/models/digits/infer", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == status, r.text
    return dict(r.json())


def test_validation_names_field_given_expected(make_gateway: Any, tmp_path: Any, x: torch.Tensor) -> None:
    gw = make_gateway(f"sqlite:///{tmp_path / 'v.db'}")
    key, _ = gw.keys.create("bob", ["infer"])
    good = batch(x)
    with TestClient(create_app(gw)) as c:
        wrong_shape = json.loads(json.dumps(good))
        wrong_shape["inputs"][0]["shape"] = [4, 1, 8, 9]
        e = _error(c, wrong_shape, key, 400)
        assert e["field"] == "inputs[0].shape" and e["given"] == "[4, 1, 8, 9]" and e["expected"] == "[-1, 1, 8, 8]"
        too_many = batch(torch.zeros(65, 1, 8, 8))
        assert _error(c, too_many, key, 400)["field"] == "inputs[0].shape[0]"
        out_of_range = batch(x * 3)
        e = _error(c, out_of_range, key, 400)
        assert e["field"] == "inputs[0].data" and "[0, 1]" in e["expected"]
        short = json.loads(json.dumps(good))
        short["inputs"][0]["data"] = short["inputs"][0]["data"][:-1]
        assert "255 numbers" in _error(c, short, key, 400)["given"]
        strings = json.loads(json.dumps(good))
        strings["inputs"][0]["data"][0] = "a"
        assert _error(c, strings, key, 400)["field"] == "inputs[0].data"
        r = c.post("/v2/models/digits/infer", content=json.dumps(good).replace("0.0", "NaN", 1),
                   headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["given"] == "NaN or infinite values"
        dtype = json.loads(json.dumps(good))
        dtype["inputs"][0]["datatype"] = "BYTES"
        assert _error(c, dtype, key, 400)["field"] == "inputs[0].datatype"
        e = _error(c, {"inputs": [{"name": 3}]}, key, 422)
        assert e["field"].startswith("inputs[0]")
        assert _error(c, {"inputs": "x"}, key, 422)["field"] == "inputs"
        r = c.post("/v2/models/digits/infer", content=b"x" * 2_000_000, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 413
        assert _error(c, good, key, 200)
        r = c.post("/v2/models/other/infer", json=good, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404 and r.json()["expected"] == "digits"
    decisions = [r.decision for r in _records(gw)]
    # 7 bodies broke the spec (400), 2 were malformed (422); the 413 was refused before parsing, unrecorded
    assert decisions.count("invalid") == 9 and decisions[-2:] == ["allow", "unknown-model"]


def test_key_is_checked_before_the_body_is_parsed(make_gateway: Any, tmp_path: Any, x: torch.Tensor) -> None:
    """Without a valid key nothing of the body is read: a malformed body gets 401, not 422; with a key, a
    body that is not JSON, or is empty, gets 422 naming the body."""
    gw = make_gateway(f"sqlite:///{tmp_path / 'k.db'}")
    key, _ = gw.keys.create("carol", ["infer"])
    url = "/v2/models/digits/infer"
    with TestClient(create_app(gw)) as c:
        assert c.post(url, content=b"{not json").status_code == 401
        assert c.post(url, content=b"{not json", headers={"Authorization": "Bearer bst_x_y"}).status_code == 401
        h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        tensor: dict[str, Any] = dict(batch(x)["inputs"][0])  # type: ignore[index]
        for bad in (b"{not json", b"", b"[1, 2]", json.dumps({"inputs": [{**tensor, "shape": "4"}]}).encode()):
            r = c.post(url, content=bad, headers=h)
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["error"] == "malformed request" and r.json()["field"], r.json()
        assert c.post(url, json=batch(x), headers=h).status_code == 200
    assert [r.decision for r in _records(gw)] == ["unauthenticated"] * 2 + ["invalid"] * 4 + ["allow"]


def _records(gw: Any) -> list[Any]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from bastion.guard.db import AuditRecord

    with Session(gw.audit.engine) as s:
        return list(s.scalars(select(AuditRecord).order_by(AuditRecord.seq)))


def test_keys_scopes_and_output_policy(make_gateway: Any, db_url: str, x: torch.Tensor) -> None:
    gw = make_gateway(db_url)
    infer, _ = gw.keys.create("app", ["infer"], output_policy={"kind": "top_k", "k": 2})
    labeler, _ = gw.keys.create("public", ["infer"], output_policy={"kind": "label"})
    auditor, _ = gw.keys.create("auditor", ["read-audit"])
    admin, _ = gw.keys.create("root", ["admin"])
    with TestClient(create_app(gw)) as c:
        url = "/v2/models/digits/infer"
        assert c.post(url, json=batch(x)).status_code == 401
        assert c.post(url, json=batch(x), headers={"Authorization": "Bearer nope"}).status_code == 401
        forged = infer.rsplit("_", 1)[0] + "_" + "A" * 43
        assert c.post(url, json=batch(x), headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        r = c.post(url, json=batch(x), headers={"Authorization": f"Bearer {auditor}"})
        assert r.status_code == 403 and r.json()["expected"] == "infer"
        top2 = torch.tensor(c.post(url, json=batch(x), headers={"X-API-Key": infer}).json()["outputs"][0]["data"])
        assert int((top2.reshape(4, 10) > 0).sum(1).max()) <= 2
        onehot = torch.tensor(c.post(url, json=batch(x), headers={"X-API-Key": labeler}).json()["outputs"][0]["data"])
        assert set(onehot.tolist()) == {0.0, 1.0} and onehot.sum() == 4
        recs = c.get("/audit/records", headers={"X-API-Key": auditor}).json()
        assert [r["decision"] for r in recs] == ["unauthenticated"] * 3 + ["forbidden", "allow", "allow"]
        assert c.get("/audit/records", headers={"X-API-Key": infer}).status_code == 403
        infer_id = infer.split("_")[1]
        assert c.post(f"/admin/keys/{infer_id}/revoke", headers={"X-API-Key": auditor}).status_code == 403
        assert c.post(f"/admin/keys/{infer_id}/revoke", headers={"X-API-Key": admin}).status_code == 200
        assert c.post(url, json=batch(x), headers={"X-API-Key": infer}).status_code == 401
        assert c.post("/admin/keys/unknown/revoke", headers={"X-API-Key": admin}).status_code == 404
    stored = gw.keys.list()
    assert len(stored) == 4 and stored[0].revoked


def test_openapi_document(make_gateway: Any, tmp_path: Any) -> None:
    gw = make_gateway(f"sqlite:///{tmp_path / 'o.db'}")
    with TestClient(create_app(gw)) as c:
        doc = c.get("/openapi.json").json()
    op = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert {"200", "400", "401", "403", "422", "429"} <= set(op["responses"])

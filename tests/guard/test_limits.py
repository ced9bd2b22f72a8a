"""Rate limits and daily budgets (in-process and Redis), and revocation seen by every worker at once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _guard_helpers import REDIS_URL, batch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import bastion as bn
from bastion.cli.main import app as cli
from bastion.guard import create_app
from bastion.guard.ratelimit import Limit, LocalLimiter, RedisLimiter


@pytest.fixture(params=["local", "redis"])
def limiter(request: pytest.FixtureRequest) -> Any:
    if request.param == "local":
        return LocalLimiter()
    client = request.getfixturevalue("redis_client")
    return RedisLimiter(client, prefix=f"bastion:test:{uuid.uuid4().hex}")


def test_token_bucket_burst_then_refill(limiter: Any) -> None:
    # 2/s: a token refills in 0.5 s, so the 8 checks (Redis round trips on a loaded machine included) see
    # no refill; at 20/s they took over 50 ms under load and a sixth request was rightly let through.
    limit = Limit(rate=2.0, burst=5)
    verdicts = [limiter.check("k", limit, 1) for _ in range(8)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False] * 3
    assert 0 < verdicts[5].retry_after <= 0.5 and verdicts[5].reason == "rate-limit"
    time.sleep(0.6)  # 2/s refills one token in 0.5 s
    assert limiter.check("k", limit, 1).allowed
    assert limiter.check("other", limit, 1).allowed  # buckets are per key


def test_daily_budget_counts_examples(limiter: Any) -> None:
    limit = Limit(daily_budget=10)
    assert limiter.check("k", limit, 6).allowed
    v = limiter.check("k", limit, 5)
    assert not v.allowed and v.reason == "daily-budget" and 0 < v.retry_after <= 86400
    assert limiter.check("k", limit, 4).allowed
    assert not limiter.check("k", limit, 1).allowed


def test_gateway_answers_429_with_retry_after(make_gateway: Any, tmp_path: Path, redis_client: Any,
                                              digits: bn.datasets.Dataset) -> None:
    gw = make_gateway(f"sqlite:///{tmp_path / 'r.db'}", redis=REDIS_URL)
    key, _ = gw.keys.create("burst", ["infer"], rate=0.5, burst=2, daily_budget=1000)
    x = digits.x_test[:2]
    with TestClient(create_app(gw)) as c:
        codes = [c.post("/v2/models/digits/infer", json=batch(x), headers={"X-API-Key": key}) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[2].headers["Retry-After"]) >= 1 and codes[2].json()["reason"] == "rate-limit"


@pytest.mark.parametrize("shared_redis", [False, True])
def test_revocation_reaches_every_worker(make_gateway: Any, db_url: str, shared_redis: bool,
                                         digits: bn.datasets.Dataset, request: pytest.FixtureRequest) -> None:
    """Two workers (two app instances sharing the database, and Redis when configured) both refuse a key on
    the very next request after `bastion keys revoke`."""
    redis = REDIS_URL if shared_redis else None
    if shared_redis:
        request.getfixturevalue("redis_client")
    w1, w2 = make_gateway(db_url, redis=redis), make_gateway(db_url, redis=redis)
    key, info = w1.keys.create("mallory", ["infer"])
    x = digits.x_test[:1]
    with TestClient(create_app(w1)) as c1, TestClient(create_app(w2)) as c2:
        for c in (c1, c2):  # both workers have verified and cached the key
            assert c.post("/v2/models/digits/infer", json=batch(x), headers={"X-API-Key": key}).status_code == 200
        args = ["keys", "revoke", info.key_id, "--db", db_url] + (["--redis", redis] if redis else [])
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
        for c in (c1, c2):
            assert c.post("/v2/models/digits/infer", json=batch(x), headers={"X-API-Key": key}).status_code == 401


def test_keys_cli(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    runner = CliRunner()
    r = runner.invoke(cli, ["keys", "create", "--db", db, "--name", "ci", "--scope", "infer", "--scope",
                            "read-audit", "--policy", "top_k:3", "--json"])
    assert r.exit_code == 0, r.output
    import json

    made = json.loads(r.stdout)
    assert made["key"].startswith("bst_") and made["output_policy"] == {"kind": "top_k", "k": 3}
    r = runner.invoke(cli, ["keys", "list", "--db", db, "--json"])
    listed = json.loads(r.stdout)["keys"]
    assert [k["name"] for k in listed] == ["ci"] and made["key"] not in r.stdout
    # only a salted hash is stored: the secret part of the key is nowhere in the database file
    assert made["key"].split("_", 2)[2].encode() not in (tmp_path / "k.db").read_bytes()
    bad = runner.invoke(cli, ["keys", "create", "--db", db, "--name", "x", "--scope", "root"])
    assert bad.exit_code == 2 and "infer, read-audit, admin" in bad.output
    bad = runner.invoke(cli, ["keys", "create", "--db", db, "--name", "x", "--policy", "blur:2"])
    assert bad.exit_code == 2
    assert runner.invoke(cli, ["keys", "revoke", "nope", "--db", db]).exit_code == 2
    assert runner.invoke(cli, ["keys", "revoke", made["key_id"], "--db", db]).exit_code == 0
    assert "revoked" in runner.invoke(cli, ["keys", "list", "--db", db]).output

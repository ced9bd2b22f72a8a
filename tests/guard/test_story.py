"""The operational story end to end: two signed versions in the registry, served from production and followed
through a promotion; clean traffic raises nothing; a PGD stream from one key gets that key revoked and the
traffic routed to the fallback by the playbook; an XSOAR incident reaches a local webhook receiver;
``registry rollback`` and ``incident resolve`` restore service; ``audit verify`` passes over all of it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from _guard_helpers import batch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import bastion as bn
from bastion.cli.main import app as cli
from bastion.guard import ServeOptions, build_gateway, create_app


class Receiver:
    """A local webhook receiver (what a SOAR's generic webhook integration would be)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(n)))
                self.send_response(201)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/incident"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def signed_version(folder: Path, net: torch.nn.Module, private_key: Path) -> Path:
    folder.mkdir(parents=True)
    torch.jit.script(net).save(str(folder / "model.pt"))
    bn.sign.sign_model(folder, private_key)
    return folder


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def story_config(path: Path, webhook: str) -> Path:
    path.write_text(yaml.safe_dump({
        "checkpoint": {"every": 25},
        "monitor": {"window": 25, "alpha": 0.001, "per_key": True, "global": True},
        "playbooks": [{"name": "evasion-from-one-key", "severity": "high",
                       "when": {"source": ["boundary", "confidence", "predictions", "inputs"], "per_key": True,
                                "count": 1},
                       "actions": ["alert", "revoke", {"route-to": "digits@1"}]}],
        "alerts": {"url": webhook, "format": "xsoar", "retries": 2, "backoff": 0.05},
        "poll_s": 0.1}))
    return path


def test_story_attack_response_rollback_resolve(tmp_path: Path, digits: bn.datasets.Dataset,
                                                digits_cnn: torch.nn.Module, digits_mlp: torch.nn.Module,
                                                reference_file: Path, receiver: Receiver) -> None:
    t_start = time.perf_counter()
    run = CliRunner().invoke
    db, store = f"sqlite:///{tmp_path / 'bastion.db'}", str(tmp_path / "store")
    reg_args = ["--db", db, "--store", store]
    priv, pub = bn.sign.keys.keygen(tmp_path / "keys" / "release")
    audit_priv, audit_pub = bn.sign.keys.keygen(tmp_path / "keys" / "audit")
    v1 = signed_version(tmp_path / "v1", digits_cnn, priv)
    v2 = signed_version(tmp_path / "v2", digits_mlp, priv)
    for folder, version in ((v1, "1"), (v2, "2")):
        res = run(cli, ["registry", "push", str(folder), "--name", "digits", "--version", version, "--pub", str(pub),
                        *reg_args])
        assert res.exit_code == 0, res.output
    assert run(cli, ["registry", "promote", "digits", "1", "--to", "production", *reg_args]).exit_code == 0

    gw = build_gateway(ServeOptions(model="registry://digits@production", db=db, registry_db=db, registry_store=store,
                                    config=str(story_config(tmp_path / "guard.yaml", receiver.url)),
                                    reference=str(reference_file), signing_key=str(audit_priv)))
    live = gw.live
    assert live is not None and gw.model_version == "1" and "digits@1" in live.fallbacks
    alice, _ = gw.keys.create("alice", ["infer"])
    mallory, mallory_info = gw.keys.create("mallory", ["infer"])
    auditor, _ = gw.keys.create("auditor", ["read-audit"])
    url = "/v2/models/digits/infer"
    clean = digits.x_test[300:]
    try:
        with TestClient(create_app(gw)) as c:
            def ask(key: str, x: torch.Tensor) -> Any:
                return c.post(url, json=batch(x), headers={"Authorization": f"Bearer {key}"})

            assert ask(alice, clean[:5]).json()["model_version"] == "1"
            # a release: v2 is promoted; every worker follows the registry without a restart
            assert run(cli, ["registry", "promote", "digits", "2", "--to", "production", *reg_args]).exit_code == 0
            assert wait_for(lambda: ask(alice, clean[:5]).json()["model_version"] == "2")

            # clean traffic: 4 windows per scope pass; each alarms with probability <= alpha = 0.001
            for i in range(0, 100, 5):
                assert ask(alice, clean[i:i + 5]).status_code == 200
            assert live.drain()
            assert live.incident_ids == [], live.status()

            # the attack: PGD examples against the served v2, from mallory's key, one request at a time
            x_att, y_att = digits.x_test[100:300], digits.y_test[100:300]
            _, adv, _ = bn.attacks.PGD(norm="linf", steps=10, seed=0)(digits_mlp, x_att, y_att, epsilons=0.1)
            first = time.perf_counter()
            sent, status = 0, 200
            while status == 200 and sent < 40:
                status = ask(mallory, adv[5 * sent:5 * sent + 5]).status_code
                sent += 1
                live.drain()
            reaction_s = time.perf_counter() - first
            assert status == 401, (sent, {s: [w["p_values"] for w in h] for s, h in live.history.items()})
            assert sent <= 11, sent  # at most two of mallory's 25-example windows before the key is revoked
            (incident_id,) = live.incident_ids
            # everyone else is now answered by the fallback named in the playbook
            r = ask(alice, clean[100:105])
            assert r.status_code == 200 and r.json()["model_version"] == "digits@1"
            assert wait_for(lambda: len(receiver.bodies) == 1)
            inc = receiver.bodies[0]
            assert set(inc) == {"name", "type", "severity", "occurred", "details", "labels", "rawJSON"}
            assert inc["severity"] == 3 and mallory_info.key_id in inc["name"]
            assert json.loads(inc["rawJSON"])["id"] == incident_id
            metrics = c.get("/metrics").text
            assert 'bastion_serving_mode{mode="routed"} 1.0' in metrics
            assert 'bastion_response_actions_total{action="revoke",ok="true"} 1.0' in metrics
            status_doc = c.get("/monitor/status", headers={"X-API-Key": auditor}).json()
            assert status_doc["serving"]["mode"] == "routed" and status_doc["incidents_raised"] == [incident_id]

            # the operator: roll production back to v1, then close the incident (which lifts the route)
            res = run(cli, ["registry", "rollback", "digits", *reg_args])
            assert res.exit_code == 0 and "version 1" in res.output
            res = run(cli, ["incident", "resolve", incident_id[:10], "--note", "v2 was evadable", "--db", db])
            assert res.exit_code == 0 and "route-to" in res.output, res.output
            assert wait_for(lambda: live.view.mode == "normal" and gw.model_version == "1"), (live.status(), live._thread)
            r = ask(alice, clean[105:110])
            assert r.status_code == 200 and r.json()["model_version"] == "1"
            assert ask(mallory, clean[:5]).status_code == 401  # a revoked key stays revoked
            res = run(cli, ["monitor", "status", "--db", db, "--model", "digits", "--json"])
            assert res.exit_code == 0, res.output
            doc = json.loads(res.output)
            assert doc["serving"]["mode"] == "normal" and doc["incidents"][0]["status"] == "resolved"
            assert doc["windows"]["global"] >= 4
    finally:
        gw.audit.engine.dispose()
    res = run(cli, ["audit", "verify", "--db", db, "--pub", str(audit_pub)])
    assert res.exit_code == 0, res.output
    from bastion.guard.audit import _rows

    rows = list(_rows(gw.audit.engine))
    actions = [r["reason"].split(":")[1].split()[0] for r in rows if r["decision"] == "response"]
    assert actions == ["alert", "revoke", "route-to"]
    assert any(r["decision"] == "alert-delivery" and "delivered" in r["reason"] for r in rows)
    assert any(r["decision"] == "model-swap" for r in rows)
    changes = [r["reason"] for r in rows if r["decision"] == "serving-state"]
    assert changes == ["now routed -> digits@1 (was normal)", "now normal (was routed -> digits@1)"]
    assert [r["status"] for r in rows if r["decision"] == "unauthenticated"] == [401, 401]  # mallory, revoked
    print(f"story: key revoked and traffic routed {reaction_s:.2f} s after the first attack request "
          f"({sent - 1} requests answered); whole story {time.perf_counter() - t_start:.1f} s")
    assert np.isfinite(reaction_s)

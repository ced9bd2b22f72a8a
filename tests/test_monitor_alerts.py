"""Incidents to webhooks: signed generic JSON, Cortex XSOAR's shape, retries that never block the caller."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bastion as bn
from bastion.cli.main import app
from bastion.monitor.alerts import SIGNATURE_HEADER, Incident, sign_body, verify_body, xsoar_body
from bastion.monitor.webhooks import WebhookSender, deliver_now


class Receiver:
    """A local webhook endpoint that answers with a scripted sequence of status codes."""

    def __init__(self, statuses: list[int], delay: float = 0.0) -> None:
        self.statuses, self.delay = list(statuses), delay
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append((dict(self.headers), body))
                time.sleep(outer.delay)
                self.send_response(outer.statuses.pop(0) if outer.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver([503, 200])
    yield r
    r.server.shutdown()


def _incident() -> Incident:
    return Incident("digits: attack-like traffic", "high", "boundary", model="digits", details={"windows": 3},
                    atlas=("AML.T0043",))


def test_generic_incident_is_signed_and_retried_after_a_5xx(receiver: Receiver) -> None:
    secret = b"s3cret"
    (d,) = deliver_now(receiver.url, [_incident()], secret=secret, backoff=0.01)
    assert d.ok and d.attempts == 2 and d.history == ["503", "200"]
    headers, body = receiver.bodies[-1]
    assert verify_body(body, secret, headers[SIGNATURE_HEADER])
    assert not verify_body(body + b" ", secret, headers[SIGNATURE_HEADER])  # any change breaks the signature
    assert json.loads(body)["incident"]["atlas"] == ["AML.T0043"]


def test_xsoar_body_has_the_fields_its_integration_reads() -> None:
    inc = _incident()
    body = json.loads(xsoar_body(inc))
    assert set(body) == {"name", "type", "severity", "occurred", "details", "labels", "rawJSON"}
    assert body["severity"] == 3 and body["name"] == inc.title
    assert {"type": "mitre_atlas", "value": "AML.T0043"} in body["labels"]
    assert json.loads(body["rawJSON"])["id"] == inc.id
    with pytest.raises(bn.InputError, match="severity"):
        Incident("x", "urgent", "boundary")
    assert sign_body(b"a", b"k") != sign_body(b"a", b"k2")


def test_sending_never_blocks_and_a_refusal_is_not_retried() -> None:
    slow = Receiver([400], delay=0.5)
    try:
        sender = WebhookSender(slow.url, backoff=0.01)
        t0 = time.monotonic()
        sender.send(_incident())
        assert time.monotonic() - t0 < 0.1  # queued, not sent inline
        sender.close()
        (d,) = sender.deliveries
        assert not d.ok and d.attempts == 1 and d.status == 400
    finally:
        slow.server.shutdown()
    recorded: list[object] = []
    (d,) = deliver_now("http://127.0.0.1:9/nothing-listens", [_incident()], retries=2, backoff=0.01, timeout=1.0,
                       on_delivery=recorded.append)
    assert not d.ok and d.attempts == 3 and recorded == [d]
    with pytest.raises(bn.InputError, match="URL"):
        WebhookSender("ftp://example")


def test_monitor_check_posts_an_xsoar_incident_on_drift(digits: bn.datasets.Dataset, tmp_path: Path,
                                                        receiver: Receiver) -> None:
    net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=8), digits.x_train, digits.y_train, epochs=8, lr=3e-3, seed=0)
    model = tmp_path / "model.pt"
    torch.jit.trace(net.eval(), digits.x_test[:2]).save(str(model))
    np.savez(tmp_path / "ref.npz", x=digits.x_test[:250].numpy())
    x, y = digits.x_test[250:], digits.y_test[250:]
    _, adv, _ = bn.attacks.PGD(norm="linf", steps=10)(net, x, y, epsilons=0.15)
    np.savez(tmp_path / "attack.npz", x=adv.numpy())
    runner = CliRunner()
    base = tmp_path / "base.npz"
    assert runner.invoke(app, ["monitor", "fit", "--model", str(model), "--reference", str(tmp_path / "ref.npz"),
                               "--out", str(base)]).exit_code == 0
    os.environ["BASTION_TEST_HOOK_SECRET"] = "k"
    try:
        res = runner.invoke(app, ["monitor", "check", "--model", str(model), "--baseline", str(base), "--data",
                                  str(tmp_path / "attack.npz"), "--window", "100", "--webhook", receiver.url,
                                  "--webhook-format", "xsoar", "--webhook-secret-env", "BASTION_TEST_HOOK_SECRET",
                                  "--json"])
    finally:
        del os.environ["BASTION_TEST_HOOK_SECRET"]
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)
    assert out["webhook"]["ok"] and out["webhook"]["attempts"] == 2
    headers, body = receiver.bodies[-1]
    incident = json.loads(body)
    assert incident["severity"] == 3 and "AML.T0043" in json.dumps(incident["labels"])
    assert verify_body(body, b"k", headers[SIGNATURE_HEADER])
    res = runner.invoke(app, ["monitor", "check", "--model", str(model), "--baseline", str(base), "--data",
                              str(tmp_path / "attack.npz"), "--webhook", receiver.url, "--webhook-secret-env",
                              "BASTION_UNSET_VARIABLE_FOR_TEST"])
    assert res.exit_code == 2 and "environment variable" in res.output

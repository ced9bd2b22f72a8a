"""The gateway obeys the shared serving state (offline, routed, throttled) that any worker or `bastion incident`
may change; live monitors show on /metrics; the /ui status page loads in headless Chromium with no console
error and no request outside the gateway."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from _guard_helpers import batch
from fastapi.testclient import TestClient

import bastion as bn
from bastion.guard import create_app
from bastion.respond import ResponseState


def _wait(cond: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return bool(cond())


def test_offline_route_and_throttle_follow_the_shared_state(make_gateway: Any, tmp_path: Path,
                                                            digits: bn.datasets.Dataset) -> None:
    db = f"sqlite:///{tmp_path / 'g.db'}"
    gw = make_gateway(db, {"monitor": {"window": 20}, "poll_s": 0.05})
    key, info = gw.keys.create("app", ["infer"])
    other = ResponseState(db)  # what another worker, or `bastion incident resolve`, writes
    url, h = "/v2/models/digits/infer", {"Authorization": f"Bearer {key}"}
    x = digits.x_test[300:305]
    with TestClient(create_app(gw)) as c:
        assert c.post(url, json=batch(x), headers=h).status_code == 200
        other.set_serving("digits", "offline", "inc-off", retry_after=42)
        assert _wait(lambda: gw.live.view.mode == "offline")
        r = c.post(url, json=batch(x), headers=h)
        assert r.status_code == 503 and r.headers["Retry-After"] == "42" and "offline" in r.json()["error"]
        other.set_serving("digits", "routed", "inc-route", route_to="digits@staging")
        assert _wait(lambda: gw.live.view.mode == "routed")
        # no registry, so the fallback cannot load: 503, never an answer from the model taken out of service
        r = c.post(url, json=batch(x), headers=h)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert other.clear_serving("digits", "inc-route")
        assert _wait(lambda: gw.live.view.mode == "normal")
        assert c.post(url, json=batch(x), headers=h).status_code == 200
        other.set_throttle(info.key_id, 1.0, "inc-throttle")
        assert _wait(lambda: info.key_id in gw.live.view.throttles)
        codes = [c.post(url, json=batch(x[:1]), headers=h).status_code for _ in range(3)]
        assert codes[0] == 200 and 429 in codes  # burst 1 at 1 request/s
        assert other.clear_throttle(info.key_id, "inc-throttle")
        assert _wait(lambda: not gw.live.view.throttles)
        for i in range(0, 40, 5):
            c.post(url, json=batch(digits.x_test[310 + i:315 + i]), headers=h)
        assert gw.live.drain()
        metrics = c.get("/metrics").text
        assert 'bastion_monitor_windows_total{scope="global"}' in metrics
        assert 'bastion_serving_mode{mode="normal"} 1.0' in metrics
    from bastion.guard.audit import _rows

    decisions = [r["decision"] for r in _rows(gw.audit.engine)]
    assert decisions.count("offline") == 1 and decisions.count("unavailable") == 1 and "throttled" in decisions


def test_status_page_in_headless_chromium(make_gateway: Any, tmp_path: Path, digits: bn.datasets.Dataset,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from _browser import open_page
    from bastion.cli.main import app as cli

    db = f"sqlite:///{tmp_path / 'ui.db'}"
    gw = make_gateway(db, {"monitor": {"window": 20}, "poll_s": 0.05,
                           "playbooks": [{"name": "low-confidence", "when": {"source": "confidence"},
                                          "actions": [{"offline": 60}]}]})
    key, _ = gw.keys.create("app", ["infer"])
    ops, _ = gw.keys.create("ops", ["read-audit"])
    with TestClient(create_app(gw)) as c:
        for i in range(0, 60, 5):
            c.post("/v2/models/digits/infer", json=batch(digits.x_test[300 + i:305 + i]),
                   headers={"Authorization": f"Bearer {key}"})
        assert gw.live.drain()
        gw.live.responder.fire("confidence", model="digits", p_value=1e-9)  # an incident, as if a window had fired
        gw.live.refresh()
        html = c.get("/ui").text
        assert "Live monitors" in html and "<svg" in html and "low-confidence" in html and "offline" in html
        assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    # a real server for the browser
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(gw), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: server.started)
        monkeypatch.setenv("OPS_KEY", ops)
        res = CliRunner().invoke(cli, ["monitor", "status", "--url", f"http://127.0.0.1:{port}", "--key-env", "OPS_KEY"])
        assert res.exit_code == 0 and "offline" in res.output, res.output
        res = CliRunner().invoke(cli, ["monitor", "status", "--url", f"http://127.0.0.1:{port}", "--key-env", "NOPE"])
        assert res.exit_code == 2 and "--key-env" in res.output
        page = open_page(f"http://127.0.0.1:{port}/ui")
    finally:
        server.should_exit = True
        thread.join(10)
    assert page.errors == [] and page.requests == []
    assert page.title.startswith("Bastion gateway") and "Recent incidents" in page.text
    assert "low-confidence" in page.text and "offline" in page.text


@pytest.mark.parametrize("bad", [{"monitor": {"window": 5}}, {"monitor": {"monitors": ["nope"]}},
                                 {"alerts": {"url": "ftp://x"}}, {"poll_s": 0},
                                 {"playbooks": [{"when": {"source": "boundary"}, "actions": ["revoke"]}]}])
def test_bad_live_config_names_the_field(bad: dict[str, Any]) -> None:
    from bastion.errors import InputError
    from bastion.guard.config import GuardConfig

    with pytest.raises(InputError) as err:
        GuardConfig.from_dict(bad)
    assert next(iter(bad)) in str(err.value)


def test_registry_model_refused_when_not_re_verifiable(tmp_path: Path, digits_cnn: torch.nn.Module) -> None:
    from bastion.guard.live import load_from_registry, parse_registry_ref
    from bastion.registry import GatePolicy, Registry, RegistryRefusal

    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "store")
    folder = tmp_path / "m"
    folder.mkdir()
    torch.jit.script(digits_cnn).save(str(folder / "model.pt"))
    reg.push(folder, "digits", "1", policy=GatePolicy(signature_required=False))
    with pytest.raises(RegistryRefusal, match="without a verified signature"):
        load_from_registry(reg, *parse_registry_ref("registry://digits@1"))
    with pytest.raises(bn.errors.InputError):
        parse_registry_ref("registry://digits")

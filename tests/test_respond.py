"""Playbooks and incidents: firings counted per key in a window, actions in order, undone on resolve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bastion as bn
from bastion.cli.main import app
from bastion.respond import Responder, ResponseState, parse_playbooks, resolve

BOOKS = {"playbooks": [
    {"name": "evasion", "when": {"source": "boundary"}, "severity": "high",
     "actions": ["alert", {"route-to": "digits@staging"}]},
    {"name": "extraction", "when": {"source": "prada", "per_key": True, "count": 3, "within_s": 60,
                                    "cooldown_s": 600},
     "severity": "critical", "actions": [{"throttle": 0.5}, "revoke", "rollback"]},
]}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def state(tmp_path: Path) -> ResponseState:
    return ResponseState(f"sqlite:///{tmp_path / 'state.db'}")


def test_playbook_errors_name_the_field() -> None:
    with pytest.raises(bn.InputError, match="route-to"):
        parse_playbooks([{"when": {"source": "boundary"}, "actions": [{"route-to": "nowhere"}]}])
    with pytest.raises(bn.InputError, match="per_key"):
        parse_playbooks([{"when": {"source": "boundary"}, "actions": ["revoke"]}])
    with pytest.raises(bn.InputError, match="one of"):
        parse_playbooks([{"when": {"source": "boundary"}, "actions": ["reboot"]}])
    with pytest.raises(bn.InputError, match="count >= 1"):
        parse_playbooks([{"when": {"source": "x", "count": 0}, "actions": ["alert"]}])
    with pytest.raises(bn.InputError, match="non-empty list"):
        parse_playbooks({"playbooks": []})
    with pytest.raises(bn.InputError, match="no other playbook"):
        parse_playbooks([{"name": "a", "when": {"source": "x"}, "actions": ["alert"]}] * 2)


def test_per_key_counts_cooldown_and_ordered_actions(state: ResponseState) -> None:
    clock, alerts, revoked, rolled = Clock(), [], [], []
    responder = Responder(parse_playbooks(BOOKS), state, send_alert=alerts.append, revoke_key=revoked.append,
                          rollback_model=lambda m: rolled.append(m) or "1", clock=clock)
    assert responder.fire("prada", key="k1", model="digits") == []
    clock.t += 10
    assert responder.fire("prada", key="k2", model="digits") == []  # another key: its own count
    assert responder.fire("prada", key="k1", model="digits") == []
    clock.t += 100  # k1's two earlier events fall out of the 60 s window: its count restarts
    assert responder.fire("prada", key="k1", model="digits") == []
    assert responder.fire("prada", key="k1", model="digits") == []
    (inc,) = responder.fire("prada", key="k1", model="digits")
    assert revoked == ["k1"] and rolled == ["digits"] and state.throttle("k1") == 0.5
    assert [a["action"] for a in state.incident(inc)["actions"]] == ["throttle", "revoke", "rollback"]
    for _ in range(3):
        assert responder.fire("prada", key="k1", model="digits") == []  # cooling down: no incident storm
    clock.t += 601
    assert len(responder.fire("prada", key="k1", model="digits")) == 0  # re-armed, but the count restarts
    (ev,) = responder.fire("boundary", model="digits")
    assert len(alerts) == 1 and alerts[0].atlas == ("AML.T0043",)
    assert state.serving("digits") == {"mode": "routed", "route_to": "digits@staging", "retry_after": None,
                                       "incident": ev}


def test_a_failing_action_is_recorded_and_the_rest_still_run(state: ResponseState) -> None:
    responder = Responder(parse_playbooks(BOOKS), state)  # no alert channel, no key store, no registry
    (ev,) = responder.fire("boundary", model="digits")
    acts = state.incident(ev)["actions"]
    assert [(a["action"], a["ok"]) for a in acts] == [("alert", False), ("route-to", True)]
    assert "webhook" in acts[0]["note"]


def test_resolve_undoes_only_what_this_incident_set(state: ResponseState) -> None:
    books = parse_playbooks([{"name": "down", "when": {"source": "confidence"}, "actions": [{"offline": 30}],
                              "severity": "medium"},
                             {"name": "route", "when": {"source": "boundary"},
                              "actions": [{"route-to": "digits@staging"}]}])
    responder = Responder(books, state)
    (first,) = responder.fire("confidence", model="digits")
    assert state.serving("digits")["mode"] == "offline"
    (second,) = responder.fire("boundary", model="digits")
    out = resolve(state, first[:8], "noise")
    assert out["status"] == "resolved" and not out["actions"][0]["undone"]
    assert state.serving("digits")["mode"] == "routed"  # the later incident's route stays
    resolve(state, second)
    assert state.serving("digits") is None
    with pytest.raises(bn.InputError, match="already resolved"):
        resolve(state, second)
    with pytest.raises(bn.InputError, match="recorded incident"):
        state.incident("nope")


def test_monitor_check_runs_playbooks_and_incident_resolve_lifts_the_route(digits: bn.datasets.Dataset,
                                                                          tmp_path: Path) -> None:
    net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=8), digits.x_train, digits.y_train, epochs=8, lr=3e-3, seed=0)
    model = tmp_path / "digits.pt"
    torch.jit.trace(net.eval(), digits.x_test[:2]).save(str(model))
    np.savez(tmp_path / "ref.npz", x=digits.x_test[:250].numpy())
    _, adv, _ = bn.attacks.PGD(norm="linf", steps=10)(net, digits.x_test[250:], digits.y_test[250:], epsilons=0.15)
    np.savez(tmp_path / "attack.npz", x=adv.numpy())
    (tmp_path / "books.yaml").write_text(json.dumps(
        {"playbooks": [{"name": "evasion", "when": {"source": "boundary"}, "actions": [{"route-to": "digits@staging"}]}]}))
    db = f"sqlite:///{tmp_path / 'state.db'}"
    runner = CliRunner()
    base = tmp_path / "base.npz"
    assert runner.invoke(app, ["monitor", "fit", "-m", str(model), "-r", str(tmp_path / "ref.npz"), "-o",
                               str(base)]).exit_code == 0
    res = runner.invoke(app, ["monitor", "check", "-m", str(model), "-b", str(base), "-d", str(tmp_path / "attack.npz"),
                              "-w", "100", "--playbooks", str(tmp_path / "books.yaml"), "--db", db, "--json"])
    assert res.exit_code == 1, res.output
    (inc,) = json.loads(res.stdout)["incidents"]  # two drifted windows, one incident: the cooldown holds
    state = ResponseState(db)
    assert state.serving("digits")["route_to"] == "digits@staging"
    res = runner.invoke(app, ["incident", "list", "--open", "--db", db])
    assert res.exit_code == 0 and inc[:12] in res.output
    res = runner.invoke(app, ["incident", "resolve", inc[:10], "--note", "drill", "--db", db])
    assert res.exit_code == 0 and "route-to" in res.output
    assert state.serving("digits") is None
    res = runner.invoke(app, ["incident", "show", "zzz", "--db", db])
    assert res.exit_code == 2


def test_a_playbook_can_watch_several_sources(state: ResponseState) -> None:
    (book,) = parse_playbooks([{"name": "any", "when": {"source": ["boundary", "confidence"], "per_key": True},
                                "actions": ["revoke"]}])
    revoked: list[str] = []
    responder = Responder([book], state, revoke_key=revoked.append, clock=Clock())
    assert responder.fire("predictions", key="k1") == []  # not watched
    assert len(responder.fire("confidence", key="k1")) == 1 and len(responder.fire("boundary", key="k2")) == 1
    assert revoked == ["k1", "k2"]
    with pytest.raises(bn.InputError, match="list of them"):
        parse_playbooks([{"when": {"source": []}, "actions": ["alert"]}])

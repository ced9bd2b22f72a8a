"""`bastion assess`: verdicts and exit codes on models with a known answer, skips, policy errors, outputs.

Known answers: a model deciding on the mean pixel (class 0 above 0.5) cannot be moved across 0.5 by a
linf budget of 0.1 from inputs whose pixels are all 0.95 (robust accuracy exactly 1, the gate passes), and
is broken from pixels at 0.55 by moving every pixel down by 0.1 (robust accuracy exactly 0 for any attack
that follows the gradient, the gate fails). A constant model is unbreakable too, but its gradients are
exactly zero, so its perfect figure proves nothing and the masking rule fails it.
"""

from __future__ import annotations

import json
import pickle
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor, nn
from typer.testing import CliRunner

from bastion.cli.main import app

N = 24


class Constant(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tensor([3.0, 0.0]) + 0.0 * x.flatten(1).sum(1, keepdim=True)


class MeanThreshold(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        s = 4.0 * (x.flatten(1).mean(1, keepdim=True) - 0.5)
        return torch.cat([s, -s], dim=1)


POLICY = """\
scan: {fail_on: high}
signature: optional
clean_accuracy: {min: 0.9}
robust_accuracy: {norm: linf, eps: 0.1, min: 0.5}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("assess")
    out: dict[str, Path] = {}
    for name, mod in (("constant", Constant()), ("mean", MeanThreshold())):
        folder = root / name
        folder.mkdir()
        torch.jit.script(mod).save(str(folder / "model.pt"))
        out[name] = folder / "model.pt"
    out["data"] = root / "test.npz"
    np.savez(out["data"], x=np.full((N, 1, 4, 4), 0.55, dtype=np.float32), y=np.zeros(N, dtype=np.int64))
    out["far"] = root / "far.npz"
    np.savez(out["far"], x=np.full((N, 1, 4, 4), 0.95, dtype=np.float32), y=np.zeros(N, dtype=np.int64))
    out["policy"] = root / "policy.yaml"
    out["policy"].write_text(POLICY, encoding="utf-8")
    return out


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, ["assess", *[str(a) for a in args]])


def run_json(*args: Any) -> tuple[int, dict[str, Any]]:
    res = run(*args, "--json")
    return res.exit_code, json.loads(res.stdout)


def checks(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in body["checks"]}


def test_unbreakable_model_passes(files: dict[str, Path]) -> None:
    code, body = run_json("--model", files["mean"], "--data", files["far"], "--policy", files["policy"],
                          "--budget", "fast")
    c = checks(body)
    assert code == 0, body
    assert body["verdict"] == "pass"
    assert c["robust_accuracy"]["verdict"] == "pass" and c["robust_accuracy"]["figure"] == 1.0
    assert c["clean_accuracy"]["figure"] == 1.0
    assert c["scan"]["verdict"] == "pass"
    assert c["robust_accuracy"]["atlas_technique"] == "AML.T0043"
    assert "AML.M0003" in c["robust_accuracy"]["atlas_mitigations"]
    assert c["robust_accuracy"]["nist_class"] == "Evasion"


def test_zero_gradients_fail_the_gate_unless_masking_is_allowed(files: dict[str, Path], tmp_path: Path) -> None:
    # standard budget: the masking checks run (the unbounded attack fails on it, its gradients are zero)
    code, body = run_json("--model", files["constant"], "--data", files["data"], "--policy", files["policy"],
                          "--budget", "standard", "--limit", 12)
    rob = checks(body)["robust_accuracy"]
    assert code == 1 and rob["figure"] == 1.0 and "masking" in rob["reason"]
    allow = tmp_path / "allow.yaml"
    allow.write_text("robust_accuracy: {eps: 0.1, min: 0.5, allow_masking: true}\n", encoding="utf-8")
    code, body = run_json("--model", files["constant"], "--data", files["data"], "--policy", allow, "--budget",
                          "standard", "--limit", 12)
    assert code == 0, checks(body)["robust_accuracy"]


def test_breakable_model_fails_with_exit_1(files: dict[str, Path], tmp_path: Path) -> None:
    code, body = run_json("--model", files["mean"], "--data", files["data"], "--policy", files["policy"],
                          "--budget", "fast", "--sarif", tmp_path / "a.sarif", "--junit", tmp_path / "a.xml",
                          "--report", tmp_path / "rep")
    c = checks(body)
    assert code == 1, body
    assert body["verdict"] == "fail"
    assert c["clean_accuracy"]["verdict"] == "pass"
    assert c["robust_accuracy"]["verdict"] == "fail" and c["robust_accuracy"]["figure"] == 0.0

    sarif = json.loads((tmp_path / "a.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    run0 = sarif["runs"][0]
    rule_ids = {r["id"] for r in run0["tool"]["driver"]["rules"]}
    by_rule = {r["ruleId"]: r for r in run0["results"]}
    assert set(by_rule) <= rule_ids
    assert by_rule["bastion-assess/robust_accuracy"]["level"] == "error"
    assert by_rule["bastion-assess/robust_accuracy"]["kind"] == "fail"
    assert by_rule["bastion-assess/scan"]["kind"] == "pass"
    for r in run0["results"]:
        assert r["message"]["text"] and r["level"] in ("none", "note", "warning", "error")
        assert run0["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == r["ruleId"]

    suites = ET.parse(tmp_path / "a.xml").getroot()
    cases = suites.findall("./testsuite/testcase")
    assert {tc.get("name") for tc in cases} == set(c)
    assert len(cases) == len(body["checks"])
    failed = {tc.get("name") for tc in cases if tc.find("failure") is not None}
    assert failed == {k for k, v in c.items() if v["verdict"] == "fail"} == {"robust_accuracy"}
    skipped = {tc.get("name") for tc in cases if tc.find("skipped") is not None}
    assert skipped == {k for k, v in c.items() if v["verdict"] == "skip"}
    assert suites.get("failures") == "1"

    rep = tmp_path / "rep"
    assert {p.name for p in rep.iterdir()} == {"report.html", "report.md", "result.json", "model-card.md"}
    card = (rep / "model-card.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["bastion_assessment"]["verdict"] == "fail"
    assert {x["id"]: x["verdict"] for x in meta["bastion_assessment"]["checks"]}["robust_accuracy"] == "fail"
    assert "## Security assessment" in card
    html = (rep / "report.html").read_text()
    assert "<svg" in html and "FAIL" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert json.loads((rep / "result.json").read_text())["verdict"] == "fail"

    # Outputs exist now: a second run refuses to overwrite them without --force.
    again = run("--model", files["mean"], "--data", files["data"], "--sarif", tmp_path / "a.sarif")
    assert again.exit_code == 2 and "--force" in again.output


def test_checks_that_cannot_apply_are_skipped_with_a_reason(files: dict[str, Path]) -> None:
    code, body = run_json("--model", files["constant"], "--policy", files["policy"])
    c = checks(body)
    assert code == 0
    assert c["robust_accuracy"]["verdict"] == "skip" and "--data" in c["robust_accuracy"]["reason"]
    assert c["poisoning"]["verdict"] == "skip" and "--train" in c["poisoning"]["reason"]
    assert c["signature"]["verdict"] == "skip" and "--pub" in c["signature"]["reason"]
    assert c["certified_accuracy"]["verdict"] == "skip" and "policy" in c["certified_accuracy"]["reason"]
    assert c["membership_inference"]["verdict"] == "skip" and c["membership_inference"]["reason"]


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, ("echo pwned",)


def test_a_model_failing_its_scan_is_never_loaded(tmp_path: Path, files: dict[str, Path]) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Evil()))
    code, body = run_json("--model", evil, "--data", files["data"], "--trust-pickle")
    c = checks(body)
    assert code == 1
    assert c["scan"]["verdict"] == "fail"
    assert c["robust_accuracy"]["verdict"] == "skip" and "not loaded" in c["robust_accuracy"]["reason"]


@pytest.mark.parametrize(("text", "needle"), [
    ("robust_accuracy: {eps: 0.1, min: 1.5}\n", "robust_accuracy.min"),
    ("robust_acuracy: {min: 0.5}\n", "robust_acuracy"),
    ("scan: {fail_on: severe}\n", "scan.fail_on"),
    ("signature: maybe\n", "signature"),
    ("scan: [1, 2\n", "invalid YAML"),
    ("robust_accuracy: {norm: l3}\n", "robust_accuracy.norm"),
])
def test_policy_errors_exit_2_with_a_clear_message(files: dict[str, Path], tmp_path: Path, text: str,
                                                   needle: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    res = run("--model", files["constant"], "--policy", bad)
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output


def test_init_policy_writes_the_defaults_and_refuses_to_overwrite(tmp_path: Path) -> None:
    from bastion.assess.gate import Policy

    target = tmp_path / "policy.yaml"
    assert run("--init-policy", target).exit_code == 0
    written = Policy.from_file(target)
    assert written.robust_accuracy == Policy.default().robust_accuracy
    assert "#" in target.read_text()
    assert run("--init-policy", target).exit_code == 2
    assert run("--init-policy", target, "--force").exit_code == 0


def test_required_signature_needs_a_key_and_a_valid_signature(files: dict[str, Path], tmp_path: Path) -> None:
    from bastion import sign

    required = tmp_path / "required.yaml"
    required.write_text("signature: required\nrobust_accuracy: null\n", encoding="utf-8")
    res = run("--model", files["constant"], "--policy", required)
    assert res.exit_code == 2 and "--pub" in res.output

    folder = tmp_path / "release"
    folder.mkdir()
    model = folder / "model.pt"
    model.write_bytes(files["constant"].read_bytes())
    sign.keygen(tmp_path / "key")
    sign.sign_model(folder, tmp_path / "key")
    code, body = run_json("--model", model, "--policy", required, "--pub", tmp_path / "key.pub")
    assert code == 0 and checks(body)["signature"]["verdict"] == "pass"

    code, body = run_json("--model", files["constant"], "--policy", required, "--pub", tmp_path / "key.pub",
                          "--signed-dir", folder)
    assert code == 2 and "--signed-dir" in checks(body)["signature"]["reason"]  # the model is not in it

    model.write_bytes(model.read_bytes() + b"\0")  # tampered after signing
    code, body = run_json("--model", model, "--policy", required, "--pub", tmp_path / "key.pub")
    assert code == 1 and checks(body)["signature"]["verdict"] == "fail"


def test_blackbox_figure_is_an_upper_bound_and_passes_only_when_allowed() -> None:
    from sklearn.dummy import DummyClassifier

    import bastion as bn
    from bastion.assess.gate.policy import Policy
    from bastion.assess.gate.runner import Inputs, _Run

    x = np.full((N, 4), 0.5, dtype=np.float32)
    y = np.zeros(N, dtype=np.int64)
    clf = DummyClassifier(strategy="constant", constant=0).fit(np.vstack([x, x]), np.r_[y, np.ones(N, np.int64)])
    model = bn.wrap(clf)
    data = (torch.from_numpy(x), torch.from_numpy(y))
    for allow, verdict in ((False, "fail"), (True, "pass")):
        pol = Policy.from_text(f"robust_accuracy: {{eps: 0.1, min: 0.5, allow_upper_bound: {str(allow).lower()}}}\n")
        out = _Run(Inputs(model=Path("m"), data=Path("d")), pol, "fast", None).check_robust(model, data)
        assert out.figure == 1.0 and out.details["upper_bound"] is True
        assert out.verdict == verdict, out.reason


def test_ray_backend_without_ray_exits_2_with_install_hint(files: dict[str, Path]) -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed")
    res = run("--model", files["constant"], "--backend", "ray")
    assert res.exit_code == 2 and "pip install" in res.output


def test_certification_runs_when_the_policy_asks(files: dict[str, Path], tmp_path: Path) -> None:
    # Constant model: every noisy draw is class 0, so p_A's lower bound (n=1000, alpha=0.001) is above 0.99
    # and the radius 0.25 * Phi^-1(0.99) > 0.5 clears 0.25. Mean-pixel model at 0.55 with sigma 0.25 over 16
    # pixels: p_A = Phi(0.05 / 0.0625) = 0.79, below the 0.84 a radius of 0.25 needs, by 4 binomial SDs.
    pol = tmp_path / "cert.yaml"
    pol.write_text("robust_accuracy: null\ncertified_accuracy: {sigma: 0.25, radius: 0.25, min: 0.9, n: 1000}\n",
                   encoding="utf-8")
    code, body = run_json("--model", files["constant"], "--data", files["data"], "--policy", pol, "--budget", "fast")
    assert code == 0 and checks(body)["certified_accuracy"]["figure"] == 1.0
    code, body = run_json("--model", files["mean"], "--data", files["data"], "--policy", pol, "--budget", "fast")
    assert code == 1 and checks(body)["certified_accuracy"]["figure"] == 0.0


def test_poisoning_audit_flags_a_badnets_training_set(digits: Any, tmp_path: Path) -> None:
    # BadNets relabels 1 % / 5 % of all records to class 0; Spectre, confirmed by the overlay test, flags
    # measured 8.9 % / 34 % of class 0 against at most 2 % allowed (the default). On the clean set no class
    # is confirmed: 0 % (plain Spectre's false alarms alone reach 16-18 % of a class, which would hide the
    # 1 % poison). Seeded, so the margins only absorb CPU numerics.
    import bastion as bn
    from bastion.attacks.poisoning import BadNets

    np.savez(tmp_path / "clean.npz", x=digits.x_train.numpy(), y=digits.y_train.numpy())
    pol = tmp_path / "p.yaml"
    pol.write_text("robust_accuracy: null\nclean_accuracy: null\n", encoding="utf-8")  # poisoning: the default
    for rate in (0.01, 0.05):
        res = BadNets(target=0, rate=rate, size=2)(digits.x_train, digits.y_train)
        net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8), res.x, res.y, epochs=15, seed=0)
        model = tmp_path / f"model{rate}.pt"
        torch.jit.script(net).save(str(model))
        np.savez(tmp_path / "poisoned.npz", x=res.x.numpy(), y=res.y.numpy())
        code, body = run_json("--model", model, "--train", tmp_path / "poisoned.npz", "--policy", pol)
        c = checks(body)["poisoning"]
        assert code == 1 and c["verdict"] == "fail", c
        assert "class 0" in c["figure_text"] and c["details"]["confirmed_classes"] == [0], c
        assert c["threshold"] == "<= 0.02 flagged in any class"
    code, body = run_json("--model", model, "--train", tmp_path / "clean.npz", "--policy", pol)
    c = checks(body)["poisoning"]
    assert code == 0 and c["verdict"] == "pass" and c["figure"] == 0.0 and not c["details"]["confirmed_classes"], c




def test_backdoor_audit_names_the_target_from_test_data_alone(digits: Any, digits_cnn: torch.nn.Module,
                                                              tmp_path: Path) -> None:
    # Known answers: BadNets planted in 5 % of the training set (a corner patch, target 0: attack success
    # above 90 %, every class reached) fails the check naming class 0; the suite's clean digits CNN passes.
    import bastion as bn
    from bastion.attacks.poisoning import BadNets

    np.savez(tmp_path / "test.npz", x=digits.x_test.numpy(), y=digits.y_test.numpy())
    pol = tmp_path / "p.yaml"
    pol.write_text("robust_accuracy: null\nclean_accuracy: null\nbackdoor: {min_reach: 0.5}\n", encoding="utf-8")
    res = BadNets(target=0, rate=0.05, size=2)(digits.x_train, digits.y_train)
    net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=16), res.x, res.y, epochs=15, seed=0)
    assert res.attack_success_rate(net, digits.x_test, digits.y_test) > 0.9
    torch.jit.script(net).save(str(tmp_path / "bad.pt"))
    torch.jit.script(digits_cnn).save(str(tmp_path / "clean.pt"))
    code, body = run_json("--model", tmp_path / "bad.pt", "--data", tmp_path / "test.npz", "--policy", pol)
    c = checks(body)["backdoor"]
    assert code == 1 and c["verdict"] == "fail" and c["details"]["target"] == 0, c
    assert "class 0" in c["reason"] and c["figure"] > 0.5 and c["threshold"] == "reach <= 0.5", c
    code, body = run_json("--model", tmp_path / "clean.pt", "--data", tmp_path / "test.npz", "--policy", pol)
    c = checks(body)["backdoor"]
    assert code == 0 and c["verdict"] == "pass" and c["figure"] <= 0.5 and c["details"]["target"] is None, c
    # off by default; no test data: skipped with the reason
    pol.write_text("robust_accuracy: null\nclean_accuracy: null\n", encoding="utf-8")
    _, body = run_json("--model", tmp_path / "clean.pt", "--data", tmp_path / "test.npz", "--policy", pol)
    assert checks(body)["backdoor"]["verdict"] == "skip" and "backdoor: null" in checks(body)["backdoor"]["reason"]


def test_backdoor_audit_skips_tabular_data_and_refuses_bad_rules(files: dict[str, Path], tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    np.savez(tmp_path / "tab.npz", x=np.random.default_rng(0).random((30, 6)).astype(np.float32),
             y=np.arange(30) % 4)
    lin = tmp_path / "lin.pt"
    torch.jit.script(nn.Linear(6, 4)).save(str(lin))
    pol.write_text("robust_accuracy: null\nclean_accuracy: null\nbackdoor: {}\n", encoding="utf-8")
    code, body = run_json("--model", lin, "--data", tmp_path / "tab.npz", "--policy", pol)
    c = checks(body)["backdoor"]
    assert code == 0 and c["verdict"] == "skip" and "image" in c["reason"], c
    for bad in ("backdoor: {min_reach: 0}", "backdoor: {alpha: 1}", "backdoor: {min_reach: 2}", "backdoor: {reach: 0.5}"):
        pol.write_text(bad + "\n", encoding="utf-8")
        res = run("--model", files["mean"], "--data", files["data"], "--policy", pol)
        assert res.exit_code == 2 and "backdoor" in res.output, (bad, res.output)

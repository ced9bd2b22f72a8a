"""`bastion assess`: membership inference and extraction checks on models with a known answer.

Known answers. A network that memorised random labels on its training records (no rule links inputs to
labels) has near-zero loss on them and about log 2 on fresh records: the loss attack separates the two
almost perfectly, so its AUC is far above 0.5 and a strict gate fails. A linear model trained on 4000
noisy records, attacked on 200 of them against 200 fresh ones, is not moved measurably by any one record:
its AUC stays within noise of 0.5, and a gate a few standard errors above 0.5 passes. The standard error
of the AUC of a signal-free score on n vs n records is sqrt((2n + 1) / (12 n^2)) (Hanley & McNeil 1982);
the margins below are Z of those (tests/_margins.Z). A softmax regression is log-linear, so equation
solving recovers it exactly from d + 1 queries: its extraction fidelity is 1 and any gate below 1 fails.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from _margins import Z
from bastion.cli.main import app

D = 16
N_OVERFIT = 64
N_GENERAL = 200


def null_se(n: int) -> float:
    return math.sqrt((2 * n + 1) / (12.0 * n * n))


def run_json(*args: Any) -> tuple[int, dict[str, Any]]:
    res = CliRunner().invoke(app, ["assess", *[str(a) for a in args], "--json"])
    assert res.stdout.strip().startswith("{"), res.output
    return res.exit_code, json.loads(res.stdout)


def check(body: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in body["checks"] if c["id"] == cid)


def policy(tmp: Path, name: str, extra: str) -> Path:
    p = tmp / name
    p.write_text("clean_accuracy: null\nrobust_accuracy: null\npoisoning: null\n" + extra, encoding="utf-8")
    return p


def fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("assess_privacy")
    g = torch.Generator().manual_seed(0)
    out: dict[str, Path] = {}
    # memorised: random inputs, random labels
    xm, xn = torch.rand(N_OVERFIT, D, generator=g), torch.rand(N_OVERFIT, D, generator=g)
    ym, yn = torch.randint(0, 2, (N_OVERFIT,), generator=g), torch.randint(0, 2, (N_OVERFIT,), generator=g)
    torch.manual_seed(0)
    net = fit(nn.Sequential(nn.Linear(D, 256), nn.ReLU(), nn.Linear(256, 2)), xm, ym, 400)
    assert bool((net(xm).argmax(1) == ym).all()), "the overfit network must memorise every training label"
    out["overfit"] = root / "overfit.pt"
    torch.jit.script(net).save(str(out["overfit"]))
    np.savez(root / "om.npz", x=xm.numpy(), y=ym.numpy())
    np.savez(root / "on.npz", x=xn.numpy(), y=yn.numpy())
    out["om"], out["on"] = root / "om.npz", root / "on.npz"
    # generalising: a linear rule with 10 % label noise, 4000 training records
    w = torch.linspace(-1, 1, D)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, D, generator=g)
        y = (x @ w > 0).long()
        flip = torch.rand(n, generator=g) < 0.1
        return x, torch.where(flip, 1 - y, y)

    xt, yt = draw(4000)
    lin = fit(nn.Linear(D, 2), xt, yt, 300)
    out["linear"] = root / "linear.pt"
    torch.jit.script(lin).save(str(out["linear"]))
    xf, yf = draw(N_GENERAL)
    np.savez(root / "gm.npz", x=xt[:N_GENERAL].numpy(), y=yt[:N_GENERAL].numpy())
    np.savez(root / "gn.npz", x=xf.numpy(), y=yf.numpy())
    out["gm"], out["gn"] = root / "gm.npz", root / "gn.npz"
    return out


def test_overfit_model_fails_a_strict_membership_gate(files: dict[str, Path], tmp_path: Path) -> None:
    strict = 0.5 + Z * null_se(N_OVERFIT)  # 0.64 at n = 64: only a real leak clears it
    pol = policy(tmp_path, "strict.yaml", f"mia_auc: {{max: {strict:.4f}}}\n")
    code, body = run_json("--model", files["overfit"], "--members", files["om"], "--non-members", files["on"],
                          "--policy", pol, "--budget", "fast", "--report", tmp_path / "rep")
    mia = check(body, "membership_inference")
    assert code == 1 and mia["verdict"] == "fail", mia["reason"]
    html = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert 'aria-label="ROC curves"' in html and "loss threshold (Yeom)" in html
    assert mia["figure"] > strict and mia["atlas_technique"] == "AML.T0024.000"
    assert mia["details"]["members"] == N_OVERFIT and mia["nist_class"].startswith("Privacy")
    assert {a["attack"] for a in mia["details"]["attacks"]} >= {"loss threshold (Yeom)", "confidence threshold"}


def test_generalising_model_passes_a_loose_membership_gate(files: dict[str, Path], tmp_path: Path) -> None:
    loose = 0.5 + Z * null_se(N_GENERAL)  # 0.58 at n = 200
    pol = policy(tmp_path, "loose.yaml", f"mia_auc: {{max: {loose:.4f}}}\n")
    # --train stands in for --members, --data for --non-members
    code, body = run_json("--model", files["linear"], "--train", files["gm"], "--data", files["gn"],
                          "--policy", pol, "--budget", "fast")
    mia = check(body, "membership_inference")
    assert code == 0 and mia["verdict"] == "pass", mia["reason"]
    assert abs(mia["figure"] - 0.5) <= Z * null_se(N_GENERAL)
    assert mia["details"]["members_from"] == str(files["gm"])
    assert mia["details"]["non_members_from"] == str(files["gn"])


def test_membership_needs_both_sides_and_says_which(files: dict[str, Path], tmp_path: Path) -> None:
    pol = policy(tmp_path, "p.yaml", "mia_auc: {max: 0.6}\n")
    code, body = run_json("--model", files["linear"], "--data", files["gn"], "--policy", pol)
    mia = check(body, "membership_inference")
    assert code == 0 and mia["verdict"] == "skip" and "--train" in mia["reason"]


def test_extraction_copies_a_log_linear_model_exactly(files: dict[str, Path], tmp_path: Path) -> None:
    strict = policy(tmp_path, "e.yaml", "mia_auc: null\nextraction: {max_fidelity: 0.9, queries: 40}\n")
    code, body = run_json("--model", files["linear"], "--data", files["gn"], "--policy", strict)
    ext = check(body, "extraction")
    assert code == 1 and ext["verdict"] == "fail", ext["reason"]
    assert ext["figure"] == 1.0 and ext["atlas_technique"] == "AML.T0024.002"
    loose = policy(tmp_path, "l.yaml", "mia_auc: null\nextraction: {max_fidelity: 1.0, queries: 40}\n")
    code, body = run_json("--model", files["linear"], "--data", files["gn"], "--policy", loose)
    assert code == 0 and check(body, "extraction")["verdict"] == "pass"


def test_extraction_policy_is_checked(files: dict[str, Path], tmp_path: Path) -> None:
    bad = policy(tmp_path, "bad.yaml", "extraction: {max_fidelity: 0.9, queries: 3}\n")
    res = CliRunner().invoke(app, ["assess", "--model", str(files["linear"]), "--policy", str(bad)])
    assert res.exit_code == 2 and "extraction.queries" in res.output

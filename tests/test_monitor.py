"""Drift and attack monitors: false alarms bounded by alpha on clean traffic, known shifts detected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bastion as bn
from _margins import binomial_margin
from bastion.cli.main import app
from bastion.monitor import (
    Baseline,
    ConfidenceDrop,
    KSDrift,
    MMDDrift,
    NearBoundaryRate,
    PredictionShift,
    StreamMonitor,
    combine_p_values,
)


def _false_alarm_bound(alpha: float, windows: int) -> int:
    """Most false alarms a test at level alpha may raise over independent clean windows (4 standard errors)."""
    return int(windows * (alpha + binomial_margin(windows, alpha)))


def test_p_value_combinations_have_known_answers() -> None:
    p = np.array([0.04, 0.01, 0.5, 0.03])
    assert combine_p_values(p, "bonferroni") == pytest.approx(0.04)  # 4 * 0.01
    # Simes: sorted 0.01, 0.03, 0.04, 0.5 -> 4*0.01/1, 4*0.03/2, 4*0.04/3, 4*0.5/4 -> min 0.04
    assert combine_p_values(p, "fdr") == pytest.approx(0.04)
    assert combine_p_values(np.array([0.02, 0.02, 0.02]), "fdr") == pytest.approx(0.02)
    assert combine_p_values(np.array([0.9]), "bonferroni") == pytest.approx(0.9)


@pytest.mark.parametrize("make", [lambda: KSDrift(alpha=0.05), lambda: MMDDrift(alpha=0.05, n_permutations=100)],
                         ids=["ks", "mmd"])
def test_input_drift_tests_hold_their_false_alarm_rate_and_see_a_shift(make: object) -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 5))
    mon = make().fit(ref)  # type: ignore[operator]
    windows = 100
    alarms = sum(mon.test(rng.normal(size=(50, 5))).drift for _ in range(windows))
    assert alarms <= _false_alarm_bound(0.05, windows)
    shifted = rng.normal(size=(50, 5))
    shifted[:, 2] += 1.5  # one feature moved by 1.5 standard deviations
    hits = sum(mon.test(shifted + rng.normal(scale=0.01, size=shifted.shape)).drift for _ in range(10))
    assert hits >= 9


def test_output_monitors_fire_on_what_they_watch() -> None:
    rng = np.random.default_rng(1)
    n, c = 400, 4

    def probs(confident: bool, cls: np.ndarray) -> np.ndarray:
        p = np.full((len(cls), c), 0.02 if confident else 0.3)
        p[np.arange(len(cls)), cls] = 0.94 if confident else 0.1
        if not confident:  # near the boundary: two classes almost tied
            p[np.arange(len(cls)), (cls + 1) % c] = 0.3
            p[np.arange(len(cls)), cls] = 0.32
            p = p / p.sum(1, keepdims=True)
        return p + rng.uniform(0, 1e-3, size=p.shape)

    ref = probs(True, rng.integers(0, c, n))
    ref[: n // 20] = probs(False, rng.integers(0, c, n // 20))  # some clean traffic is near a boundary too
    shift, drop, boundary = PredictionShift(0.01).fit(ref), ConfidenceDrop(0.01).fit(ref), NearBoundaryRate(0.01).fit(ref)
    clean = probs(True, rng.integers(0, c, 100))
    assert not shift.test(clean).drift and not drop.test(clean).drift and not boundary.test(clean).drift
    one_class = probs(True, np.zeros(100, dtype=int))
    assert shift.test(one_class).drift and not drop.test(one_class).drift
    attacked = probs(False, rng.integers(0, c, 100))
    assert drop.test(attacked).drift and boundary.test(attacked).drift
    # Logits are accepted too: a softmax turns them into the same kind of rows.
    assert not shift.test(np.log(clean)).drift


@pytest.fixture(scope="module")
def split(digits: bn.datasets.Dataset) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A CNN trained on part of the digits; reference and traffic come from data it never saw."""
    x, y = torch.cat([digits.x_train, digits.x_test]), torch.cat([digits.y_train, digits.y_test])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, ref, pool = perm[:900], perm[900:1300], perm[1300:]
    net = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8, width=8), x[tr], y[tr], epochs=10, lr=3e-3, seed=0)
    return net, x[ref], x[pool], y[pool]


def test_baseline_is_quiet_on_clean_traffic_and_fires_on_a_pgd_stream(split: tuple) -> None:
    net, x_ref, x_pool, y_pool = split
    base = Baseline(alpha=0.05, n_permutations=100).fit_model(net, x_ref)
    rng = np.random.default_rng(0)
    windows, size = 40, 50
    alarms = sum(base.check_model(net, x_pool[rng.choice(len(x_pool), size, replace=False)]).drift
                 for _ in range(windows))
    assert alarms <= _false_alarm_bound(0.05, windows)
    _, adv, _ = bn.attacks.PGD(norm="linf", steps=10)(net, x_pool, y_pool, epsilons=0.15)
    reports = [base.check_model(net, adv[rng.choice(len(adv), size, replace=False)]) for _ in range(5)]
    assert all(r.drift for r in reports)
    # Evasion inputs sit near the boundary with low confidence: those are the monitors that must see them.
    assert all({"boundary", "confidence"} <= set(r.fired) for r in reports)


def test_baseline_round_trips_through_its_file_and_refuses_bad_input(split: tuple, tmp_path: Path) -> None:
    net, x_ref, x_pool, _ = split
    base = Baseline(alpha=0.01, n_permutations=50).fit_model(net, x_ref)
    path = base.save(tmp_path / "baseline.npz")
    again = Baseline.load(path)
    window = x_pool[:60]
    assert again.check_model(net, window).to_dict() == base.check_model(net, window).to_dict()
    with pytest.raises(bn.InputError, match="finite"):
        base.check(np.full((30, 64), np.nan), np.full((30, 10), 0.1))
    with pytest.raises(bn.InputError, match="64"):
        base.check(np.zeros((30, 10)), np.full((30, 10), 0.1))
    with pytest.raises(bn.InputError, match="fit"):
        KSDrift().test(np.zeros((5, 2)))
    with pytest.raises(bn.InputError, match="alpha"):
        Baseline(alpha=1.5).fit_model(net, x_ref)
    (tmp_path / "junk.npz").write_bytes(b"not a baseline")
    with pytest.raises(bn.InputError, match="baseline"):
        Baseline.load(tmp_path / "junk.npz")


def test_stream_monitor_reports_each_full_window(split: tuple) -> None:
    net, x_ref, x_pool, _ = split
    base = Baseline(alpha=0.01, n_permutations=50).fit_model(net, x_ref)
    stream = StreamMonitor(base, window=40)
    probs = bn.monitor.model_probabilities(net, x_pool[:100])
    got = [stream.update(x_pool[i:i + 30].reshape(30, -1).numpy(), probs[i:i + 30]) for i in range(0, 90, 30)]
    assert got[0] is None and got[1] is not None and got[2] is not None  # 30 -> none, 60 -> one, 90 -> two
    assert len(stream.history) == 2 and all(r.results[0].n_window == 40 for r in stream.history)


def test_cli_fit_then_check_gates_on_drift(split: tuple, tmp_path: Path) -> None:
    net, x_ref, x_pool, y_pool = split
    model = tmp_path / "model.pt"
    torch.jit.trace(net.eval(), x_ref[:2]).save(str(model))
    np.savez(tmp_path / "ref.npz", x=x_ref.numpy())
    np.savez(tmp_path / "clean.npz", x=x_pool[:200].numpy())
    _, adv, _ = bn.attacks.PGD(norm="linf", steps=10)(net, x_pool[:200], y_pool[:200], epsilons=0.15)
    np.savez(tmp_path / "attack.npz", x=adv.numpy())
    runner = CliRunner()
    base = tmp_path / "baseline.npz"
    res = runner.invoke(app, ["monitor", "fit", "--model", str(model), "--reference", str(tmp_path / "ref.npz"),
                              "--out", str(base)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["monitor", "fit", "--model", str(model), "--reference", str(tmp_path / "ref.npz"),
                              "--out", str(base)])
    assert res.exit_code == 2 and "--force" in res.output  # an existing baseline is not overwritten
    res = runner.invoke(app, ["monitor", "fit", "--model", str(model), "--reference", str(tmp_path / "ref.npz"),
                              "--out", str(model), "--force"])
    assert res.exit_code == 2 and model.stat().st_size > 0  # never over an input, even with --force
    check = ["monitor", "check", "--model", str(model), "--baseline", str(base), "--window", "100", "--json"]
    res = runner.invoke(app, [*check, "--data", str(tmp_path / "clean.npz")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*check, "--data", str(tmp_path / "attack.npz")])
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)
    assert out["windows"] == 2 and out["drifted"] == [0, 1]
    res = runner.invoke(app, [*check, "--data", str(tmp_path / "clean.npz"), "--window", "5"])
    assert res.exit_code == 2 and "--window" in res.output

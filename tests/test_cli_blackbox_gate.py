"""`bastion evaluate` gate on a model that can only be attacked black-box (Gaussian naive Bayes in a skops file:
no exact torch replica, no tree structure to search, only its scores).

Its robust accuracy comes from score/decision-based attacks alone, so it is an upper bound: a HIGH
``blackbox_only`` finding fails a ``--min-robust-accuracy`` gate (exit 1) even when the figure meets the
threshold. ``--allow-blackbox-only`` accepts the bound, and then the gate passes (exit 0) exactly when the
figure meets the threshold. The threshold is read off the run itself (the figure, and one example more), so
nothing here depends on what this model happens to score.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bastion.cli.main import app

runner = CliRunner()
N = 30


@pytest.fixture(scope="module")
def bayes_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    sio = pytest.importorskip("skops.io")
    from sklearn.datasets import make_classification
    from sklearn.naive_bayes import GaussianNB

    x, y = make_classification(n_samples=300 + N, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
                               class_sep=1.0, random_state=0)
    x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))  # features in [0, 1], the CLI's default bounds
    model = GaussianNB().fit(x[N:], y[N:])
    d = tmp_path_factory.mktemp("bayes")
    sio.dump(model, str(d / "bayes.skops"))
    np.savez(d / "test.npz", x=x[:N].astype(np.float32), y=y[:N].astype(np.int64))
    return {"model": d / "bayes.skops", "data": d / "test.npz"}


def _evaluate(files: dict[str, Path], *extra: str) -> tuple[int, dict]:
    res = runner.invoke(app, ["evaluate", "--model", str(files["model"]), "--data", str(files["data"]),
                              "--eps", "0.05", "--suite", "fast", "--no-checks", "--json", *extra])
    assert res.exit_code in (0, 1), res.stdout + res.stderr
    return res.exit_code, json.loads(res.stdout)


def test_blackbox_only_figure_fails_the_gate_unless_accepted_and_then_only_below_threshold(
        bayes_files: dict[str, Path]) -> None:
    code, ungated = _evaluate(bayes_files)
    assert code == 0  # no threshold: nothing to fail
    figure = ungated["robust_accuracy"]["0.05"]
    assert ungated["upper_bound"] is True and ungated["bounded_by"]
    assert 0.0 < figure < 1.0, "pick data where the bound is neither trivial nor total"
    severity = {f["check"]: f["severity"] for f in ungated["findings"]}
    assert severity["blackbox_only"] == "high"

    # The figure meets the threshold, but it is only an upper bound: the gate fails.
    code, strict = _evaluate(bayes_files, "--min-robust-accuracy", repr(figure))
    assert strict["robust_accuracy"]["0.05"] == figure  # same seed, same figure
    assert code == 1 and strict["passed"] is False
    assert strict["failed_epsilons"] == [] and "blackbox_only" in strict["untrusted_because"]

    # Accepted as an upper bound: passes at the figure itself, fails one example above it.
    code, lenient = _evaluate(bayes_files, "--min-robust-accuracy", repr(figure), "--allow-blackbox-only")
    assert {f["check"]: f["severity"] for f in lenient["findings"]}["blackbox_only"] == "warning"
    assert code == 0 and lenient["passed"] is True and lenient["upper_bound"] is True
    above = min(1.0, figure + 1.0 / N)
    code, too_high = _evaluate(bayes_files, "--min-robust-accuracy", repr(above), "--allow-blackbox-only")
    assert code == 1 and too_high["passed"] is False and too_high["failed_epsilons"] == ["0.05"]

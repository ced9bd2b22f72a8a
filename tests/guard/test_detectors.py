"""Detectors in the path, each against a case with a known answer, at the FPR they were calibrated for."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _guard_helpers import batch
from fastapi.testclient import TestClient

import bastion as bn
from bastion.guard import create_app
from bastion.guard.detectors import KINDS, _probs, build

FPR = 0.05


@pytest.fixture(scope="module")
def wrapped(digits_cnn: torch.nn.Module) -> bn.Model:
    return bn.wrap(digits_cnn, (0.0, 1.0))


def _rate(det: Any, model: bn.Model, x: torch.Tensor) -> float:
    return float((det.score(model, x, _probs(model, x)) > det.threshold_).mean())


def _boundary(model: bn.Model, x: torch.Tensor) -> torch.Tensor:
    """Points on the decision boundary: bisection between pairs of inputs the model labels differently."""
    a, b = x[:-1], x[1:]
    ya, yb = model.predict(a), model.predict(b)
    keep = ya != yb
    a, b, ya = a[keep], b[keep], ya[keep]
    lo, hi = torch.zeros(len(a), 1, 1, 1), torch.ones(len(a), 1, 1, 1)
    for _ in range(30):
        mid = (lo + hi) / 2
        same = (model.predict(a + mid * (b - a)) == ya).view(-1, 1, 1, 1)
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    return a + hi * (b - a)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "prada"])
def test_false_positive_rate_on_held_out_clean(kind: str, wrapped: bn.Model, digits: bn.datasets.Dataset) -> None:
    det = build({"kind": kind, "fpr": FPR}, (0.0, 1.0)).fit(wrapped, digits.x_test[:300])
    held = digits.x_test[300:]
    n = len(held)
    # threshold from 150 calibration scores, rate on 150 others: both binomial; 4 sd of each, summed
    bound = FPR + 4 * math.sqrt(FPR * (1 - FPR) / n) * 2
    assert _rate(det, wrapped, held) <= bound


@pytest.mark.parametrize(("kind", "least"), [("mahalanobis", 0.9), ("knn", 0.6)])
def test_ood_flags_inverted_digits(kind: str, least: float, wrapped: bn.Model, digits: bn.datasets.Dataset) -> None:
    """Negatives of the digits (white background) are out of distribution. Measured: Mahalanobis 1.00, kNN
    0.77 on 100; the bounds sit 4 binomial sd below. (Uniform noise is harder: 0.39 and 0.23, see bench.)"""
    det = build({"kind": kind, "fpr": FPR}, (0.0, 1.0)).fit(wrapped, digits.x_test[:300])
    assert _rate(det, wrapped, 1.0 - digits.x_test[300:400]) >= least


def test_margin_flags_boundary_points(wrapped: bn.Model, digits: bn.datasets.Dataset) -> None:
    det = build({"kind": "margin", "fpr": FPR}, (0.0, 1.0)).fit(wrapped, digits.x_test[:300])
    points = _boundary(wrapped, digits.x_test[300:])
    assert len(points) >= 100
    assert _rate(det, wrapped, points) >= 0.95


def test_gradient_detectors_catch_pgd(wrapped: bn.Model, digits: bn.datasets.Dataset) -> None:
    held, y = digits.x_test[300:], digits.y_test[300:]
    _, clipped, _ = bn.attacks.PGD(norm="linf")(wrapped, held, y, epsilons=0.2)
    adv = clipped[0] if isinstance(clipped, (list, tuple)) else clipped
    for kind in ("margin", "gradnorm"):
        det = build({"kind": kind, "fpr": FPR}, (0.0, 1.0)).fit(wrapped, digits.x_test[:300])
        # measured about 0.5 on this model; 0.25 is > 5 binomial sd below that with 150 examples
        assert _rate(det, wrapped, adv) >= 0.25, kind
    # Feature squeezing on 8x8 digits, bit depth only (the 2x2 median filter, which made clean scores
    # saturate at 1.995 of 2.0 and the detector never fire, is skipped on small images). Measured 0.77 here
    # at FPR 0.05 (0.19 at FPR 0.01) on 150 examples; 0.5 is > 7 binomial sd below it.
    det = build({"kind": "squeeze", "fpr": FPR}, (0.0, 1.0)).fit(wrapped, digits.x_test[:300])
    assert det.threshold_ is not None and det.threshold_ < 1.0, det.threshold_
    assert _rate(det, wrapped, adv) >= 0.5


def test_reject_and_prada_in_the_request_path(make_gateway: Any, tmp_path: Path, wrapped: bn.Model,
                                              digits: bn.datasets.Dataset) -> None:
    cfg = {"detectors": [{"kind": "margin", "fpr": FPR, "action": "reject"},
                         {"kind": "prada", "threshold": 0.9, "min_queries": 20, "action": "flag"}]}
    gw = make_gateway(f"sqlite:///{tmp_path / 'd.db'}", config=cfg)
    honest, _ = gw.keys.create("honest", ["infer"])
    prober, _ = gw.keys.create("prober", ["infer"])
    with TestClient(create_app(gw)) as c:
        url = "/v2/models/digits/infer"
        r = c.post(url, json=batch(_boundary(wrapped, digits.x_test[300:320])[:1]), headers={"X-API-Key": honest})
        assert r.status_code == 403 and r.json()["reason"] == "detector:margin"
        # an extraction-like stream: tiny steps from one seed image (PRADA's signature)
        seed = digits.x_test[0:1]
        flags = []
        for i in range(40):
            step = seed.clone()
            step.view(-1)[i % 64] = float(step.view(-1)[i % 64] > 0.5)
            r = c.post(url, json=batch(step), headers={"X-API-Key": prober})
            if r.status_code == 200:
                flags.append("prada" in r.json()["parameters"]["flags"])
        assert any(flags[25:]) and not any(flags[:19])
    from bastion.guard.audit import _rows

    rows = list(_rows(gw.audit.engine))
    assert rows[0]["decision"] == "reject" and rows[0]["status"] == 403
    assert sum(r["decision"] == "flag" for r in rows) == sum(flags)


def test_features_one_pass_match_the_model(digits_cnn: torch.nn.Module, digits: bn.datasets.Dataset) -> None:
    """The features a detector reads are those of the module on the input as the wrapper feeds it (with its
    normalisation), whether the model is eager or TorchScript, and the logits of the shared pass are the
    model's own: reusing the request's forward pass changes no score."""
    import numpy as np

    from bastion.guard.detectors import features, forward

    x = digits.x_test[:20]
    mean, std = 0.3, 0.4
    eager = bn.wrap(digits_cnn, (0.0, 1.0), preprocessing=(mean, std))
    scripted = bn.wrap(torch.jit.script(digits_cnn), (0.0, 1.0), preprocessing=(mean, std))
    seen: list[torch.Tensor] = []
    last = [m for m in digits_cnn.modules() if isinstance(m, torch.nn.Linear)][-1]
    handle = last.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        digits_cnn((x - mean) / std)
    handle.remove()
    want = seen[-1].flatten(1).double().numpy()
    for model in (eager, scripted):
        with torch.no_grad():
            fresh = features(model, x.clone())
            assert np.allclose(fresh, want, atol=1e-5)
            logits = forward(model, x)
            assert torch.allclose(logits, model.scores(x), atol=1e-6)
            assert features(model, x) is not None and np.allclose(features(model, x), want, atol=1e-5)
    # the cached pass is tied to the tensor's contents: changing x in place recomputes
    with torch.no_grad():
        forward(scripted, x)
        y = x.clone()
        forward(scripted, y)
        y.mul_(0.5)
        assert not np.allclose(features(scripted, y), want, atol=1e-3)


def test_fires_on_any_score_over_the_threshold_with_or_without_the_maximum() -> None:
    from bastion.guard.detectors import Margin

    det = Margin()
    scores = np.array([0.1, 0.9, 0.2], dtype=np.float32)
    assert not det.fires(scores) and not det.fires(scores, 0.9)   # not fitted: never fires
    det.threshold_ = 0.5
    assert det.fires(scores) and det.fires(scores, float(scores.max()))
    assert not det.fires(scores * 0.5) and not det.fires(scores * 0.5, 0.45)
    with_nan = np.array([np.nan, 0.9], dtype=np.float32)        # a NaN maximum: judged element by element
    assert det.fires(with_nan, float(with_nan.max()))
    assert not det.fires(np.array([np.nan, 0.1]), float("nan"))

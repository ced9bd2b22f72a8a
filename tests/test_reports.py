"""Reports from an evaluation: JSON round trip, one self-contained HTML file, Markdown tables."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from torch import nn

import bastion as bn
from bastion.assess.plots import largest_changes, robustness_curve_svg
from bastion.assess.result import EvaluationResult, provenance, robustness_gate, sha256_of


@pytest.fixture(scope="module")
def image_result(digits_cnn: nn.Module, digits: bn.datasets.Dataset) -> bn.assess.EvaluationResult:
    # A cheap single-attack suite: the reports, not the attack strength, are under test here.
    return bn.evaluate(digits_cnn, digits.x_test[:30], digits.y_test[:30], norm="linf", epsilons=[0.2, 0.1],
                       epsilon_labels=["2/10", "0.1"], suite=["apgd-ce"], checks=False, keep_examples=4)


def test_json_round_trip(image_result: bn.assess.EvaluationResult, tmp_path: Path) -> None:
    text = image_result.to_json()
    data = json.loads(text)
    assert data["epsilons"] == [0.2, 0.1]
    assert data["epsilon_labels"] == ["2/10", "0.1"]
    assert data["robust_accuracy"] == {"2/10": image_result.robust_accuracy[0], "0.1": image_result.robust_accuracy[1]}
    assert data["clean_accuracy"] == image_result.clean_accuracy
    assert len(data["per_example"]["broken_at"]) == 30
    assert len(data["examples"]) == len(image_result.examples) > 0
    assert data["attacks"][0]["name"] == "APGD-CE"
    # Never-broken examples have an infinite epsilon, which JSON cannot hold: it must become null.
    assert all(v is None or v >= 0 for v in data["per_example"]["broken_at"])
    assert json.loads(json.dumps(data)) == data
    paths = image_result.save(tmp_path / "out")
    assert {p.name for p in paths.values()} == {"report.html", "report.md", "result.json"}
    # result.json also keeps the kept examples' pixels (8x8 digits are small), so reports can be redrawn.
    assert json.loads(paths["json"].read_text()) == json.loads(image_result.to_json(with_arrays=True))


def _pngs(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def test_html_is_self_contained(image_result: bn.assess.EvaluationResult, tmp_path: Path) -> None:
    path = image_result.save_html(tmp_path / "r.html")
    html = path.read_text(encoding="utf-8")
    assert "<svg" in html and "<polyline" in html
    # Three pictures (clean, adversarial, perturbation) per kept example, each a real PNG.
    images = _pngs(html)
    assert len(images) == 3 * len(image_result.examples)
    assert all(im.format == "PNG" and im.size[0] >= 8 for im in images)
    assert not re.search(r"https?://", html)
    assert not re.search(r"<(script|link)\b[^>]*\bsrc=|<link\b", html)
    assert "2/10" in html and "APGD-CE" in html


def test_html_lists_findings_and_tabular_changes(digits: bn.datasets.Dataset, tmp_path: Path) -> None:
    flat = bn.datasets.digits(flatten=True)
    mlp = bn.zoo.train(bn.zoo.MLP(64, 10, hidden=(32,)), flat.x_train, flat.y_train, epochs=5, lr=1e-2, seed=0)
    res = bn.evaluate(mlp, flat.x_test[:20], flat.y_test[:20], norm="l2", epsilons=[1.5], suite=["fgsm"],
                      checks=False, keep_examples=3)
    res.findings.append(bn.assess.Finding("unbounded_attack_fails", "high", "made-up <b>finding</b>", {"x": 1}))
    html = res.save_html(tmp_path / "t.html").read_text(encoding="utf-8")
    assert "unbounded_attack_fails" in html
    assert "made-up &lt;b&gt;finding&lt;/b&gt;" in html  # escaped, never injected
    assert "data:image/png" not in html  # tabular inputs get a table of feature changes instead
    assert "largest feature changes" in html
    k = res.examples[0]
    changes = largest_changes(k.x, k.x_adv, k=5)
    assert changes and changes[0][0] == int((k.x_adv - k.x).abs().argmax())


def test_markdown_has_the_table(image_result: bn.assess.EvaluationResult, tmp_path: Path) -> None:
    md = image_result.save_markdown(tmp_path / "r.md").read_text(encoding="utf-8")
    assert "| ε | robust accuracy |" in md
    for lab, acc in zip(image_result.epsilon_labels, image_result.robust_accuracy, strict=True):
        assert f"| {lab} | {100 * acc:.1f} % |" in md
    assert f"| 0 (clean) | {100 * image_result.clean_accuracy:.1f} % |" in md
    # Rows sorted by epsilon, whatever order they were given in.
    assert md.index("| 0.1 |") < md.index("| 2/10 |")
    assert "| APGD-CE | white-box |" in md


def test_svg_points_follow_the_curve() -> None:
    svg = robustness_curve_svg([0.1, 0.2], [0.5, 0.0], 1.0, "linf")
    pts = re.search(r'<polyline points="([^"]+)"', svg)
    assert pts is not None
    ys = [float(p.split(",")[1]) for p in pts.group(1).split()]
    # Clean (1.0) at the top, 50 % in the middle, 0 % at the bottom: y grows as accuracy falls.
    assert len(ys) == 3 and ys[0] < ys[1] < ys[2]
    assert ys[1] == pytest.approx((ys[0] + ys[2]) / 2)


def test_gate_checks_every_epsilon_and_the_masking_findings() -> None:
    high = [bn.assess.Finding("unbounded_attack_fails", "high", "m")]
    gate = robustness_gate(["0.1", "0.2"], [0.6, 0.4], [], 0.5)
    assert gate["verdict"] == "FAIL" and [c["result"] for c in gate["checks"]] == ["PASS", "FAIL", "PASS"]
    assert robustness_gate(["0.1"], [0.6], [], 0.5)["verdict"] == "PASS"
    assert robustness_gate(["0.1"], [0.6], high, 0.5)["verdict"] == "FAIL"
    assert robustness_gate(["0.1"], [0.6], high, 0.5, allow_masking=True)["verdict"] == "PASS"
    assert robustness_gate(["0.1"], [0.0], high, None) == {"verdict": "NO GATE", "min_robust_accuracy": None,
                                                            "allow_masking": False, "checks": []}


def test_reports_state_verdict_files_command_version_and_time(image_result: bn.assess.EvaluationResult,
                                                               tmp_path: Path) -> None:
    model, data = tmp_path / "m.pt", tmp_path / "d.npz"
    model.write_bytes(b"model bytes")
    data.write_bytes(b"data bytes")
    res = EvaluationResult.from_dict(json.loads(image_result.to_json(with_arrays=True)))
    res.gate = robustness_gate(res.epsilon_labels, res.robust_accuracy, res.findings, 0.99)
    res.provenance = provenance(model, data, ["bastion", "evaluate", "--model", "m p.pt"])
    paths = res.save(tmp_path / "out")
    saved = json.loads(paths["json"].read_text())
    assert saved["verdict"] == "FAIL" and saved["gate"]["min_robust_accuracy"] == 0.99
    assert saved["provenance"]["model"]["sha256"] == hashlib.sha256(b"model bytes").hexdigest()
    assert saved["provenance"]["data"]["sha256"] == hashlib.sha256(b"data bytes").hexdigest()
    assert saved["provenance"]["command"] == "bastion evaluate --model 'm p.pt'"
    assert saved["provenance"]["bastion_version"] == bn.__version__
    created = datetime.datetime.fromisoformat(saved["provenance"]["created"])
    assert created.utcoffset() == datetime.timedelta(0)
    md, html = paths["markdown"].read_text(), paths["html"].read_text()
    for text in (md, html):
        assert "FAIL" in text and "0.99" in text and hashlib.sha256(b"model bytes").hexdigest() in text
        assert hashlib.sha256(b"data bytes").hexdigest() in text and saved["provenance"]["created"] in text
        assert bn.__version__ in text and "m.pt" in text and "d.npz" in text
    assert "## Verdict: **FAIL**" in md
    assert "| robust accuracy at ε=0.1 | >= 0.99 |" in md
    # A folder's digest covers its files' names and contents.
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a").write_bytes(b"1")
    before = sha256_of(tmp_path / "f")
    (tmp_path / "f" / "a").write_bytes(b"2")
    assert sha256_of(tmp_path / "f") != before


def test_report_without_gate_says_it_clears_nothing(image_result: bn.assess.EvaluationResult) -> None:
    from bastion.assess.report_markdown import render_markdown

    md = render_markdown(image_result)
    assert "## Verdict: **NO GATE**" in md and "does not clear the model" in md
    assert "not recorded (an in-memory model)" in md


def test_result_round_trips_through_json(image_result: bn.assess.EvaluationResult) -> None:
    back = EvaluationResult.from_dict(json.loads(image_result.to_json(with_arrays=True)))
    assert back.to_dict(with_arrays=True) == json.loads(image_result.to_json(with_arrays=True))
    from bastion.assess.report_markdown import render_markdown

    assert render_markdown(back) == render_markdown(image_result)
    with pytest.raises(bn.errors.InputError, match=r"result\.json"):
        EvaluationResult.from_dict({"norm": "linf"})

"""bastion.scale: sharded runs on a local Ray cluster agree with the local ones.

Known answers. The sharded plan seeds each block of examples (attacks) or each example (certification)
from (seed, index), never from a worker, so a Ray run with 2 workers must reproduce the in-process run of
the same plan bit for bit: equal tensors, not close ones. Where nothing is random (FGSM and DeepFool, a
scan) the sharded run must also equal the plain unsharded local run. Certification differs from the
unsharded run only by its noise draws: certified accuracies agree within a paired binomial margin.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from _margins import paired_margin
from bastion.scale import ModelSpec, certify_sharded, evaluate_sharded, open_backend, scan_sharded

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed "
                                "(pip install 'bastion-ml[ray]')")

N = 96  # two blocks of 64 and 32: a shard boundary inside the data


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A 2-CPU local cluster and one backend on it: its two actors start once for the whole module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    with open_backend("ray", workers=2) as backend:
        yield backend
    ray.shutdown()


@pytest.fixture(scope="module")
def net(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    import bastion as bn

    model = bn.zoo.train(bn.zoo.SmallCNN(1, 10, 8), digits.x_train, digits.y_train, epochs=3, seed=0)
    path = tmp_path_factory.mktemp("scale") / "model.pt"
    torch.jit.script(model.eval()).save(str(path))
    return path, digits


def same_evaluation(a: Any, b: Any) -> None:
    assert a.robust_accuracy == b.robust_accuracy and a.clean_accuracy == b.clean_accuracy
    assert torch.equal(a.correct, b.correct) and torch.equal(a.broken_eps, b.broken_eps)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.adv_pred, b.adv_pred)
    assert a.broken_by == b.broken_by
    assert [(s.name, s.broken, s.attempted) for s in a.attacks] == [(s.name, s.broken, s.attempted) for s in b.attacks]
    assert [e.index for e in a.examples] == [e.index for e in b.examples]


def test_sharded_evaluation_on_ray_equals_the_local_plan(cluster: Any, net: tuple[Path, Any]) -> None:
    path, d = net
    x, y = d.x_test[:N], d.y_test[:N]
    spec = ModelSpec.from_path(path)
    kw: dict[str, Any] = {"norm": "linf", "epsilons": [0.05, 0.1], "suite": "fast", "seed": 3, "checks": True}
    with open_backend("local") as local:
        ref = evaluate_sharded(local, spec, x, y, **kw)
    got = evaluate_sharded(cluster, spec, x, y, **kw)
    same_evaluation(got, ref)
    assert got.settings["sharding"]["workers"] == 2 and got.settings["sharding"]["backend"] == "ray" and got.settings["sharding"]["shards"] == 2
    assert [f.check for f in got.findings] == [f.check for f in ref.findings]
    assert 0 < got.robust_accuracy[1] < got.clean_accuracy  # the attacks did break something


def test_deterministic_attacks_sharded_equal_unsharded(cluster: Any, net: tuple[Path, Any]) -> None:
    import bastion as bn
    from bastion.core.loading import load_model

    path, d = net
    x, y = d.x_test[:N], d.y_test[:N]
    kw: dict[str, Any] = {"norm": "linf", "epsilons": [0.1], "suite": ["fgsm", "deepfool"], "checks": False}
    plain = bn.evaluate(load_model(path), x, y, batch_size=32, **kw)
    got = evaluate_sharded(cluster, ModelSpec.from_path(path), x, y, batch_size=32, **kw)
    assert got.robust_accuracy == plain.robust_accuracy
    assert torch.equal(got.broken_eps, plain.broken_eps) and got.broken_by == plain.broken_by
    assert torch.allclose(got.x_adv, plain.x_adv, atol=1e-6)


def test_sharded_certification_is_worker_independent(cluster: Any, net: tuple[Path, Any]) -> None:
    from bastion.certify import Smoothed
    from bastion.core.loading import load_model

    path, d = net
    n = 40  # certification runs one example at a time: fewer of them keep the test short
    x, y = d.x_test[:n], d.y_test[:n]
    spec = ModelSpec.from_path(path)
    kw: dict[str, Any] = {"sigma": 0.25, "n0": 20, "n": 100, "alpha": 0.01, "seed": 1, "block": 16}
    with open_backend("local") as local:
        ref = certify_sharded(local, spec, x, **kw)
    got = certify_sharded(cluster, spec, x, **kw)
    for field in ("prediction", "radius", "p_lower", "counts"):
        assert torch.equal(getattr(got, field), getattr(ref, field)), field
    # against the unsharded run: the same procedure with other noise draws
    plain = Smoothed(load_model(path), 0.25, seed=1).certify(x, n0=20, n=100, alpha=0.01)
    a, b = got.certified_accuracy(y, 0.1)[0], plain.certified_accuracy(y, 0.1)[0]
    assert abs(a - b) <= paired_margin(n)
    assert a > 0  # something was certified: the comparison is not 0 == 0


def test_sharded_scan_equals_the_plain_scan(cluster: Any, tmp_path: Path) -> None:
    import pickle

    from bastion.scan import scan_paths

    class Evil:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            import os

            return os.system, ("true",)

    for i in range(9):
        (tmp_path / f"ok{i}.pkl").write_bytes(pickle.dumps({"w": list(range(i * 50))}))
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(Evil()))
    np.save(tmp_path / "a.npy", np.arange(10))
    plain = scan_paths([tmp_path])
    got = scan_sharded(cluster, [tmp_path])
    assert got.to_dict() == plain.to_dict()
    assert any(f.severity.name in ("HIGH", "CRITICAL") for f in got.findings)
    # and through the CLI, on the same cluster (its actors are reused, not started again)
    from typer.testing import CliRunner

    from bastion.cli.main import app

    res = CliRunner().invoke(app, ["scan", str(tmp_path), "--format", "json", "--backend", "ray", "--workers", "2"])
    assert res.exit_code == 1, res.output
    assert json.loads(res.stdout)["files_scanned"] == plain.files_scanned == 11


def test_backend_ray_without_ray_exits_2_with_the_install_line(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bastion.cli.main import app

    real = importlib.util.find_spec
    # as on a machine without the extra: nothing named ray can be found
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    (tmp_path / "m.pt").write_bytes(b"")
    for cmd in (["assess", "--model", tmp_path / "m.pt"], ["scan", tmp_path],
                ["evaluate", "--model", tmp_path / "m.pt", "--data", tmp_path / "m.pt", "--eps", "0.1"],
                ["certify", "--model", tmp_path / "m.pt", "--data", tmp_path / "m.pt"]):
        res = CliRunner().invoke(app, [*map(str, cmd), "--backend", "ray"])
        said = " ".join(res.output.replace("│", " ").split())
        assert res.exit_code == 2 and "pip install 'bastion-ml[ray]'" in said, (cmd, res.output)


def test_cli_commands_on_ray_report_the_sharded_figures(cluster: Any, net: tuple[Path, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bastion.cli.main import app

    path, d = net
    n = 70
    x, y = d.x_test[:n], d.y_test[:n]
    np.savez(tmp_path / "test.npz", x=x.numpy(), y=y.numpy())
    spec = ModelSpec.from_path(path)
    with open_backend("local") as local:
        ref = evaluate_sharded(local, spec, x, y, norm="linf", epsilons=[0.1], suite="fast", seed=0, checks=False)
        cert = certify_sharded(local, spec, x, sigma=0.25, n0=10, n=50, alpha=0.05, seed=0)
    res = CliRunner().invoke(app, ["evaluate", "--model", str(path), "--data", str(tmp_path / "test.npz"), "--eps",
                                   "0.1", "--suite", "fast", "--no-checks", "--json", "--backend", "ray"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["robust_accuracy"] == {"0.1": ref.robust_accuracy[0]}
    res = CliRunner().invoke(app, ["certify", "--model", str(path), "--data", str(tmp_path / "test.npz"), "--n", "50",
                                   "--n0", "10", "--alpha", "0.05", "--radii", "0,0.1", "--json", "--backend", "ray"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["certified_accuracy"] == cert.certified_accuracy(y, [0.0, 0.1])
    assert body["sharding"]["backend"] == "ray"


def test_assess_on_ray_shards_the_scan_and_the_attacks(cluster: Any, net: tuple[Path, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bastion.cli.main import app

    path, d = net
    np.savez(tmp_path / "test.npz", x=d.x_test[:64].numpy(), y=d.y_test[:64].numpy())
    res = CliRunner().invoke(app, ["assess", "--model", str(path), "--data", str(tmp_path / "test.npz"), "--budget",
                                   "fast", "--json", "--backend", "ray", "--workers", "2"])
    body = json.loads(res.stdout)
    assert res.exit_code in (0, 1), res.output
    robust = next(c for c in body["checks"] if c["id"] == "robust_accuracy")
    assert robust["details"]["sharding"]["backend"] == "ray" and body["provenance"]["execution"]["workers"] == 2
    with open_backend("local") as local:
        ref = evaluate_sharded(local, ModelSpec.from_path(path), d.x_test[:64], d.y_test[:64], norm="linf",
                               epsilons=[0.1], suite="fast", seed=0, checks=False)
    assert robust["figure"] == ref.robust_accuracy[0]

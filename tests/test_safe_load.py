"""safe_load and `bastion convert`: real checkpoints round-trip exactly, malicious ones are refused unrun."""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bastion
from bastion.cli.main import app
from bastion.errors import ModelLoadError
from bastion.scan.policy import Policy
from bastion.scan.safe_load import AllowlistUnpickler, UnsafeModelError, safe_load

# tests/ is not a package: pytest puts it on sys.path, so the corpus generators import as ``scan.*``
from scan import malicious
from scan.benign import _state_dict

#: calls reach this list only if an allowlisted global ran (see test_refusal_happens_before_any_call)
CALLED: list[str] = []


def record(tag: str) -> str:
    CALLED.append(tag)
    return tag


def _assert_same(out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert list(out) == list(ref)
    for k, v in ref.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape and out[k].stride() == v.stride(), k
        assert torch.equal(out[k], v), k


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_state_dict_round_trips_exactly(tmp_path: Path, legacy: bool) -> None:
    sd = _state_dict()
    path = tmp_path / "m.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    out = safe_load(path)
    _assert_same(out, torch.load(path, weights_only=True))
    assert bastion.safe_load is safe_load


def _optimizer_state(model: torch.nn.Module) -> dict[str, object]:
    # the layout torch.optim.SGD(momentum=0.9).state_dict() has after one step, written out by hand:
    # constructing a real optimizer imports torch._dynamo, which costs seconds per test session
    params = list(model.parameters())
    return {"state": {i: {"momentum_buffer": torch.full_like(p, 0.5)} for i, p in enumerate(params)},
            "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0,
                              "nesterov": False, "maximize": False, "foreach": None,
                              "differentiable": False, "fused": None, "params": list(range(len(params)))}]}


def test_map_location_moves_every_tensor(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(3), "p": torch.nn.Parameter(torch.zeros(2)), "meta": [torch.arange(2)]},
               tmp_path / "m.pt")
    out = safe_load(tmp_path / "m.pt", map_location="meta")
    assert out["w"].device.type == "meta" and out["meta"][0].device.type == "meta"
    assert isinstance(out["p"], torch.nn.Parameter) and out["p"].device.type == "meta"


def test_checkpoint_with_optimizer_and_parameters(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = _optimizer_state(model)
    ckpt = {"model": model.state_dict(), "optimizer": opt, "epoch": 2,
            "param": torch.nn.Parameter(torch.ones(2))}
    torch.save(ckpt, tmp_path / "c.pth")
    out = safe_load(tmp_path / "c.pth")
    assert isinstance(out["model"], OrderedDict) and out["epoch"] == 2
    assert isinstance(out["param"], torch.nn.Parameter)
    _assert_same(out["model"], model.state_dict())
    assert out["optimizer"]["param_groups"] == opt["param_groups"]
    assert torch.equal(out["optimizer"]["state"][3]["momentum_buffer"], torch.full((2,), 0.5))


def test_sklearn_joblib_and_pickle_need_weights_only_false(tmp_path: Path) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(x, y)
    joblib.dump(est, tmp_path / "m.joblib", compress=3)
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(est))
    for name in ("m.joblib", "m.pkl"):
        with pytest.raises(UnsafeModelError, match="weights_only"):
            safe_load(tmp_path / name)
        loaded = safe_load(tmp_path / name, weights_only=False)
        np.testing.assert_array_equal(loaded.predict_proba(x), est.predict_proba(x))


def test_joblib_arrays_load_with_weights_only(tmp_path: Path) -> None:
    import joblib

    arrays = {"w": np.arange(6.0).reshape(2, 3), "i": np.arange(4, dtype=np.int32)}
    joblib.dump(arrays, tmp_path / "a.joblib")
    out = safe_load(tmp_path / "a.joblib")
    for k, v in arrays.items():
        np.testing.assert_array_equal(out[k], v)


@pytest.mark.parametrize("container", ["torch_zip", "torch_legacy", "joblib_zlib", "lying_png"])
def test_malicious_checkpoint_is_refused_with_the_global_named(tmp_path: Path, container: str) -> None:
    wrap = {c: fn for c, _, fn in malicious.CONTAINERS}[container]
    pkl = malicious.assemble(malicious.Call(malicious.G("os", "system"), (malicious.CMD,)), 2)
    path = tmp_path / "evil.pt"
    path.write_bytes(wrap(pkl))
    with pytest.raises(UnsafeModelError, match=r"os\.system") as info:
        safe_load(path)
    assert info.value.global_name == "os.system"


def test_every_raw_corpus_pickle_is_refused_by_the_unpickler_alone() -> None:
    """The second lock on its own (no scan first): every bypass payload stops at find_class."""
    policy = Policy.default()
    for payload in malicious.payloads():
        for proto in malicious.PROTOCOLS:
            data = payload.build(proto)
            with pytest.raises(UnsafeModelError, match="refused"):
                AllowlistUnpickler(io.BytesIO(data), policy=policy, weights_only=False).load()


def test_refusal_happens_before_any_call() -> None:
    """A policy that allows one harmless function: it runs only when nothing before it is refused."""
    policy = Policy.default().extended(allow=[f"{__name__}:record"])
    ok = malicious.assemble(malicious.Call(malicious.G(__name__, "record"), ("ran",)), 2)
    CALLED.clear()
    assert AllowlistUnpickler(io.BytesIO(ok), policy=policy, weights_only=False).load() == "ran"
    assert CALLED == ["ran"]
    CALLED.clear()
    # record("before") would run only after os.system resolved: it never does
    evil = malicious.assemble([malicious.G("os", "system"), malicious.Call(malicious.G(__name__, "record"),
                                                                           ("before",))], 2)
    with pytest.raises(UnsafeModelError, match=r"os\.system"):
        AllowlistUnpickler(io.BytesIO(evil), policy=policy, weights_only=False).load()
    assert CALLED == []


def test_persistent_ids_outside_checkpoints_are_refused() -> None:
    data = b"\x80\x02X\x03\x00\x00\x00abcQ."  # BINPERSID of "abc"
    with pytest.raises(UnsafeModelError, match="persistent id"):
        AllowlistUnpickler(io.BytesIO(data), policy=Policy.default()).load()


def test_bad_inputs_raise_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such model file"):
        safe_load(tmp_path / "missing.pt")
    (tmp_path / "w.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00" + b" " * 118 + b"\n")
    with pytest.raises(ModelLoadError):
        safe_load(tmp_path / "w.npy")
    sd = _state_dict()
    torch.save(sd, tmp_path / "ok.pt")
    truncated = (tmp_path / "ok.pt").read_bytes()[:-200]
    (tmp_path / "cut.pt").write_bytes(truncated)
    with pytest.raises(ModelLoadError):
        safe_load(tmp_path / "cut.pt")


# -- bastion convert ----------------------------------------------------------------------------------

runner = CliRunner()


def test_convert_round_trips_a_nested_state_dict(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    sd = _state_dict()
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "in.pt")
    res = runner.invoke(app, ["convert", str(tmp_path / "in.pt"), str(tmp_path / "out.safetensors")])
    assert res.exit_code == 0, res.output
    assert "from key 'state_dict'" in res.output
    out = load_file(str(tmp_path / "out.safetensors"))
    assert set(out) == set(sd)
    for k, v in sd.items():
        assert torch.equal(out[k], v), k


def test_convert_refuses_malicious_with_exit_1(tmp_path: Path) -> None:
    pkl = malicious.assemble(malicious.Call(malicious.G("os", "system"), (malicious.CMD,)), 2)
    (tmp_path / "evil.pt").write_bytes(malicious.torch_zip(pkl))
    res = runner.invoke(app, ["convert", str(tmp_path / "evil.pt"), str(tmp_path / "o.safetensors")])
    assert res.exit_code == 1
    assert "os.system" in res.output
    assert not (tmp_path / "o.safetensors").exists()


def test_convert_errors_exit_2(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "notensors.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    cases = [
        ([str(tmp_path / "missing.pt"), str(tmp_path / "o.safetensors")], "no such file"),
        ([str(tmp_path / "notensors.pt"), str(tmp_path / "o.safetensors")], "not tensors"),
        ([str(tmp_path / "ok.pt"), str(tmp_path / "o.bin")], ".safetensors"),
        ([str(tmp_path / "ok.pt"), str(tmp_path / "nodir" / "o.safetensors")], "does not exist"),
        ([str(tmp_path / "ok.pt"), str(tmp_path / "o.safetensors"), "--key", "nope"], "--key"),
    ]
    for args, needle in cases:
        res = runner.invoke(app, ["convert", *args])
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.output, (needle, res.output)
    (tmp_path / "o.safetensors").write_bytes(b"x")
    res = runner.invoke(app, ["convert", str(tmp_path / "ok.pt"), str(tmp_path / "o.safetensors")])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, ["convert", str(tmp_path / "ok.pt"), str(tmp_path / "o.safetensors"), "--force",
                              "--json"])
    assert res.exit_code == 0 and '"tensors": 1' in res.output

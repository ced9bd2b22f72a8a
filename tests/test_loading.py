"""Model files and data files: the formats the CLI accepts, and clear errors for everything else."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import bastion as bn
from bastion.core.loading import load_model, sniff
from bastion.datasets import load_data


@pytest.fixture()
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return bn.zoo.MLP(4, 3, hidden=(8,)).eval()


def test_torchscript_roundtrip(tmp_path: Path, tiny: torch.nn.Module) -> None:
    path = tmp_path / "m.model"  # extension deliberately meaningless: formats are sniffed
    torch.jit.save(torch.jit.script(tiny), str(path))
    assert sniff(path) == "torchscript"
    m = load_model(path)
    x = torch.rand(5, 4)
    assert torch.allclose(m.scores(x), tiny(x), atol=1e-6)


def test_safetensors_needs_factory(tmp_path: Path, tiny: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(tiny.state_dict(), str(path))
    with pytest.raises(bn.ModelLoadError, match="--factory"):
        load_model(path)
    m = load_model(path, factory="bastion.zoo:MLP", factory_kwargs={"in_features": 4, "num_classes": 3, "hidden": (8,)})
    x = torch.rand(2, 4)
    assert torch.allclose(m.scores(x), tiny(x), atol=1e-6)
    with pytest.raises(bn.ModelLoadError, match="do not fit"):
        load_model(path, factory="bastion.zoo:MLP", factory_kwargs={"in_features": 5, "num_classes": 3})


def test_pickle_refused_without_trust(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    est = LogisticRegression().fit(np.random.default_rng(0).random((20, 3)), np.arange(20) % 2)
    path = tmp_path / "est.bin"
    path.write_bytes(pickle.dumps(est))
    with pytest.raises(bn.ModelLoadError, match="trust-pickle"):
        load_model(path)
    m = load_model(path, trust_pickle=True)
    assert bn.Capability.SCORES in m.capabilities


def test_skops_loads_without_pickle(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    est = LogisticRegression().fit(np.random.default_rng(0).random((20, 3)), np.arange(20) % 2)
    path = tmp_path / "est.skops"
    sio.dump(est, str(path))
    m = load_model(path)
    x = torch.rand(4, 3)
    assert np.allclose(m.scores(x).numpy(), est.predict_proba(x.numpy()), atol=1e-6)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x08\x01garbage-not-a-model")
    with pytest.raises(bn.ModelLoadError):
        load_model(bad)
    with pytest.raises(bn.ModelLoadError, match="no such"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(bn.ModelLoadError, match="unrecognised"):
        (tmp_path / "r.bin").write_bytes(b"\xff\xfe random")
        load_model(tmp_path / "r.bin")


def test_load_npz_csv_npy_and_folder(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    xt, yt = load_data(tmp_path / "d.npz")
    assert torch.allclose(xt, torch.from_numpy(x)) and yt is not None and yt.tolist() == y.tolist()
    xt, _ = load_data(tmp_path / "d.npz", input_shape=(2, 2))
    assert xt.shape == (6, 2, 2)

    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n0.1,0.2,1\n0.3,0.4,0\n")
    xt, yt = load_data(csv, label_column="label")
    assert xt.shape == (2, 2) and yt is not None and yt.tolist() == [1, 0]
    with pytest.raises(bn.DataLoadError, match="no column 'target'"):
        load_data(csv, label_column="target")

    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    xt, yt = load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert yt is not None and yt.shape == (6,)

    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((5, 5), 40 * i, dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    xt, yt = load_data(tmp_path / "imgs")
    assert xt.shape == (4, 1, 5, 5) and yt is not None and yt.tolist() == [0, 0, 1, 1]


def test_data_errors_are_clear(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(bn.DataLoadError, match="pickled object"):
        load_data(tmp_path / "obj.npy")
    np.savez(tmp_path / "nox.npz", a=np.zeros(3))
    with pytest.raises(bn.DataLoadError, match="expected 'x'"):
        load_data(tmp_path / "nox.npz")
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(bn.DataLoadError, match="3 inputs but 2 labels"):
        load_data(tmp_path / "mismatch.npz")
    (tmp_path / "bad.csv").write_text("a,label\nfoo,1\n")
    with pytest.raises(bn.DataLoadError, match="non-numeric"):
        load_data(tmp_path / "bad.csv")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(bn.DataLoadError):
        load_data(tmp_path / "trunc.npz")
    with pytest.raises(bn.DataLoadError, match="no such"):
        load_data(tmp_path / "nothing.npz")


def test_factories_take_literal_arguments_and_are_checked(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from bastion.core.loading import build_from_factory, parse_factory

    net = bn.zoo.SmallCNN(1, 10, 8, width=8)
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    m = bn.load_model(tmp_path / "w.safetensors", factory="bastion.zoo:SmallCNN(1, 10, 8, width=8)")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(m.scores(x), net(x))
    assert parse_factory("a.b:C") == ("a.b:C", (), {})
    assert parse_factory("a.b:C(1, (2, 3), k='v')") == ("a.b:C", (1, (2, 3)), {"k": "v"})
    with pytest.raises(bn.InputError, match="literals"):
        parse_factory("a.b:C(__import__('os'))")
    with pytest.raises(bn.InputError, match="builds the model"):
        build_from_factory("bastion.zoo:MLP")  # needs its arguments: a clear error, not a TypeError
    with pytest.raises(bn.InputError, match=r"nn\.Module"):
        build_from_factory("math:floor(2.5)")

"""Benign model files written by the real libraries, as users produce them.

Each file must scan clean (no finding at LOW or above): these are what a scanner's false positives are
measured on. Left out on purpose: ``torch.save`` of a whole ``nn.Module`` (its pickle names the user's
own class, which no allowlist can know; the scanner is right to report it).
"""

from __future__ import annotations

import functools
import io
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class BenignCase:
    name: str
    library: str
    filename: str
    data: bytes = field(repr=False)


def _bytes_of(write: Callable[[Path], None], suffix: str) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"file{suffix}"
        write(path)
        return path.read_bytes()


def _state_dict() -> dict[str, object]:
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=g),
        "conv.bias": torch.zeros(4),
        "fc.weight": torch.randn(3, 8, generator=g).to(torch.float16),
        "fc.bias": torch.randn(3, generator=g).to(torch.bfloat16),
        "bn.running_mean": torch.zeros(4, dtype=torch.float64),
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "ids": torch.arange(5, dtype=torch.int32),
        "bytes": torch.arange(6, dtype=torch.uint8).view(2, 3),
        "view": torch.arange(12.0).view(3, 4)[:, 1:3],  # a strided view sharing its storage
    }


def _adam_state(model: object) -> dict[str, object]:
    """What ``torch.optim.Adam(...).state_dict()`` holds after one step, written out by hand.

    Building a real optimizer imports torch._dynamo (seconds per session); the saved layout is the same:
    per-parameter step/exp_avg/exp_avg_sq tensors and the param groups.
    """
    import torch

    params = list(model.parameters())  # type: ignore[attr-defined]
    state = {i: {"step": torch.tensor(1.0), "exp_avg": torch.full_like(p, 0.1),
                 "exp_avg_sq": torch.full_like(p, 0.01)} for i, p in enumerate(params)}
    group = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
             "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
             "fused": None, "decoupled_weight_decay": False, "params": list(range(len(params)))}
    return {"state": state, "param_groups": [group]}


def _torch_cases() -> list[BenignCase]:
    import torch

    sd = _state_dict()
    out: list[BenignCase] = []
    for legacy in (False, True):
        def save(path: Path, obj: object = sd, legacy: bool = legacy) -> None:
            torch.save(obj, path, _use_new_zipfile_serialization=not legacy)

        tag = "legacy" if legacy else "zip"
        out.append(BenignCase(f"torch_state_dict_{tag}", "torch.save", f"state_{tag}.pt", _bytes_of(save, ".pt")))

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    ckpt = {"model": model.state_dict(), "optimizer": _adam_state(model), "epoch": 3, "best_acc": 0.91,
            "args": {"lr": 1e-3, "name": "run-1", "layers": [4, 8, 2]}}
    out.append(BenignCase("torch_checkpoint_optimizer", "torch.save", "ckpt.pth",
                          _bytes_of(lambda p: torch.save(ckpt, p), ".pth")))
    out.append(BenignCase("torch_nested_state_dict", "torch.save", "nested.bin",
                          _bytes_of(lambda p: torch.save({"state_dict": model.state_dict()}, p), ".bin")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream; still a common file
        scripted = torch.jit.script(model)
        out.append(BenignCase("torchscript", "torch.jit.save", "scripted.pt",
                              _bytes_of(lambda p: torch.jit.save(scripted, str(p)), ".pt")))
    return out


@functools.lru_cache(maxsize=1)
def _sklearn_models() -> dict[str, object]:
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x, y = x[:300], y[:300]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on a deliberately tiny budget
        return {
            "logreg": LogisticRegression(max_iter=50).fit(x, y),
            "forest": RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0).fit(x, y),
            "pipeline": Pipeline([("scale", StandardScaler()),
                                  ("clf", LogisticRegression(max_iter=50))]).fit(x, y),
            "mlp": MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(x, y),
        }


def _sklearn_cases() -> list[BenignCase]:
    import joblib

    out = []
    for name, est in _sklearn_models().items():
        out.append(BenignCase(f"joblib_{name}", "joblib.dump", f"{name}.joblib",
                              _bytes_of(lambda p, e=est: joblib.dump(e, p), ".joblib")))
        out.append(BenignCase(f"pickle_{name}", "pickle.dumps", f"{name}.pkl", pickle.dumps(est, protocol=5)))
    est = _sklearn_models()["forest"]
    for comp in ("zlib", "gzip", "xz"):
        out.append(BenignCase(f"joblib_forest_{comp}", "joblib.dump", f"forest_{comp}.joblib",
                              _bytes_of(lambda p, c=comp: joblib.dump(est, p, compress=(c, 1)), ".joblib")))
    out.append(BenignCase("pickle_forest_p2", "pickle.dumps", "forest_p2.pkl", pickle.dumps(est, protocol=2)))
    return out


def _numpy_cases() -> list[BenignCase]:
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": np.arange(3, dtype=np.int64),
              "m": np.array([True, False])}
    out = []
    buf = io.BytesIO()
    np.save(buf, arrays["w"])
    out.append(BenignCase("npy", "np.save", "w.npy", buf.getvalue()))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out.append(BenignCase("npz", "np.savez", "arrays.npz", buf.getvalue()))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    out.append(BenignCase("npz_compressed", "np.savez_compressed", "arrays_c.npz", buf.getvalue()))
    return out


def _safetensors_cases() -> list[BenignCase]:
    from safetensors.torch import save

    sd = {k: v.contiguous().clone() for k, v in _state_dict().items()}
    return [BenignCase("safetensors", "safetensors.torch.save", "model.safetensors",
                       save(sd, metadata={"format": "pt"}))]


def _onnx_cases() -> list[BenignCase]:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()

    def export(path: Path) -> None:
        from onnx import TensorProto, helper, numpy_helper

        # built with onnx.helper rather than torch.onnx.export: the exporter needs onnxscript here
        w1, b1 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
        w2, b2 = model[2].weight.detach().numpy(), model[2].bias.detach().numpy()
        inits = [numpy_helper.from_array(a, n) for a, n in ((w1.T.copy(), "w1"), (b1, "b1"),
                                                             (w2.T.copy(), "w2"), (b2, "b2"))]
        nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])]
        graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
        path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())

    return [BenignCase("onnx", "onnx.helper", "mlp.onnx", _bytes_of(export, ".onnx"))]


def _h5_cases() -> list[BenignCase]:
    import h5py

    def write(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f.create_dataset("weights/dense", data=np.arange(12, dtype=np.float32).reshape(3, 4))
            f.create_dataset("labels", data=np.arange(3))
            f.attrs["description"] = "plain arrays"

    return [BenignCase("h5_arrays", "h5py", "arrays.h5", _bytes_of(write, ".h5"))]


def _skops_cases() -> list[BenignCase]:
    import skops.io as sio

    est = _sklearn_models()["logreg"]
    return [BenignCase("skops_logreg", "skops.io.dump", "logreg.skops",
                       _bytes_of(lambda p: sio.dump(est, p), ".skops"))]


def all_cases() -> list[BenignCase]:
    return [*_torch_cases(), *_sklearn_cases(), *_numpy_cases(), *_safetensors_cases(), *_onnx_cases(),
            *_h5_cases(), *_skops_cases()]


def write_corpus(directory: Path) -> list[tuple[BenignCase, Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for case in all_cases():
        path = directory / f"{case.name}__{case.filename}"
        path.write_bytes(case.data)
        out.append((case, path))
    return out

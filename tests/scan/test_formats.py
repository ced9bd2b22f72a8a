"""Each format: an ordinary file written by the real library scans clean; a malicious variant is flagged."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import h5py
import joblib
import numpy as np
import onnx
import py7zr
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save as st_save
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bastion.scan import Severity, scan_bytes, scan_path

from .conftest import RunsSystem, rules, worst

CLEAN = Severity.MEDIUM  # nothing at MEDIUM or above in an ordinary file


def assert_clean(data: bytes, name: str = "model") -> None:
    bad = [f for f in scan_bytes(data, name) if f.severity >= CLEAN]
    assert bad == [], bad


def assert_flagged(data: bytes, rule: str, at_least: Severity = Severity.HIGH) -> None:
    findings = scan_bytes(data, "evil")
    assert rule in rules(findings, at_least), findings


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def _torch_bytes(obj: object, **kw: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


# -- PyTorch -------------------------------------------------------------------------------------------


def test_torch_zip_checkpoint(net: torch.nn.Module) -> None:
    assert_clean(_torch_bytes(net.state_dict()))
    # what torch.optim.Adam's state_dict holds (built by hand: importing torch.optim costs seconds)
    opt = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3, 4)}},
           "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "amsgrad": False, "params": [0, 1]}]}
    assert_clean(_torch_bytes({"model": net.state_dict(), "opt": opt, "epoch": 3}))
    assert_clean(_torch_bytes(net))  # a whole module: torch.nn classes are allowlisted
    f = scan_bytes(_torch_bytes({"w": net.state_dict(), "x": RunsSystem()}))
    assert worst(f) == Severity.CRITICAL
    assert any(x.location.startswith("archive/data.pkl@") for x in f)


def test_torch_legacy_checkpoint(net: torch.nn.Module) -> None:
    assert_clean(_torch_bytes(net.state_dict(), _use_new_zipfile_serialization=False))
    evil = _torch_bytes({"x": RunsSystem()}, _use_new_zipfile_serialization=False)
    assert_flagged(evil, "BASTION-PICKLE-DANGEROUS", Severity.CRITICAL)


def test_pickle_in_oddly_named_zip_member_is_scanned(net: torch.nn.Module) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2))
        zf.writestr("archive/data/0.weights", pickle.dumps(RunsSystem(), protocol=2))
    assert_flagged(buf.getvalue(), "BASTION-PICKLE-DANGEROUS")


def _flip_zip_flags(data: bytes, bit: int) -> bytes:
    raw = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = raw.find(sig)
        while pos >= 0:
            raw[pos + off] |= bit
            pos = raw.find(sig, pos + 4)
    return bytes(raw)


def test_zip_encryption_flag_and_bad_crc_are_scanned_and_reported() -> None:
    evil = _torch_bytes({"x": RunsSystem()})
    flagged = _flip_zip_flags(evil, 0x01)
    f = scan_bytes(flagged)
    assert {"BASTION-ZIP-ANOMALY", "BASTION-PICKLE-DANGEROUS"} <= rules(f)
    raw = bytearray(evil)
    raw[raw.find(b"PK\x01\x02") + 16] ^= 0xFF  # CRC of the first member in the central directory
    assert {"BASTION-ZIP-ANOMALY", "BASTION-PICKLE-DANGEROUS"} <= rules(scan_bytes(bytes(raw)))


def test_zip_with_broken_central_directory_falls_back_to_local_headers() -> None:
    evil = _torch_bytes({"x": RunsSystem()})
    cut = evil[: evil.find(b"PK\x01\x02")]  # no central directory at all
    f = scan_bytes(cut)
    assert {"BASTION-PARSE", "BASTION-PICKLE-DANGEROUS"} <= rules(f)


def test_torchscript_archive(net: torch.nn.Module) -> None:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(net), buf)
    data = buf.getvalue()
    assert_clean(data)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info.filename)
            if info.filename.endswith(".py") and b"-> Tensor:\n" in body:
                # first line of a forward(): an operator call that would reach the OS
                body = body.replace(b"-> Tensor:\n", b"-> Tensor:\n    _x = torch.ops.aten.system(\"id\")\n", 1)
            zout.writestr(info, body)
    assert_flagged(out.getvalue(), "BASTION-TORCHSCRIPT-CODE", Severity.CRITICAL)


# -- scikit-learn, joblib ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted() -> list[object]:
    x, y = load_digits(return_X_y=True)
    x, y = x[:300, ::4], y[:300]  # small and quick: only the pickled structure matters here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [LogisticRegression(max_iter=20).fit(x, y),
                RandomForestClassifier(n_estimators=2, max_depth=4, random_state=0).fit(x, y),
                make_pipeline(StandardScaler(), LogisticRegression(max_iter=20)).fit(x, y)]


def test_sklearn_pickles(fitted: list[object]) -> None:
    for est in fitted:
        assert_clean(pickle.dumps(est))
    assert_flagged(pickle.dumps([fitted[0], RunsSystem()]), "BASTION-PICKLE-DANGEROUS")


@pytest.mark.parametrize("compress", [0, "zlib", "gzip", "bz2", "lzma", "xz"])
def test_joblib(fitted: list[object], tmp_path: Path, compress: object) -> None:
    good = tmp_path / "good.joblib"
    joblib.dump({"rf": fitted[1], "arr": np.arange(20.0), "obj": np.array([1, "a"], dtype=object)}, good,
                compress=compress)
    report = scan_path(good)
    assert report.is_clean("medium"), report.findings
    evil = tmp_path / "evil.bin"
    joblib.dump({"arr": np.arange(20.0), "x": RunsSystem()}, evil, compress=compress)
    assert "BASTION-PICKLE-DANGEROUS" in rules(scan_path(evil).findings)


def test_joblib_object_array_with_payload_is_flagged(tmp_path: Path) -> None:
    evil = tmp_path / "evil.joblib"
    joblib.dump({"obj": np.array([RunsSystem()], dtype=object), "after": np.ones(3)}, evil)
    assert "BASTION-PICKLE-DANGEROUS" in rules(scan_path(evil).findings)


# -- NumPy ---------------------------------------------------------------------------------------------


def _np_bytes(fn: object, *args: object, **kw: object) -> bytes:
    buf = io.BytesIO()
    fn(buf, *args, **kw)  # type: ignore[operator]
    return buf.getvalue()


def test_npy_and_npz() -> None:
    assert_clean(_np_bytes(np.save, np.arange(12.0).reshape(3, 4)))
    assert_clean(_np_bytes(np.savez, a=np.arange(3), b=np.eye(2)))
    assert_clean(_np_bytes(np.savez_compressed, a=np.arange(3)))
    evil = _np_bytes(np.save, np.array([RunsSystem()], dtype=object), allow_pickle=True)
    assert {"BASTION-NUMPY-OBJECT", "BASTION-PICKLE-DANGEROUS"} <= rules(scan_bytes(evil))
    evil_npz = _np_bytes(np.savez_compressed, ok=np.arange(3), o=np.array([RunsSystem()], dtype=object))
    assert_flagged(evil_npz, "BASTION-PICKLE-DANGEROUS")
    truncated = _np_bytes(np.save, np.arange(100.0))[:-8]
    assert_flagged(truncated, "BASTION-PARSE")


# -- safetensors ---------------------------------------------------------------------------------------


def _safetensors(header: dict[str, object], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def test_safetensors(net: torch.nn.Module) -> None:
    assert_clean(st_save(net.state_dict()))
    assert_clean(st_save({"a": torch.zeros(2, 3, dtype=torch.bfloat16)}, metadata={"format": "pt"}))
    gap = _safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8)
    overlap = _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8)
    shape = _safetensors({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8)
    dtype = _safetensors({"a": {"dtype": "PYOBJ", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8)
    bad_json = struct.pack("<Q", 5) + b"{oops" + b"\0" * 4
    for bad in (gap, overlap, shape, dtype, bad_json):
        assert_flagged(bad, "BASTION-SAFETENSORS-INVALID")
    polyglot = st_save({"a": torch.zeros(2)}) + _torch_bytes({"x": RunsSystem()})
    assert {"BASTION-SAFETENSORS-INVALID", "BASTION-PICKLE-DANGEROUS"} <= rules(scan_bytes(polyglot))


# -- ONNX ----------------------------------------------------------------------------------------------


def _onnx_model(domain: str = "", location: str | None = None) -> bytes:
    w = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), name="W")
    if location is not None:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "32")):
            entry = w.external_data.add()
            entry.key, entry.value = k, v
    node = helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm", domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])], [w])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def test_onnx(tmp_path: Path) -> None:
    assert_clean(_onnx_model())
    assert_clean(_onnx_model(location="weights.bin"))
    assert_clean(_onnx_model(domain="com.microsoft"))
    onnx.checker.check_model(onnx.load_from_string(_onnx_model()))
    for loc in ("../../etc/passwd", "/etc/shadow", "C:\\Windows\\win.ini", "sub/../../x"):
        assert_flagged(_onnx_model(location=loc), "BASTION-ONNX-EXTERNAL-PATH")
    assert_flagged(_onnx_model(domain="evil.ops"), "BASTION-ONNX-CUSTOM-DOMAIN")


# -- Keras ---------------------------------------------------------------------------------------------


def _keras_config(extra_layer: dict[str, object] | None = None) -> dict[str, object]:
    layers: list[dict[str, object]] = [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 4]},
         "registered_name": None},
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 2},
         "registered_name": None},
    ]
    if extra_layer:
        layers.append(extra_layer)
    return {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": layers},
            "registered_name": None}


_LAMBDA_K3 = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
              "config": {"name": "l", "function": {"class_name": "__lambda__",
                                                   "config": {"code": "4wEAAAAAAAAA", "defaults": None}}}}
_LAMBDA_K2 = {"class_name": "Lambda", "config": {"name": "l", "function": ["4wEAAAAAAAAA", None, None],
                                                 "function_type": "lambda"}}


def _keras_zip(config: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", _h5({}))
    return buf.getvalue()


def _h5(attrs: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("model_weights/d/kernel", data=np.ones((4, 2), dtype=np.float32))
    return buf.getvalue()


def test_keras_archive() -> None:
    assert_clean(_keras_zip(_keras_config()))
    assert_flagged(_keras_zip(_keras_config(_LAMBDA_K3)), "BASTION-KERAS-LAMBDA", Severity.CRITICAL)
    custom = {"module": "evilpkg.layers", "class_name": "Backdoor", "config": {"name": "b"},
              "registered_name": "evilpkg>Backdoor"}
    assert_flagged(_keras_zip(_keras_config(custom)), "BASTION-KERAS-CUSTOM")


def test_keras_h5() -> None:
    k2 = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}
    assert_clean(_h5({"model_config": json.dumps(k2), "keras_version": "2.15.0"}))
    k2_evil = json.loads(json.dumps(k2))
    k2_evil["config"]["layers"].append(_LAMBDA_K2)
    assert_flagged(_h5({"model_config": json.dumps(k2_evil)}), "BASTION-KERAS-LAMBDA", Severity.CRITICAL)


def _keras2_model(*layers: dict[str, object]) -> dict[str, object]:
    """A Keras 2 (tf.keras) functional model_config: no module keys, initializers as nested class_names."""
    return {"class_name": "Functional", "keras_version": "2.15.0", "backend": "tensorflow",
            "config": {"name": "model", "layers": [
                {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
                 "config": {"batch_input_shape": [None, 8, 8, 3], "dtype": "float32", "name": "in"}},
                *layers], "input_layers": [["in", 0, 0]], "output_layers": [["out", 0, 0]]}}


_GLOROT = {"class_name": "GlorotUniform", "config": {"seed": None}}
_K2_BUILTINS: list[dict[str, object]] = [
    {"class_name": "Conv2D", "config": {"name": "c", "filters": 4, "kernel_size": [3, 3],
                                        "kernel_initializer": _GLOROT,
                                        "bias_initializer": {"class_name": "Zeros", "config": {}},
                                        "kernel_regularizer": {"class_name": "L2", "config": {"l2": 0.01}}}},
    {"class_name": "BatchNormalization", "config": {"name": "bn", "axis": [3]}},
    {"class_name": "ReLU", "config": {"name": "r"}},
    {"class_name": "MaxPooling2D", "config": {"name": "p"}},
    {"class_name": "TimeDistributed", "config": {"name": "td", "layer": {
        "class_name": "Dense", "config": {"name": "d", "units": 4, "kernel_initializer": _GLOROT}}}},
    {"class_name": "Bidirectional", "config": {"name": "bi", "merge_mode": "concat", "layer": {
        "class_name": "LSTM", "config": {"name": "lstm", "units": 4}}}},
    {"class_name": "RNN", "config": {"name": "rnn", "cell": [{"class_name": "GRUCell", "config": {"units": 2}},
                                                          {"class_name": "LSTMCell", "config": {"units": 2}}]}},
    {"class_name": "TFOpLambda", "config": {"name": "tf.math.add", "function": "math.add"}},
    {"class_name": "Sequential", "config": {"name": "inner", "layers": [
        {"class_name": "Flatten", "config": {"name": "f"}}, {"class_name": "Dropout", "config": {"rate": 0.1}},
        {"class_name": "Dense", "config": {"name": "out", "units": 2, "activation": "softmax"}}]}},
]
_TRAINING = {"loss": "sparse_categorical_crossentropy", "metrics": [[{"class_name": "MeanMetricWrapper",
                                                                        "config": {"name": "accuracy"}}]],
             "optimizer_config": {"class_name": "Adam", "config": {"name": "Adam", "learning_rate": 0.001}}}


def test_keras2_builtin_layers_are_clean() -> None:
    attrs = {"model_config": json.dumps(_keras2_model(*_K2_BUILTINS)), "training_config": json.dumps(_TRAINING),
             "keras_version": "2.15.0", "backend": "tensorflow"}
    assert_clean(_h5(attrs))
    assert_clean(_keras_zip(_keras2_model(*_K2_BUILTINS)))


@pytest.mark.parametrize("where", ["top", "wrapper", "rnn_cell", "cell_list", "inner_model"])
def test_keras2_custom_layer_is_flagged(where: str) -> None:
    evil: dict[str, object] = {"class_name": "MyAttention", "config": {"name": "x", "units": 4}}
    layers = [json.loads(json.dumps(x)) for x in _K2_BUILTINS]
    if where == "top":
        layers.append(evil)
    elif where == "wrapper":
        layers.append({"class_name": "TimeDistributed", "config": {"name": "td2", "layer": evil}})
    elif where == "rnn_cell":
        layers.append({"class_name": "RNN", "config": {"name": "r2", "cell": evil}})
    elif where == "cell_list":
        layers.append({"class_name": "RNN", "config": {"name": "r3", "cell": [
            {"class_name": "GRUCell", "config": {"units": 2}}, evil]}})
    else:
        layers.append({"class_name": "Sequential", "config": {"name": "s", "layers": [evil]}})
    config = _keras2_model(*layers)
    findings = scan_bytes(_h5({"model_config": json.dumps(config)}), "evil.h5")
    hits = [f for f in findings if f.rule_id == "BASTION-KERAS-CUSTOM"]
    assert len(hits) == 1 and hits[0].severity == Severity.HIGH, findings
    assert "MyAttention" in hits[0].message and "MyAttention" in hits[0].location
    assert_flagged(_keras_zip(config), "BASTION-KERAS-CUSTOM")


def test_keras2_custom_objects_outside_layers_and_the_root_model() -> None:
    # a subclassed model as the root is custom code too; a training_config root is not a layer
    root = {"class_name": "MyModel", "config": {"name": "m", "layers": []}}
    assert_flagged(_h5({"model_config": json.dumps(root)}), "BASTION-KERAS-CUSTOM")
    assert_clean(_h5({"model_config": json.dumps(_keras2_model()),
                      "training_config": json.dumps({"class_name": "Whatever", **_TRAINING})}))
    # Keras 3 layers carry their module, but a keras module is not trusted for its name alone (issue 9):
    # only reviewed layers and config objects pass
    assert_flagged(_keras_zip(_keras_config({"module": "keras.layers", "class_name": "NewBuiltin",
                                             "config": {"name": "n"}, "registered_name": None})),
                   "BASTION-KERAS-CUSTOM")
    assert_clean(_keras_zip(_keras_config({"module": "keras.layers", "class_name": "Dense",
                                           "config": {"name": "n"}, "registered_name": None})))


# -- zip with a broken central directory ----------------------------------------------------------------


def _break_directory(data: bytes, how: str) -> bytes:
    cd = data.index(b"PK\x01\x02")
    if how == "truncated":
        return data[:cd + 30]
    if how == "missing":
        return data[:cd]
    garbled = bytearray(data)
    garbled[cd:] = bytes(b ^ 0xA5 for b in garbled[cd:])
    return bytes(garbled)


@pytest.mark.parametrize("how", ["truncated", "missing", "garbled"])
def test_broken_central_directory_still_scans_every_member(net: torch.nn.Module, how: str) -> None:
    # torch.save writes zip64 with data descriptors: member sizes are only known from those descriptors
    evil = _torch_bytes({"w": net.state_dict(), "x": RunsSystem(), "y": torch.zeros(2)})
    findings = scan_bytes(_break_directory(evil, how), "evil.pt")
    assert any(f.rule_id == "BASTION-PARSE" and f.severity == Severity.HIGH and f.location == "central directory"
               for f in findings), findings
    hits = [f for f in findings if f.rule_id == "BASTION-PICKLE-DANGEROUS"]
    assert hits and hits[0].location.startswith("archive/data.pkl@") and hits[0].severity == Severity.CRITICAL
    # each member is cut exactly at its descriptor: no phantom trailing data, nothing unscannable
    assert {f.rule_id for f in findings} == {"BASTION-PARSE", "BASTION-PICKLE-DANGEROUS"}, findings
    # the same damage to an ordinary checkpoint is never called clean, and invents no payload
    good = scan_bytes(_break_directory(_torch_bytes(net.state_dict()), how), "good.pt")
    assert {f.rule_id for f in good if f.severity >= Severity.MEDIUM} == {"BASTION-PARSE"}, good


def test_payload_behind_descriptor_members_is_found() -> None:
    from .malicious import Call, G, assemble, streamed_zip

    pkl = assemble(Call(G("os", "system"), ("echo",)), 2)
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        data = _break_directory(streamed_zip(pkl, compression, last=True), "missing")
        findings = scan_bytes(data, "evil.pt")
        assert [f.location.split("@")[0] for f in findings if f.rule_id == "BASTION-PICKLE-DANGEROUS"] == \
            ["archive/data/0"], findings
        assert "BASTION-PARSE" in rules(findings, Severity.HIGH)


def test_end_record_that_disagrees_with_the_directory_is_reported(net: torch.nn.Module) -> None:
    from .malicious import Call, G, assemble, torch_zip

    data = torch_zip(assemble(Call(G("os", "system"), ("echo",)), 2))
    end = data.rindex(b"PK\x05\x06")
    moved = bytearray(data)
    struct.pack_into("<I", moved, end + 16, 3)  # directory offset that points into the first member
    counted = bytearray(data)
    struct.pack_into("<HH", counted, end + 8, 9, 9)  # nine entries claimed, four present
    for bad in (moved, counted):
        findings = scan_bytes(bytes(bad), "odd.pt")
        assert "BASTION-ZIP-ANOMALY" in rules(findings, Severity.MEDIUM)
        assert "BASTION-PICKLE-DANGEROUS" in rules(findings, Severity.CRITICAL)
    assert_clean(_torch_bytes(net.state_dict()))  # torch's zip64 end records agree with the directory


# -- containers ----------------------------------------------------------------------------------------


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_nested_containers(net: torch.nn.Module) -> None:
    good = _torch_bytes(net.state_dict())
    evil = _torch_bytes({"x": RunsSystem()})
    seven = io.BytesIO()
    with py7zr.SevenZipFile(seven, "w") as z:
        z.writestr(gzip.compress(_tar({"ckpt/model.pt": good})), "bundle.tgz")
    assert_clean(seven.getvalue())
    seven = io.BytesIO()
    with py7zr.SevenZipFile(seven, "w") as z:
        z.writestr(gzip.compress(_tar({"ckpt/model.pt": evil})), "bundle.tgz")
    f = scan_bytes(seven.getvalue())
    hit = [x for x in f if x.rule_id == "BASTION-PICKLE-DANGEROUS"]
    assert hit and hit[0].location.startswith("bundle.tgz!ckpt/model.pt!archive/data.pkl@")


def test_zip_bomb_hits_the_limit() -> None:
    from bastion.scan import Policy

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.pkl", b"\0" * 5_000_000)
    pol = Policy.default().extended(limits={"max_decompressed_bytes": 1_000_000})
    assert "BASTION-LIMIT" in rules(scan_bytes(buf.getvalue(), policy=pol))


def test_depth_limit() -> None:
    from bastion.scan import Policy

    data = pickle.dumps(RunsSystem())
    for _ in range(5):
        data = gzip.compress(data)
    pol = Policy.default().extended(limits={"max_depth": 3})
    assert rules(scan_bytes(data, policy=pol)) == {"BASTION-LIMIT"}
    assert "BASTION-PICKLE-DANGEROUS" in rules(scan_bytes(data))


def test_folder_scan(tmp_path: Path, net: torch.nn.Module) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.safetensors").write_bytes(st_save(net.state_dict()))
    (tmp_path / "README.md").write_text("# model card\n")
    (tmp_path / "sub" / "weights.txt").write_bytes(pickle.dumps(RunsSystem()))
    report = scan_path(tmp_path)
    assert report.files_scanned == 3 and not report.errors
    assert {f.path for f in report.findings} == {str(tmp_path / "sub" / "weights.txt")}
    assert not report.is_clean()


def test_zstd_stream() -> None:
    zstd = pytest.importorskip("backports.zstd")
    assert_clean(zstd.compress(pickle.dumps({"a": [1, 2]})))
    assert_flagged(zstd.compress(pickle.dumps(RunsSystem())), "BASTION-PICKLE-DANGEROUS")


def test_symlinked_file_in_a_folder_is_followed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(pickle.dumps(RunsSystem()))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "pytorch_model.bin").symlink_to(outside)
    assert "BASTION-PICKLE-DANGEROUS" in rules(scan_path(model_dir).findings)


def test_tensor_bytes_that_read_as_opcodes_are_not_parse_errors() -> None:
    # int8 tensors filled with 0x4b ('K', BININT1) or starting 0x80 0x02 (PROTO 2) look like pickles
    for fill, head in ((0x4B, 0x4B), (0x4E, 0x4E), (0x80, 0x02)):
        t = torch.full((4096,), fill, dtype=torch.uint8)
        t[1] = head
        assert scan_bytes(_torch_bytes({"mask": t})) == []


def test_pickle_hidden_in_a_tensor_storage_is_still_found() -> None:
    payload = pickle.dumps(RunsSystem(), protocol=2)
    data = bytearray(_torch_bytes({"w": torch.zeros(len(payload), dtype=torch.uint8)}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the storage bytes, stored uncompressed
    data[start:start + len(payload)] = payload
    assert "BASTION-PICKLE-DANGEROUS" in rules(scan_bytes(bytes(data)))


def test_legacy_tar_checkpoint() -> None:
    # PyTorch's oldest format: a tar of sys_info, pickle, storages and tensors members
    storages = pickle.dumps(1, protocol=2) + pickle.dumps(("0", "cpu", "FloatStorage"), protocol=2) + bytes(24)
    members = {"sys_info": pickle.dumps({"protocol_version": 1000, "little_endian": True}, protocol=2),
               "storages": storages, "tensors": pickle.dumps(0, protocol=2)}
    assert_clean(_tar({**members, "pickle": pickle.dumps({"w": 1}, protocol=2)}))
    f = scan_bytes(_tar({**members, "pickle": pickle.dumps({"w": RunsSystem()}, protocol=2)}))
    assert any(x.rule_id == "BASTION-PICKLE-DANGEROUS" and x.location.startswith("pickle@") for x in f)


def test_really_encrypted_member_is_unscannable() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("weights.bin", bytes(range(7, 250)))  # stands in for ciphertext
    f = scan_bytes(_flip_zip_flags(buf.getvalue(), 0x01))
    assert "BASTION-ARCHIVE-UNSCANNABLE" in rules(f, Severity.HIGH)

"""Issue 9's bypass classes, each with its own cases in every container they ride in."""

from __future__ import annotations

import bz2
import gzip
import io
import itertools
import json
import lzma
import pickle
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.errors import ModelLoadError
from bastion.scan import Policy, Severity, scan_bytes, scan_path
from bastion.scan.safe_load import safe_load

SMALL = Policy.default().extended(limits={"max_decompressed_bytes": 1 << 20})


def _payload(marker: Path) -> bytes:
    return b"\x80\x04cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    return buf.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for n, b in members.items():
            info = tarfile.TarInfo(n)
            info.size = len(b)
            tf.addfile(info, io.BytesIO(b))
    return buf.getvalue()


def _worst(data: bytes, name: str, policy: Policy | None = None) -> Severity | None:
    return max((f.severity for f in scan_bytes(data, name, policy)), default=None)


# -- class 2: safe_load never runs code, with any option ------------------------------------------------

def _containers(marker: Path) -> dict[str, bytes]:
    p = _payload(marker)
    cut = p.index(b"tem")
    obj_array = io.BytesIO()
    import joblib

    joblib.dump(np.array([1, "x"], dtype=object), obj_array)
    nested = obj_array.getvalue().replace(b"\x8c\x01x", b"\x8c\x01x")  # an object array: nested pickle
    return {
        "plain.pkl": p,
        "zlib.joblib": zlib.compress(p),
        "split.joblib.gz": gzip.compress(p[:cut]) + gzip.compress(p[cut:]),
        "split.pkl.bz2": bz2.compress(p[:cut]) + bz2.compress(p[cut:]),
        "split.pkl.xz": lzma.compress(p[:cut]) + lzma.compress(p[cut:]),
        "split.joblib.z": zlib.compress(p[:cut]) + zlib.compress(p[cut:]),
        "torch.pt": _zip({"archive/data.pkl": p, "archive/version": b"3\n"}),
        "nested.joblib": nested[:-1] + p,  # a second pickle after the joblib one
        "reexport.pkl": b"\x80\x04csklearn.callback._transport\nListener\n)R.",
        "compat.pkl": b"\x80\x04cjoblib.numpy_pickle_compat\nNDArrayWrapper\n)R.",
    }


@pytest.mark.parametrize("weights_only", [True, False])
def test_safe_load_never_leaves_the_marker(tmp_path: Path, weights_only: bool) -> None:
    marker = tmp_path / "marker"
    for name, data in _containers(marker).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelLoadError):
            safe_load(path, weights_only=weights_only)
        assert not marker.exists(), f"{name} ran its payload"


def test_safe_load_refuses_re_exports_even_when_a_policy_admits_the_name(tmp_path: Path) -> None:
    from bastion.scan.safe_load import UnsafeModelError

    path = tmp_path / "reexport.pkl"
    # sklearn.utils.discovery imports pathlib.Path: the name resolves, but not to something defined there
    path.write_bytes(b"\x80\x02csklearn.utils.discovery\nPath\nX\x01\x00\x00\x00x\x85R.")
    pol = Policy.default().extended(allow=["sklearn.utils.discovery:Path"])
    with pytest.raises(UnsafeModelError, match="defined outside"):
        safe_load(path, policy=pol, weights_only=False)


# -- class 3: streams the loader joins ----------------------------------------------------------------

@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress, zlib.compress])
@pytest.mark.parametrize("pieces", [2, 3])
def test_a_pickle_split_across_members_is_scanned_joined(compress: object, pieces: int, tmp_path: Path) -> None:
    p = _payload(tmp_path / "m")
    cuts = [0, p.index(b"sys") + 1, p.index(b"tem"), len(p)] if pieces == 3 else [0, p.index(b"tem"), len(p)]
    data = b"".join(compress(p[a:b]) for a, b in itertools.pairwise(cuts))  # type: ignore[operator]
    findings = scan_bytes(data, "m.joblib")
    assert any(f.severity is Severity.CRITICAL and f.global_name == "os.system" for f in findings)
    # the same inside a zip member and a tar member
    for outer in (_zip({"m.joblib": data}), _tar({"m.joblib": data})):
        assert _worst(outer, "o.bin") is Severity.CRITICAL


# -- class 8: resource bounds -------------------------------------------------------------------------

def test_overlapping_zip_entries_share_one_budget() -> None:
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = body.compress(b"\0" * (4 << 20)) + body.flush()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(stream), 4 << 20, 1, 0) + b"a"
    central = b""
    for i in range(64):
        name = f"m{i}".encode()
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(stream),
                               4 << 20, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 64, 64, len(central), len(local) + len(stream), 0)
    t0 = time.perf_counter()
    findings = scan_bytes(local + stream + central + end, "bomb.zip", SMALL)
    assert time.perf_counter() - t0 < 10
    limits = [f for f in findings if f.rule_id == "BASTION-LIMIT"]
    assert limits and all(f.severity is Severity.HIGH for f in limits)


@pytest.mark.parametrize("make", [
    lambda b: bz2.compress(b), lambda b: gzip.compress(zlib.compress(b)), lambda b: lzma.compress(b),
    lambda b: _zip({"x.pkl": b}, zipfile.ZIP_DEFLATED), lambda b: _tar({"x": gzip.compress(b)}),
])
def test_bombs_are_high_findings(make: object) -> None:
    data = make(b"\0" * (3 << 20))  # type: ignore[operator]
    assert any(f.rule_id == "BASTION-LIMIT" and f.severity is Severity.HIGH for f in scan_bytes(data, "b", SMALL))


def test_the_default_budget_scales_with_the_file_size() -> None:
    # 40 MiB from a ~30 KiB file: over the floor? no, so scanned; the budget is 256 MiB at least
    data = bz2.compress(b"\0" * (40 << 20))
    assert not any(f.rule_id == "BASTION-LIMIT" for f in scan_bytes(data, "ok.bin"))
    pol = Policy.default().extended(limits={"max_decompressed_bytes": 8 << 20})
    assert any(f.rule_id == "BASTION-LIMIT" for f in scan_bytes(data, "ok.bin", pol))


# -- class 9: truncation fails closed ------------------------------------------------------------------

@pytest.mark.parametrize("wrap", [
    lambda b: b, gzip.compress, bz2.compress, lambda b: _zip({"archive/data.pkl": b}),
    lambda b: _tar({"data.pkl": b}), lambda b: _zip({"x.pkl": b}, zipfile.ZIP_DEFLATED),
])
def test_truncated_pickles_are_high_in_every_container(wrap: object) -> None:
    import collections

    whole = pickle.dumps(collections.OrderedDict(a=[1.0] * 50, b="text"), protocol=4)
    assert _worst(wrap(whole[: len(whole) // 2]), "t.pkl") is not None  # type: ignore[operator]
    assert _worst(wrap(whole[: len(whole) // 2]), "t.pkl") >= Severity.HIGH  # type: ignore[operator]


# -- class 7: ordinary files pass ----------------------------------------------------------------------

def test_text_json_and_ordinary_estimators_pass(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    x = rng.random((40, 3))
    y = (x[:, 0] > 0.5).astype(int)
    files = {
        "images.txt": b"cats/img1.png\ncats/img2.png\n(doc) see README\n",
        "config.json": json.dumps({"hidden": [64, 32], "lr": 0.01}).encode(),
        "meta.json.gz": gzip.compress(b'{"classes": ["a", "b"]}'),
        "df.pkl": pickle.dumps(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})),
        "series.pkl": pickle.dumps(pd.Series([1.0, 2.0], name="s")),
        "ft.pkl": pickle.dumps(FunctionTransformer(np.log1p).fit(x)),
        "hgb.pkl": pickle.dumps(HistGradientBoostingClassifier(max_iter=2).fit(x, y)),
        "gb.pkl": pickle.dumps(GradientBoostingClassifier(n_estimators=2, random_state=np.random.RandomState(0))
                               .fit(x, y)),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    report = scan_path(tmp_path)
    assert report.files_scanned == len(files)
    assert report.is_clean("high"), [f.to_dict() for f in report.findings]


def test_folder_scans_skip_virtualenvs_and_honour_exclude(tmp_path: Path) -> None:
    bad = pickle.dumps(b"x")[:-1] + b"cos\nsystem\n."
    for sub in (".venv/lib", "env2", "data", "models"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "env2" / "pyvenv.cfg").write_text("home = /usr\n")
    for sub in (".venv/lib", "env2", "data"):
        (tmp_path / sub / "x.pkl").write_bytes(bad)
    (tmp_path / "models" / "ok.pkl").write_bytes(pickle.dumps([1, 2]))
    runner = CliRunner()
    res = runner.invoke(app, ["scan", str(tmp_path), "--exclude", "data/*", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["files_scanned"] == 1
    res = runner.invoke(app, ["scan", str(tmp_path), "--format", "json"])
    assert res.exit_code == 1
    # a virtual environment named on the command line is scanned
    assert runner.invoke(app, ["scan", str(tmp_path / ".venv")]).exit_code == 1


# -- class 10: terminal safety --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_names_from_files_are_escaped_in_every_output(tmp_path: Path, fmt: str) -> None:
    evil = "\x1b[2J\x1b]0;pwn\x07\u202eevil"
    payload = b"\x80\x04c" + evil.encode() + b"\nsystem\n)R."
    (tmp_path / "a.zip").write_bytes(_zip({f"{evil}.pkl": payload}))
    (tmp_path / "b.tar").write_bytes(_tar({f"{evil}.pkl": payload}))
    (tmp_path / "c.pkl").write_bytes(payload)
    res = CliRunner().invoke(app, ["scan", str(tmp_path), "--format", fmt])
    assert res.exit_code == 1
    assert "\x1b" not in res.output and "\x07" not in res.output and "\u202e" not in res.output
    assert "\\x1b[2J" in res.output or "\\\\x1b[2J" in res.output


# -- class 9: legacy checkpoints ----------------------------------------------------------------------

def _legacy() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.randn(10, 3), "n": torch.tensor(3), "h": torch.zeros(4, dtype=torch.float16)}, buf,
               _use_new_zipfile_serialization=False)
    return buf.getvalue()


@pytest.mark.parametrize("cut", [1, 7, 20, 60])
def test_truncated_legacy_checkpoints_are_high(cut: int) -> None:
    data = _legacy()
    assert _worst(data, "ok.pt") is None
    for wrapped in (data[:-cut], gzip.compress(data[:-cut]), _tar({"m.pt": data[:-cut]})):
        assert _worst(wrapped, "t.pt") == Severity.HIGH


# -- class 4: polyglots ----------------------------------------------------------------------------------

@pytest.mark.parametrize("program", [b"cos\nsystem\n(S'id'\ntR.", b"cposix\nsystem\n(S'id'\ntR.",
                                     b"csubprocess\ncall\n(S'id'\ntR."])
def test_a_tar_whose_header_is_a_pickle_is_scanned_as_both(program: bytes) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo(program.decode("latin-1"))
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    assert pickle.loads.__name__  # pickle.load on these bytes would run the program: never called here
    for data in (buf.getvalue(), gzip.compress(buf.getvalue()), _zip({"inner.tar": buf.getvalue()})):
        assert _worst(data, "p.tar") is Severity.CRITICAL


# -- class 5: format recognition -------------------------------------------------------------------------

_LAMBDA = {"class_name": "Sequential", "config": {"layers": [
    {"class_name": "Lambda", "config": {"function": ["x"], "function_type": "lambda"}}]}}


@pytest.mark.parametrize("userblock", [512, 1024, 2048, 4096])
def test_hdf5_with_a_user_block_is_recognised(userblock: int) -> None:
    import h5py

    f = io.BytesIO()
    with h5py.File(f, "w", userblock_size=userblock) as h:
        h.attrs["model_config"] = json.dumps(_LAMBDA)
    data = f.getvalue()
    assert _worst(data, "m.h5") is Severity.CRITICAL
    assert _worst(b"\x80\x04N." + data[4:], "m.h5") is Severity.CRITICAL  # a pickle in the user block
    assert _worst(_zip({"m.h5": data}), "m.zip") is Severity.CRITICAL


@pytest.mark.parametrize("layer", [
    {"module": "keras.src.utils.file_utils", "class_name": "get_file", "config": {}},
    {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"filepath": "/tmp/x"}},
    {"module": "keras.layers", "class_name": "StringLookup", "config": {"vocabulary": "/etc/passwd"}},
])
def test_keras_modules_are_not_trusted_by_name_with_or_without_metadata(layer: dict[str, object]) -> None:
    config = json.dumps({"module": "keras", "class_name": "Sequential", "config": {"layers": [layer]}}).encode()
    for members in ({"config.json": config, "metadata.json": b"{}"}, {"config.json": config},
                    {"config.json": config, "model.weights.h5": b""}):
        assert _worst(_zip(members), "m.keras") >= Severity.HIGH  # type: ignore[operator]


# -- class 6: graphs inside graphs; class 5: ONNX fields in any order ---------------------------------------

def _onnx_model(kind: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    ext = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    ext.external_data.add(key="location", value="../../../etc/passwd")
    custom = helper.make_node("Evil", ["x"], ["y"], domain="attacker.ops", name="evil")
    const = helper.make_node("Constant", [], ["y"], name="c", value=ext)
    inner_node = custom if kind == "domain" else const
    body = helper.make_graph([inner_node], "body", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    if_node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=body, else_branch=body)
    fn_nodes = [if_node] if kind != "flat" else [inner_node]
    fn = helper.make_function("local.fns", "F", ["cond"], ["y"], fn_nodes,
                              [helper.make_opsetid("", 17)])
    call = helper.make_node("F", ["cond"], ["y"], domain="local.fns", name="call")
    graph = helper.make_graph([call], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, functions=[fn], opset_imports=[helper.make_opsetid("", 17),
                                                                    helper.make_opsetid("local.fns", 1)])
    return onnx._serialize(model) if hasattr(onnx, "_serialize") else model.SerializeToString()


def _reorder(raw: bytes) -> bytes:
    """The same ModelProto with its top-level fields written in reverse order (valid protobuf)."""
    from bastion.scan.sniff import _varint

    fields, pos = [], 0
    while pos < len(raw):
        tag, p = _varint(raw, pos)  # type: ignore[misc]
        val, q = _varint(raw, p)  # type: ignore[misc]
        end = q + val if tag & 7 == 2 else q
        fields.append(raw[pos:end])
        pos = end
    return b"".join(reversed(fields))


@pytest.mark.parametrize("kind", ["domain", "external", "flat"])
def test_onnx_local_functions_and_their_subgraphs_are_checked(kind: str) -> None:
    raw = _onnx_model(kind)
    for data in (raw, _reorder(raw), _zip({"model.onnx": _reorder(raw)}), gzip.compress(raw)):
        assert _worst(data, "m.onnx") is not None and _worst(data, "m.onnx") >= Severity.HIGH  # type: ignore[operator]


@pytest.mark.parametrize("line", [
    "    _0 = torch.from_file(\"/dev/shm/x\", True, 1024)",
    "    torch.save(self.weight, \"/tmp/out.pt\")",
    "    _1 = ops.aten.from_file(path, None, 4)",
])
def test_torchscript_file_calls_are_flagged(line: str) -> None:
    code = f"def forward(self, x: Tensor) -> Tensor:\n{line}\n    return x\n".encode()
    members = {"archive/code/__torch__/m.py": code, "archive/constants.pkl": pickle.dumps(()),
               "archive/data.pkl": pickle.dumps({})}
    for data in (_zip(members), _tar({"m.pt": _zip(members)})):
        assert _worst(data, "m.pt") is Severity.CRITICAL


# -- class 5: every spelling of an object dtype in a joblib array -----------------------------------------

class _RunsId:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("id",))


@pytest.mark.parametrize("spelling", [b"object", b"|O", b"O", b"i4,O", b"(2,)O"])
def test_joblib_object_arrays_in_every_dtype_spelling(spelling: bytes) -> None:
    import joblib

    arr = np.empty(1, dtype=object)
    arr[0] = _RunsId()
    buf = io.BytesIO()
    joblib.dump(arr, buf, protocol=2)  # no framing: the dtype code can be respelt in place
    raw = buf.getvalue()
    code = b"X\x02\x00\x00\x00O8"
    assert code in raw
    # the respelt code, and a state claiming a positive element size (so the code decides)
    respelt = raw.replace(code, b"X" + struct.pack("<I", len(spelling)) + spelling, 1)
    respelt = respelt.replace(b"J\xff\xff\xff\xff", b"J\x08\x00\x00\x00", 1)
    for data in (respelt, zlib.compress(respelt), _zip({"m.joblib": respelt})):
        assert _worst(data, "m.joblib") is Severity.CRITICAL


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress, bz2.compress, lzma.compress])
def test_a_large_first_member_does_not_hide_the_next_one(compress: object) -> None:
    # the first member outgrows one decompression piece: the scanner must still find where it ended
    big = b"\x80\x04\x8e" + struct.pack("<Q", 3 << 20) + b"\0" * (3 << 20) + b"0"
    data = compress(big) + compress(b"cos\nsystem\n(S'id'\ntR.")  # type: ignore[operator]
    findings = scan_bytes(data, "m.joblib")
    assert any(f.global_name == "os.system" and f.severity is Severity.CRITICAL for f in findings)

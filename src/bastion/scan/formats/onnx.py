"""ONNX: parse the protobuf (never loading external data) and check data paths and operator domains."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from bastion.scan.engine import Context, scan_maybe_pickle
from bastion.scan.findings import Severity

KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training",
                           "ai.onnx.training", "com.microsoft.nchwc", "com.microsoft.experimental"})
_DRIVE = re.compile(r"^[A-Za-z]:")


def _walk(model: Any) -> Iterator[tuple[Any, str]]:
    """Every graph and model-local function (anything with ``node``), with subgraphs of their nodes'
    attributes at any depth (If/Loop/Scan bodies, graphs inside functions), each with a location prefix."""
    todo: list[tuple[Any, str]] = [(model.graph, "")]
    todo += [(fn, f"function {fn.domain}:{fn.name} ") for fn in model.functions]
    while todo:
        g, w = todo.pop()
        yield g, w
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    todo.append((attr.g, f"{w}{node.name}/{attr.name}/"))
                for sub in attr.graphs:
                    todo.append((sub, f"{w}{node.name}/{attr.name}/"))


def _graph_tensors(model: Any) -> Iterator[tuple[Any, str]]:
    """Every TensorProto in the model: initializers, node attributes (one tensor, lists, sparse ones),
    in the main graph, its subgraphs and the model-local functions."""
    for g, w in _walk(model):
        for t in getattr(g, "initializer", ()):
            yield t, f"{w}initializer {t.name!r}"
        for st in getattr(g, "sparse_initializer", ()):
            yield st.values, f"{w}sparse initializer {st.values.name!r}"
            yield st.indices, f"{w}sparse initializer indices {st.values.name!r}"
        for node in g.node:
            for attr in node.attribute:
                at = f"{w}node {node.name!r} attribute {attr.name!r}"
                if attr.HasField("t"):
                    yield attr.t, at
                for t in attr.tensors:
                    yield t, at
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values, at
                    yield attr.sparse_tensor.indices, at
                for st in attr.sparse_tensors:
                    yield st.values, at
                    yield st.indices, at


def _graph_nodes(model: Any) -> Iterator[tuple[Any, str]]:
    for g, w in _walk(model):
        for node in g.node:
            yield node, w


def bad_location(location: str) -> str | None:
    """Why an external-data path is unsafe, or None when it stays inside the model's folder."""
    if not location:
        return "is empty"
    if location.startswith(("/", "\\")) or _DRIVE.match(location):
        return "is absolute"
    if location.startswith("~"):
        return "starts at a home directory"
    if "://" in location:
        return "is a URL"
    if ".." in re.split(r"[\\/]", location):
        return "climbs out of the model's folder with '..'"
    if "\x00" in location:
        return "contains a NUL byte"
    return None


def scan_onnx(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> str | None:
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(data))
    except (DecodeError, ValueError, RuntimeError):
        # a few bytes of protobuf framing are weak evidence: not ONNX after all (perhaps a pickle)
        return scan_maybe_pickle(ctx, data, inner, depth, hints)
    if not model.HasField("graph") and not model.opset_import:
        return scan_maybe_pickle(ctx, data, inner, depth, hints)
    tensors = list(_graph_tensors(model))
    for tensor, where in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL and not tensor.external_data:
            continue
        entries = {kv.key: kv.value for kv in tensor.external_data}
        why = bad_location(entries.get("location", ""))
        if why is not None:
            ctx.emit("BASTION-ONNX-EXTERNAL-PATH", Severity.HIGH, inner, where,
                     f"external data location {entries.get('location', '')!r} {why}: loading it reads "
                     "a file outside the model")
    local = {fn.domain for fn in model.functions}
    domains: dict[str, str] = {}
    for op in model.opset_import:
        domains.setdefault(op.domain, "opset_import")
    for node, w in _graph_nodes(model):
        domains.setdefault(node.domain, f"{w}node {node.name!r} ({node.op_type})")
    for domain, where in sorted(domains.items()):
        if domain not in KNOWN_DOMAINS and domain not in local:
            ctx.emit("BASTION-ONNX-CUSTOM-DOMAIN", Severity.HIGH, inner, where,
                     f"operator domain {domain!r} is not a standard one; running the model needs a native "
                     "custom-operator library")
    return None

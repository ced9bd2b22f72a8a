"""ONNX: parse the protobuf (never loading external data) and check data paths and operator domains."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from bastion.scan.engine import Context, scan_unknown
from bastion.scan.findings import Severity

KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training",
                           "ai.onnx.training", "com.microsoft.nchwc", "com.microsoft.experimental"})
_DRIVE = re.compile(r"^[A-Za-z]:")


def _graph_tensors(graph: Any, where: str) -> Iterator[tuple[Any, str]]:
    """Every TensorProto in a graph and its subgraphs (if/loop bodies), with a readable location."""
    todo = [(graph, where)]
    while todo:
        g, w = todo.pop()
        for t in g.initializer:
            yield t, f"{w}initializer {t.name!r}"
        for st in g.sparse_initializer:
            yield st.values, f"{w}sparse initializer {st.values.name!r}"
            yield st.indices, f"{w}sparse initializer indices {st.values.name!r}"
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t, f"{w}node {node.name!r} attribute {attr.name!r}"
                for t in attr.tensors:
                    yield t, f"{w}node {node.name!r} attribute {attr.name!r}"
                if attr.HasField("g"):
                    todo.append((attr.g, f"{w}{node.name}/{attr.name}/"))
                for sub in attr.graphs:
                    todo.append((sub, f"{w}{node.name}/{attr.name}/"))


def _graph_nodes(graph: Any) -> Iterator[Any]:
    todo = [graph]
    while todo:
        g = todo.pop()
        for node in g.node:
            yield node
            for attr in node.attribute:
                if attr.HasField("g"):
                    todo.append(attr.g)
                todo.extend(attr.graphs)


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
        # three bytes of protobuf header are weak evidence: not ONNX after all
        return scan_unknown(ctx, data, inner, depth, hints)
    if not model.HasField("graph") and not model.opset_import:
        return scan_unknown(ctx, data, inner, depth, hints)
    tensors = list(_graph_tensors(model.graph, ""))
    for fn in model.functions:
        for node in fn.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append((attr.t, f"function {fn.name!r} node {node.name!r}"))
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
    for node in _graph_nodes(model.graph):
        domains.setdefault(node.domain, f"node {node.name!r} ({node.op_type})")
    for fn in model.functions:
        for node in fn.node:
            domains.setdefault(node.domain, f"function {fn.name!r} node {node.name!r} ({node.op_type})")
    for domain, where in sorted(domains.items()):
        if domain not in KNOWN_DOMAINS and domain not in local:
            ctx.emit("BASTION-ONNX-CUSTOM-DOMAIN", Severity.HIGH, inner, where,
                     f"operator domain {domain!r} is not a standard one; running the model needs a native "
                     "custom-operator library")
    return None

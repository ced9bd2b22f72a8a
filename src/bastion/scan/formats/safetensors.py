"""safetensors: the header must be exactly what the format allows, and the tensors must tile the buffer."""

from __future__ import annotations

import json
import math
from typing import Any

from bastion.scan.engine import Context, trailing
from bastion.scan.findings import Severity
from bastion.scan.sniff import SAFETENSORS_MAX_HEADER

#: bits per element of every dtype the format defines
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64,
    "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


def _problems(header: Any, buffer_len: int) -> list[str]:
    if not isinstance(header, dict):
        return ["header is not a JSON object"]
    out: list[str] = []
    spans: list[tuple[int, int, str]] = []
    meta = header.get("__metadata__")
    if meta is not None and (not isinstance(meta, dict)
                             or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        out.append("__metadata__ must map strings to strings")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            out.append(f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets")
            continue
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_BITS:
            out.append(f"tensor {name!r}: unknown dtype {dtype!r}")
            continue
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in shape):
            out.append(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
            continue
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            out.append(f"tensor {name!r}: data_offsets {offs!r} are not [begin, end] with begin <= end")
            continue
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != offs[1] - offs[0]:
            out.append(f"tensor {name!r}: shape {shape} of {dtype} needs {bits / 8:g} bytes, "
                       f"offsets give {offs[1] - offs[0]}")
        spans.append((offs[0], offs[1], name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap of {begin - pos} bytes"
            out.append(f"tensor {name!r} at offset {begin} {what}")
        pos = max(pos, end)
    if pos > buffer_len and not out:
        out.append(f"tensors need {pos} bytes of data but the file holds {buffer_len}")
    return out


def scan_safetensors(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    n = int.from_bytes(bytes(data[:8]), "little")
    if n > SAFETENSORS_MAX_HEADER or 8 + n > len(data):
        ctx.emit("BASTION-SAFETENSORS-INVALID", Severity.HIGH, inner, "header",
                 f"header size {n} is larger than the file or the format's limit")
        return
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        ctx.emit("BASTION-SAFETENSORS-INVALID", Severity.HIGH, inner, "header", f"header is not valid JSON ({exc})")
        return
    buffer_len = len(data) - 8 - n
    problems = _problems(header, buffer_len)
    for p in problems[:20]:
        ctx.emit("BASTION-SAFETENSORS-INVALID", Severity.HIGH, inner, "header", p)
    if problems:
        return
    spans = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    end = 8 + n + max(spans, default=0)
    if end < len(data):
        ctx.emit("BASTION-SAFETENSORS-INVALID", Severity.HIGH, inner, f"offset 0x{end:x}",
                 f"{len(data) - end} bytes after the last tensor (the format allows none)")
        trailing(ctx, data, end, inner, depth, "safetensors data")

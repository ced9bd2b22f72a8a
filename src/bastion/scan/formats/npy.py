"""NumPy ``.npy``: validate the header; an object array is a pickle, so scan it as one."""

from __future__ import annotations

import ast
import math

from bastion.scan.engine import Context, trailing
from bastion.scan.findings import Severity


def scan_npy(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    major = data[6] if len(data) > 7 else 0
    if major == 1:
        hlen, start = int.from_bytes(bytes(data[8:10]), "little"), 10
    elif major in (2, 3):
        hlen, start = int.from_bytes(bytes(data[8:12]), "little"), 12
    else:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "header", f"unknown .npy format version {major}")
        return
    end = start + hlen
    if end > len(data):
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "header", ".npy header runs past the end of the file")
        return
    try:
        # a Python literal: literal_eval never calls or imports anything
        header = ast.literal_eval(bytes(data[start:end]).decode("utf-8" if major == 3 else "latin-1"))
        # exactly what numpy itself accepts, so a header numpy would refuse is never called clean
        if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
            raise ValueError(f"keys must be descr, fortran_order and shape, got {header!r:.80}")
        if not isinstance(header["fortran_order"], bool):
            raise ValueError("fortran_order is not a bool")
        if not isinstance(header["shape"], tuple) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in header["shape"]):
            raise ValueError("shape is not a tuple of integers")
        descr, shape = header["descr"], header["shape"]
        import numpy as np
        from numpy.lib import format as npformat

        dtype = npformat.descr_to_dtype(descr)
        count = math.prod(int(s) for s in shape)
        if any(int(s) < 0 for s in shape):
            raise ValueError("negative dimension")
        _ = np  # numpy is only used to read the dtype description
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError, MemoryError,
            RecursionError) as exc:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "header", f".npy header is not valid ({exc})")
        return
    if dtype.hasobject:
        ctx.emit("BASTION-NUMPY-OBJECT", Severity.MEDIUM, inner, "header",
                 f"object array (dtype {descr!r}): np.load needs allow_pickle=True and unpickles it")
        res = ctx.pickle_stream(data[end:], inner, depth, max_pickles=1)
        if not res.is_pickle:
            ctx.emit("BASTION-PARSE", Severity.HIGH, inner, f"offset 0x{end:x}",
                     "object array data is not a pickle")
        return
    need = count * dtype.itemsize
    have = len(data) - end
    if have < need:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, f"offset 0x{end:x}",
                 f"array data is truncated: header says {need} bytes, file has {have}")
    elif have > need:
        trailing(ctx, data, end + need, inner, depth, ".npy array")

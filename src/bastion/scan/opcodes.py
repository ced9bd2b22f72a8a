"""Pickle opcode decoding for the symbolic machine: one table lookup and at most one call per opcode.

Decodes every opcode of protocols 0-5 and its argument exactly as ``pickletools.genops`` does (same
values, same types, same error messages, same read position after an error), straight from ``bytes``
(or a ``memoryview`` for zero-copy probes) with an integer cursor instead of a file object.

Each opcode byte has a *kind*: ``NO_ARG``, ``UINT1`` (a one-byte argument the machine reads inline),
``READER`` (``ARG_READERS[code](buf, pos, end, limit) -> (arg, next_pos)``) or ``UNKNOWN``. ``limit``
is the payload cap of a capped reader: a read of more than ``limit`` bytes (clipped to the data) raises
:class:`LimitError` before it happens; pass :data:`NO_LIMIT` for none. Every error says where reading
stopped (``at``), which is where a file object would have been left.
"""

from __future__ import annotations

import codecs
import struct
import sys
from collections.abc import Callable, Iterator
from typing import Any

NO_LIMIT = sys.maxsize


class PickleError(Exception):
    """The pickle is malformed (a real unpickler would stop here, possibly after running a call)."""

    def __init__(self, message: str, at: int | None = None) -> None:
        super().__init__(message)
        self.at = at  # read position after the failure (None: wherever the machine's cursor is)


class LimitError(PickleError):
    """An opcode or payload limit was hit."""


class OutOfData(PickleError):
    """The pickle needs more bytes than the reader holds (truncated, or a window too small)."""


Buffer = bytes | memoryview
ArgReader = Callable[[Any, int, int, int], tuple[Any, int]]

NO_ARG, UINT1, READER, UNKNOWN = 0, 1, 2, 3

#: (opcode byte, name, argument format) for every opcode of protocols 0-5
OPCODES: tuple[tuple[int, str, str | None], ...] = (
    (0x28, "MARK", None), (0x2E, "STOP", None), (0x30, "POP", None), (0x31, "POP_MARK", None),
    (0x32, "DUP", None), (0x46, "FLOAT", "floatnl"), (0x49, "INT", "decimalnl_short"),
    (0x4A, "BININT", "int4"), (0x4B, "BININT1", "uint1"), (0x4C, "LONG", "decimalnl_long"),
    (0x4D, "BININT2", "uint2"), (0x4E, "NONE", None), (0x50, "PERSID", "stringnl_noescape"),
    (0x51, "BINPERSID", None), (0x52, "REDUCE", None), (0x53, "STRING", "stringnl"),
    (0x54, "BINSTRING", "string4"), (0x55, "SHORT_BINSTRING", "string1"), (0x56, "UNICODE", "unicodestringnl"),
    (0x58, "BINUNICODE", "unicodestring4"), (0x61, "APPEND", None), (0x62, "BUILD", None),
    (0x63, "GLOBAL", "stringnl_noescape_pair"), (0x64, "DICT", None), (0x7D, "EMPTY_DICT", None),
    (0x65, "APPENDS", None), (0x67, "GET", "decimalnl_short"), (0x68, "BINGET", "uint1"),
    (0x69, "INST", "stringnl_noescape_pair"), (0x6A, "LONG_BINGET", "uint4"), (0x6C, "LIST", None),
    (0x5D, "EMPTY_LIST", None), (0x6F, "OBJ", None), (0x70, "PUT", "decimalnl_short"),
    (0x71, "BINPUT", "uint1"), (0x72, "LONG_BINPUT", "uint4"), (0x73, "SETITEM", None),
    (0x74, "TUPLE", None), (0x29, "EMPTY_TUPLE", None), (0x75, "SETITEMS", None),
    (0x47, "BINFLOAT", "float8"), (0x80, "PROTO", "uint1"), (0x81, "NEWOBJ", None),
    (0x82, "EXT1", "uint1"), (0x83, "EXT2", "uint2"), (0x84, "EXT4", "int4"), (0x85, "TUPLE1", None),
    (0x86, "TUPLE2", None), (0x87, "TUPLE3", None), (0x88, "NEWTRUE", None), (0x89, "NEWFALSE", None),
    (0x8A, "LONG1", "long1"), (0x8B, "LONG4", "long4"), (0x42, "BINBYTES", "bytes4"),
    (0x43, "SHORT_BINBYTES", "bytes1"), (0x8C, "SHORT_BINUNICODE", "unicodestring1"),
    (0x8D, "BINUNICODE8", "unicodestring8"), (0x8E, "BINBYTES8", "bytes8"), (0x8F, "EMPTY_SET", None),
    (0x90, "ADDITEMS", None), (0x91, "FROZENSET", None), (0x92, "NEWOBJ_EX", None),
    (0x93, "STACK_GLOBAL", None), (0x94, "MEMOIZE", None), (0x95, "FRAME", "uint8"),
    (0x96, "BYTEARRAY8", "bytearray8"), (0x97, "NEXT_BUFFER", None), (0x98, "READONLY_BUFFER", None),
)

NAMES: dict[int, str] = {code: name for code, name, _ in OPCODES}


# -- reading ----------------------------------------------------------------------------------------------


def _short(buf: Buffer, p: int, end: int, limit: int, want: int) -> tuple[int, int]:
    """The slow side of a read of ``want`` bytes at ``p``: ``(bytes available, end)`` or a LimitError."""
    have = max(0, min(end, p + want) - p)
    if have > limit:
        raise LimitError(f"a {have}-byte constant is over the payload limit ({limit})", p)
    return have, max(p, end)


def _fixed(buf: Buffer, p: int, end: int, limit: int, width: int, what: str) -> int:
    """Check that ``width`` bytes can be read at ``p`` (fixed-width arguments)."""
    if p + width > end or width > limit:
        have, at = _short(buf, p, end, limit, width)
        if have < width:
            raise PickleError(f"not enough data in stream to read {what}", at)
    return p + width


def _payload(buf: Buffer, p: int, end: int, limit: int, size: int, what: str) -> bytes:
    """``size`` bytes at ``p`` as bytes, or the error a short or over-limit read gives."""
    if p + size > end or size > limit:
        have, at = _short(buf, p, end, limit, size)
        if have < size:
            raise PickleError(f"expected {size} bytes in a {what}, but only {have} remain", at)
    return bytes(buf[p:p + size])


def _read_uint1(buf: Buffer, p: int, end: int, limit: int) -> tuple[int, int]:
    if p >= end:
        raise PickleError("not enough data in stream to read uint1", max(p, end))
    return buf[p], p + 1


def _read_uint2(buf: Buffer, p: int, end: int, limit: int) -> tuple[int, int]:
    q = _fixed(buf, p, end, limit, 2, "uint2")
    return buf[p] | buf[p + 1] << 8, q


_INT4 = struct.Struct("<i")
_UINT4 = struct.Struct("<I")
_UINT8 = struct.Struct("<Q")
_FLOAT8 = struct.Struct(">d")


def _read_int4(buf: Buffer, p: int, end: int, limit: int) -> tuple[int, int]:
    q = _fixed(buf, p, end, limit, 4, "int4")
    return _INT4.unpack_from(buf, p)[0], q


def _read_uint4(buf: Buffer, p: int, end: int, limit: int) -> tuple[int, int]:
    q = _fixed(buf, p, end, limit, 4, "uint4")
    return _UINT4.unpack_from(buf, p)[0], q


def _read_uint8(buf: Buffer, p: int, end: int, limit: int) -> tuple[int, int]:
    q = _fixed(buf, p, end, limit, 8, "uint8")
    return _UINT8.unpack_from(buf, p)[0], q


def _read_float8(buf: Buffer, p: int, end: int, limit: int) -> tuple[float, int]:
    q = _fixed(buf, p, end, limit, 8, "float8")
    return _FLOAT8.unpack_from(buf, p)[0], q


def _read_long1(buf: Buffer, p: int, end: int, limit: int) -> tuple[int, int]:
    size, p = _read_uint1(buf, p, end, limit)
    q = _fixed(buf, p, end, limit, size, "long1")
    return int.from_bytes(buf[p:q], "little", signed=True), q


def _read_long4(buf: Buffer, p: int, end: int, limit: int) -> tuple[int, int]:
    size, p = _read_int4(buf, p, end, limit)
    if size < 0:
        raise PickleError(f"long4 byte count < 0: {size}", p)
    q = _fixed(buf, p, end, limit, size, "long4")
    return int.from_bytes(buf[p:q], "little", signed=True), q


def _utf8(raw: bytes, q: int) -> str:
    try:
        return str(raw, "utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise PickleError(str(exc), q) from None


def _read_unicode1(buf: Buffer, p: int, end: int, limit: int) -> tuple[str, int]:
    if p < end:
        q = p + 1 + buf[p]
        if q <= end and q - p <= limit:  # the common case: all there, under the cap
            try:
                return str(buf[p + 1:q], "utf-8", "surrogatepass"), q
            except UnicodeDecodeError as exc:
                raise PickleError(str(exc), q) from None
    if p >= end:
        raise PickleError("not enough data in stream to read uint1", max(p, end))
    size = buf[p]
    p += 1
    q = p + size
    if q > end or size > limit:
        _payload(buf, p, end, limit, size, "unicodestring1")
    try:
        return str(buf[p:q], "utf-8", "surrogatepass"), q
    except UnicodeDecodeError as exc:
        raise PickleError(str(exc), q) from None


def _read_unicode4(buf: Buffer, p: int, end: int, limit: int) -> tuple[str, int]:
    if p + 4 <= end:
        size = _UINT4.unpack_from(buf, p)[0]
        q = p + 4 + size
        if q <= end and size <= limit and limit >= 4:  # the common case: all there, under the cap
            try:
                return str(buf[p + 4:q], "utf-8", "surrogatepass"), q
            except UnicodeDecodeError as exc:
                raise PickleError(str(exc), q) from None
    size, p = _read_uint4(buf, p, end, limit)
    q = p + size
    if q > end or size > limit:
        _payload(buf, p, end, limit, size, "unicodestring4")
    try:
        return str(buf[p:q], "utf-8", "surrogatepass"), q
    except UnicodeDecodeError as exc:
        raise PickleError(str(exc), q) from None


def _sized8(buf: Buffer, p: int, end: int, limit: int, what: str) -> tuple[bytes, int]:
    size, p = _read_uint8(buf, p, end, limit)
    if size > sys.maxsize:
        raise PickleError(f"{what} byte count > sys.maxsize: {size}", p)
    return _payload(buf, p, end, limit, size, what), p + size


def _read_unicode8(buf: Buffer, p: int, end: int, limit: int) -> tuple[str, int]:
    raw, q = _sized8(buf, p, end, limit, "unicodestring8")
    return _utf8(raw, q), q


def _read_bytes1(buf: Buffer, p: int, end: int, limit: int) -> tuple[bytes, int]:
    size, p = _read_uint1(buf, p, end, limit)
    return _payload(buf, p, end, limit, size, "bytes1"), p + size


def _read_bytes4(buf: Buffer, p: int, end: int, limit: int) -> tuple[bytes, int]:
    size, p = _read_uint4(buf, p, end, limit)
    return _payload(buf, p, end, limit, size, "bytes4"), p + size


def _read_bytes8(buf: Buffer, p: int, end: int, limit: int) -> tuple[bytes, int]:
    return _sized8(buf, p, end, limit, "bytes8")


def _read_bytearray8(buf: Buffer, p: int, end: int, limit: int) -> tuple[bytearray, int]:
    raw, q = _sized8(buf, p, end, limit, "bytearray8")
    return bytearray(raw), q


def _read_string1(buf: Buffer, p: int, end: int, limit: int) -> tuple[str, int]:
    size, p = _read_uint1(buf, p, end, limit)
    return str(_payload(buf, p, end, limit, size, "string1"), "latin-1"), p + size


def _read_string4(buf: Buffer, p: int, end: int, limit: int) -> tuple[str, int]:
    size, p = _read_int4(buf, p, end, limit)
    if size < 0:
        raise PickleError(f"string4 byte count < 0: {size}", p)
    return str(_payload(buf, p, end, limit, size, "string4"), "latin-1"), p + size


# -- text lines (protocol 0) ---------------------------------------------------------------------------------


def _find_newline(buf: Buffer, p: int, end: int) -> int:
    if isinstance(buf, bytes):
        return buf.find(b"\n", p, end)
    step = 4096
    while p < end:
        at = bytes(buf[p:min(end, p + step)]).find(b"\n")
        if at >= 0:
            return p + at
        p += step
        step = min(step * 4, 1 << 20)
    return -1


def _line_over_limit(start: int, newline: int, end: int, limit: int) -> int | None:
    """Where a capped reader gives up on a long line: it looks for the newline in chunks of 256 bytes,
    then four times more each time (up to 1 MiB), and stops once a chunk without one takes it more
    than ``limit`` bytes past the start. None when the line is found (or the data ends) first."""
    stop = newline + 1 if newline >= 0 else end
    pos, step = start, 256
    while pos < end:
        chunk_end = min(end, pos + step)
        if stop <= chunk_end and newline >= 0:
            return None
        pos = chunk_end
        if pos - start > limit:
            return pos
        step = min(step * 4, 1 << 20)
    return None


def _line(buf: Buffer, p: int, end: int, limit: int, what: str) -> tuple[bytes, int]:
    """The bytes up to the next newline (without it) and the position after it."""
    nl = _find_newline(buf, p, end)
    if end - p > limit:
        over = _line_over_limit(p, nl, end, limit)
        if over is not None:
            raise LimitError("a text line in the pickle is over the payload limit", over)
    if nl < 0:
        raise PickleError(f"no newline found when trying to read {what}", max(p, end))
    return bytes(buf[p:nl]), nl + 1


def _escaped(raw: bytes, q: int) -> str:
    try:
        return codecs.escape_decode(raw)[0].decode("ascii")
    except (ValueError, UnicodeDecodeError) as exc:
        raise PickleError(str(exc) or type(exc).__name__, q) from None


def _read_stringnl(buf: Buffer, p: int, end: int, limit: int) -> tuple[str, int]:
    raw, q = _line(buf, p, end, limit, "stringnl")
    for quote in (b'"', b"'"):
        if raw.startswith(quote):
            if not raw.endswith(quote):
                raise PickleError(f"strinq quote {quote!r} not found at both ends of {raw!r}", q)
            raw = raw[1:-1]
            break
    else:
        raise PickleError(f"no string quotes around {raw!r}", q)
    return _escaped(raw, q), q


def _read_stringnl_noescape(buf: Buffer, p: int, end: int, limit: int) -> tuple[str, int]:
    raw, q = _line(buf, p, end, limit, "stringnl")
    return _escaped(raw, q), q


def _read_stringnl_pair(buf: Buffer, p: int, end: int, limit: int) -> tuple[str, int]:
    if isinstance(buf, bytes) and end - p <= limit:
        # the common case: two plain ASCII lines, which escape_decode would return unchanged
        first = buf.find(b"\n", p, end)
        second = buf.find(b"\n", first + 1, end) if first >= 0 else -1
        if second >= 0:
            line = buf[p:second]
            if line.isascii() and b"\\" not in line:
                return f"{buf[p:first].decode('ascii')} {buf[first + 1:second].decode('ascii')}", second + 1
    module, p = _read_stringnl_noescape(buf, p, end, limit)
    name, p = _read_stringnl_noescape(buf, p, end, limit)
    return f"{module} {name}", p


def _read_unicodenl(buf: Buffer, p: int, end: int, limit: int) -> tuple[str, int]:
    raw, q = _line(buf, p, end, limit, "unicodestringnl")
    try:
        return str(raw, "raw-unicode-escape"), q
    except UnicodeDecodeError as exc:
        raise PickleError(str(exc), q) from None


def _number(parse: Callable[[bytes], Any], raw: bytes, q: int) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        raise PickleError(str(exc) or type(exc).__name__, q) from None


def _read_decimal_short(buf: Buffer, p: int, end: int, limit: int) -> tuple[int | bool, int]:
    raw, q = _line(buf, p, end, limit, "stringnl")
    if raw == b"00":
        return False, q
    if raw == b"01":
        return True, q
    return _number(int, raw, q), q


def _read_decimal_long(buf: Buffer, p: int, end: int, limit: int) -> tuple[int, int]:
    raw, q = _line(buf, p, end, limit, "stringnl")
    if raw[-1:] == b"L":
        raw = raw[:-1]
    return _number(int, raw, q), q


def _read_floatnl(buf: Buffer, p: int, end: int, limit: int) -> tuple[float, int]:
    raw, q = _line(buf, p, end, limit, "stringnl")
    return _number(float, raw, q), q


_READER_OF: dict[str, ArgReader] = {
    "uint1": _read_uint1, "uint2": _read_uint2, "int4": _read_int4, "uint4": _read_uint4,
    "uint8": _read_uint8, "float8": _read_float8, "long1": _read_long1, "long4": _read_long4,
    "string1": _read_string1, "string4": _read_string4, "bytes1": _read_bytes1, "bytes4": _read_bytes4,
    "bytes8": _read_bytes8, "bytearray8": _read_bytearray8, "unicodestring1": _read_unicode1,
    "unicodestring4": _read_unicode4, "unicodestring8": _read_unicode8, "stringnl": _read_stringnl,
    "stringnl_noescape": _read_stringnl_noescape, "stringnl_noescape_pair": _read_stringnl_pair,
    "unicodestringnl": _read_unicodenl, "decimalnl_short": _read_decimal_short,
    "decimalnl_long": _read_decimal_long, "floatnl": _read_floatnl,
}

#: per opcode byte: how its argument is read (see the module docstring)
KINDS: list[int] = [UNKNOWN] * 256
#: per opcode byte: the reader of a READER-kind argument (uint1 arguments too, for :func:`iter_ops`)
ARG_READERS: list[ArgReader | None] = [None] * 256
for _code, _name, _fmt in OPCODES:
    KINDS[_code] = NO_ARG if _fmt is None else UINT1 if _fmt == "uint1" else READER
    ARG_READERS[_code] = None if _fmt is None else _READER_OF[_fmt]


def read_opcode(buf: Buffer, pos: int, end: int, limit: int = NO_LIMIT) -> tuple[int, Any, int]:
    """``(opcode byte, argument, next position)`` of the opcode at ``pos``; raises PickleError."""
    if pos >= end:
        raise PickleError("pickle exhausted before seeing STOP", pos)
    if limit < 1:
        raise LimitError(f"a 1-byte constant is over the payload limit ({limit})", pos)
    code = buf[pos]
    kind = KINDS[code]
    if kind == UNKNOWN:
        raise PickleError(f"at position {pos}, opcode {bytes([code])!r} unknown", pos + 1)
    reader = ARG_READERS[code]
    if reader is None:
        return code, None, pos + 1
    arg, nxt = reader(buf, pos + 1, end, limit)
    return code, arg, nxt


def iter_ops(data: Buffer, pos: int = 0, limit: int = NO_LIMIT) -> Iterator[tuple[int, Any, int]]:
    """``(opcode byte, argument, position)`` for each opcode up to and including STOP, like
    ``pickletools.genops``; a malformed or truncated pickle raises :class:`PickleError`."""
    end = len(data)
    while True:
        code, arg, nxt = read_opcode(data, pos, end, limit)
        yield code, arg, pos
        if code == 0x2E:
            return
        pos = nxt

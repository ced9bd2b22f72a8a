"""The scanner's own opcode decoder against ``pickletools.genops``: same opcodes, arguments, positions,
and on malformed data the same error at the same read position (fail closed, never a crash)."""

from __future__ import annotations

import collections
import datetime
import decimal
import io
import pickle
import pickletools
import random
from typing import Any

import pytest

from bastion.scan import Policy
from bastion.scan.opcodes import NAMES, OPCODES, LimitError, PickleError, iter_ops
from bastion.scan.pickle_vm import analyze_stream

from . import malicious

# protocol-0 strings with stray backslashes: both decoders warn the way codecs.escape_decode does
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")

_OBJECTS: list[Any] = [
    None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**31, 2**63, -2**100, 3.5, -0.0,
    float("inf"), "", "a", "é\n\\x\x00", "\ud800", "x" * 300, b"", b"ab", b"\x00" * 300, bytearray(b"ba"),
    (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3]]], {}, {"a": 1, 2: (3,)}, set(), {1, 2},
    frozenset({3}), collections.OrderedDict(a=1), datetime.date(2020, 1, 2), decimal.Decimal("1.5"),
    complex(1, 2), list(range(300)), {i: str(i) for i in range(100)}, range(3), slice(1, 2),
]


def _pickles() -> list[bytes]:
    out = []
    shared = [1, 2]
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        out.extend(pickle.dumps(o, protocol=proto) for o in _OBJECTS)
        out.append(pickle.dumps([_OBJECTS, shared, shared], protocol=proto))
        for payload in malicious.payloads()[::5]:
            out.append(payload.build(proto))
    out.append(pickle.dumps(pickle.PickleBuffer(b"abc"), protocol=5, buffer_callback=lambda b: None))
    out.append(pickle.dumps(pickle.PickleBuffer(bytearray(b"abc")), protocol=5, buffer_callback=lambda b: None))
    # protocol-0 text opcodes pickle itself rarely writes
    out += [b"I00\n.", b"I01\n.", b"L12L\n.", b"F-1.25\n.", b"S'a\\x41\\n'\n.", b'S"q"\n.', b"Vab\\u20ac\n.",
            b"(I1\nI2\nl.", b"(i__main__\nC\n.", b"Pid\nQ.", b"I1\np0\ng0\n0.", b"\x8a\x00.", b"\x8b\x00\x00\x00\x00.",
            b"\x82\x01.", b"\x83\x01\x02.", b"\x84\x01\x02\x03\x04.", b"\x8d\x01" + b"\x00" * 7 + b"a.",
            b"\x8e\x01" + b"\x00" * 7 + b"a.", b"\x96\x01" + b"\x00" * 7 + b"a.", b"T\x01\x00\x00\x00a.",
            b"U\x01a.", b"B\x01\x00\x00\x00a.", b"C\x01a.", b"\x95\x01" + b"\x00" * 7 + b"N."]
    return out


PICKLES = _pickles()


def _genops(data: bytes) -> tuple[list[tuple[int, Any, int]], str | None, int]:
    """What pickletools makes of ``data``: its opcodes, its error (if any) and where its file was left."""
    f = io.BytesIO(data)
    ops: list[tuple[int, Any, int]] = []
    try:
        for op, arg, pos in pickletools.genops(f):
            ops.append((op.code.encode("latin-1")[0], arg, pos or 0))
    except Exception as exc:  # any error: compared with ours below
        return ops, str(exc) or type(exc).__name__, f.tell()
    return ops, None, f.tell()


def _ours(data: bytes | memoryview) -> tuple[list[tuple[int, Any, int]], str | None, int | None]:
    ops: list[tuple[int, Any, int]] = []
    try:
        for op in iter_ops(data):
            ops.append(op)
    except PickleError as exc:
        return ops, str(exc), exc.at
    return ops, None, None


def _typed(ops: list[tuple[int, Any, int]]) -> list[tuple[int, str, Any, int]]:
    # 1 == True == 1.0: compare types too (and repr, for NaN and -0.0)
    return [(code, type(arg).__name__, repr(arg), pos) for code, arg, pos in ops]


def test_opcode_table_is_pickletools_table() -> None:
    assert {(ord(op.code), op.name, None if op.arg is None else op.arg.name) for op in pickletools.opcodes} \
        == set(OPCODES)
    assert len(NAMES) == len(pickletools.opcodes)


def test_decoder_agrees_with_genops_on_whole_pickles() -> None:
    whole = [data for data in PICKLES if _genops(data)[1] is None]  # the corpus also has broken ones
    assert len(whole) > 300
    for data in PICKLES:
        _agree(data)


def _agree(data: bytes) -> None:
    theirs, error, left_at = _genops(data)
    ours, our_error, at = _ours(data)
    assert _typed(ours) == _typed(theirs), data
    assert our_error == error, data
    if error is not None:
        assert at == left_at, data
    view_ops, view_error, view_at = _ours(memoryview(data))
    assert (_typed(view_ops), view_error, view_at) == (_typed(ours), our_error, at)


def test_decoder_agrees_with_genops_on_every_truncation() -> None:
    for data in PICKLES:
        step = max(1, len(data) // 200)  # every cut of small pickles, 200 of each large one
        for cut in range(0, len(data), step):
            _agree(data[:cut])


def test_decoder_agrees_with_genops_on_garbled_pickles() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        b = bytearray(rng.choice(PICKLES))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(b))
            what = rng.randrange(4)
            if what == 0:
                b[pos] = rng.randrange(256)
            elif what == 1:
                b[pos] = rng.choice(list(NAMES))  # a valid opcode where it does not belong
            elif what == 2:
                del b[pos:pos + rng.randint(1, 8)]
            else:
                b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            if not b:
                break
        _agree(bytes(b))


def test_random_bytes_and_text_fail_closed_like_genops() -> None:
    rng = random.Random(11)
    text = b"()]}N.cti\x93\x94qhKJLFISVPgp0123456789'\"\\xu\n \x80\x8c\x8a\x95"
    for _ in range(20_000):
        alphabet = text if rng.random() < 0.5 else bytes(range(256))
        _agree(bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))))


def test_payload_cap() -> None:
    data = pickle.dumps("x" * 100, protocol=4)
    assert [op[0] for op in iter_ops(data, limit=100)][-1] == ord(".")
    with pytest.raises(LimitError) as info:
        list(iter_ops(data, limit=99))
    assert info.value.at is not None and data[info.value.at:info.value.at + 100] == b"x" * 100
    # a text line is given up in chunks: 256 bytes first
    line = b"S'" + b"y" * 400 + b"'\n."
    assert len(list(iter_ops(line, limit=300))) == 2
    with pytest.raises(LimitError):
        list(iter_ops(b"S'" + b"y" * 2000 + b"'\n.", limit=300))
    with pytest.raises(LimitError):
        list(iter_ops(b"N.", limit=0))


def test_machine_stops_where_genops_does() -> None:
    """Truncated pickles: the machine reports the parse error at genops' opcode count and read position."""
    for data in PICKLES[::3]:
        for cut in range(1, len(data), max(1, len(data) // 100)):
            theirs, error, left_at = _genops(data[:cut])
            assert error is not None
            res = analyze_stream(data[:cut], Policy.default())
            if res.pickles == 0:
                continue
            assert res.failed
            rule, _, where, message, _ = res.findings[-1]
            if "FRAME of" in message:
                continue  # the machine checks a frame's length up front, as the real unpickler does
            assert rule == "BASTION-PARSE" and f"({error})" in message
            assert where.endswith(f"opcode {len(theirs)} (offset 0x{left_at:x})")

"""A symbolic pickle machine: follows the stack and the memo without importing or calling anything.

:mod:`bastion.scan.opcodes` decodes opcodes; this module plays them on symbolic values (a global reference,
the result of a call, a constant, a container) so it knows which globals a pickle imports, which it
actually calls and with which arguments, even when names come from the memo (STACK_GLOBAL fed by
BINGET) or from another call (``getattr(module, "system")``). Nothing here ever imports a module
named by the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.scan.findings import Severity
from bastion.scan.opcodes import (
    ARG_READERS,
    KINDS,
    NAMES,
    NO_ARG,
    NO_LIMIT,
    UINT1,
    UNKNOWN,
    Buffer,
    LimitError,
    OutOfData,
    PickleError,
)
from bastion.scan.policy import Policy, Verdict

#: ``(rule_id, severity, location, message, global_name)`` as the machine reports them
RawFinding = tuple[str, Severity, str, str, str | None]

_MAX_ITEMS = 64  # items kept per container: enough to read call arguments, bounded for pickle bombs
_MAX_REPR = 160
_HIGHEST_PROTOCOL = 5
_PICKLE_EVIDENCE = 32  # opcodes decoded without error before a probe calls the data a pickle

#: callables that unpickle their bytes argument again: scan those bytes as a nested pickle
_NESTED_LOADERS = {
    ("torch.storage", "_load_from_bytes"),
    ("pickle", "loads"),
    ("_pickle", "loads"),
    ("dill", "loads"),
    ("cloudpickle", "loads"),
}
#: every call :meth:`Machine._special_call` looks into
_SPECIAL_CALLS = frozenset({("_codecs", "encode"), ("builtins", "getattr"), ("__builtin__", "getattr"),
                            *_NESTED_LOADERS})


__all__ = ["LimitError", "OutOfData", "PickleError", "StreamResult", "analyze_stream"]


# -- symbolic values ------------------------------------------------------------------------------------


class Value:
    __slots__ = ()

    def describe(self, depth: int = 0) -> str:
        return "?"


@dataclass(eq=False, slots=True)
class Const(Value):
    value: Any

    def describe(self, depth: int = 0) -> str:
        v = self.value
        if isinstance(v, (bytes, bytearray)) and len(v) > 40:
            return f"<{len(v)} bytes>"
        text = repr(v)
        return text if len(text) <= 80 else text[:77] + "..."


@dataclass(eq=False, slots=True)
class GlobalRef(Value):
    module: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def describe(self, depth: int = 0) -> str:
        return self.qualname


@dataclass(eq=False, slots=True)
class Call(Value):
    func: Value
    args: Value
    kind: str = "call"
    state: Value | None = None

    def describe(self, depth: int = 0) -> str:
        if depth > 3:
            return f"{self.func.describe(depth + 1)}(...)"
        args = self.args.describe(depth + 1)
        if isinstance(self.args, Seq) and self.args.kind == "tuple":
            args = args[1:-1].rstrip(",")
        return f"{self.func.describe(depth + 1)}({args})"


@dataclass(eq=False, slots=True)
class Seq(Value):
    kind: str  # tuple, list, set, frozenset
    items: list[Value] = field(default_factory=list)
    dropped: int = 0

    def add(self, more: list[Value]) -> None:
        room = _MAX_ITEMS - len(self.items)
        self.items.extend(more[:room])
        self.dropped += max(0, len(more) - room)

    def describe(self, depth: int = 0) -> str:
        if depth > 3:
            return "[...]"
        inner = ", ".join(i.describe(depth + 1) for i in self.items[:8])
        if len(self.items) > 8 or self.dropped:
            inner += ", ..."
        if self.kind == "tuple":
            return f"({inner}{',' if len(self.items) == 1 else ''})"
        return f"[{inner}]" if self.kind == "list" else f"{self.kind}({{{inner}}})"


@dataclass(eq=False, slots=True)
class DictV(Value):
    items: list[tuple[Value, Value]] = field(default_factory=list)
    dropped: int = 0

    def add(self, more: list[tuple[Value, Value]]) -> None:
        room = _MAX_ITEMS - len(self.items)
        self.items.extend(more[:room])
        self.dropped += max(0, len(more) - room)

    def get(self, key: str) -> Value | None:
        for k, v in self.items:
            if isinstance(k, Const) and k.value == key:
                return v
        return None

    def describe(self, depth: int = 0) -> str:
        if depth > 3:
            return "{...}"
        inner = ", ".join(f"{k.describe(depth + 1)}: {v.describe(depth + 1)}" for k, v in self.items[:6])
        return "{" + inner + (", ..." if len(self.items) > 6 or self.dropped else "") + "}"


@dataclass(eq=False, slots=True)
class Opaque(Value):
    what: str

    def describe(self, depth: int = 0) -> str:
        return f"<{self.what}>"


class Persistent(Opaque):
    """What a persistent id becomes (a storage, in a PyTorch checkpoint); described only when reported."""

    __slots__ = ("pid",)

    def __init__(self, pid: Value) -> None:
        self.what = "persistent"
        self.pid = pid

    def describe(self, depth: int = 0) -> str:
        return f"<persistent {self.pid.describe()}>"


# -- what the machine reads -------------------------------------------------------------------------------

#: known pickles up to this size are played from a ``bytes`` copy (cheap to index); larger blobs and
#: probes (mostly tensor bytes that stop parsing within a few opcodes) from a zero-copy memoryview
_FAST_READER_MAX = 256 * 1024**2


def _source(data: Buffer, max_read: int, probe: bool) -> tuple[Buffer, int]:
    """``(buffer, payload cap)`` to play ``data`` from: an uncapped ``bytes`` copy for known pickles up
    to 256 MiB (payload sizes are then bounded by the blob itself), else a capped zero-copy view."""
    if len(data) <= _FAST_READER_MAX and not probe:
        return bytes(data), NO_LIMIT
    return memoryview(data).cast("B"), max_read


# -- the machine ----------------------------------------------------------------------------------------


@dataclass
class _Use:
    """Everything one pickle does with one global, reported once."""

    ref: GlobalRef
    verdict: Verdict
    location: str
    uses: int = 1
    calls: int = 0
    call_desc: str = ""
    call_location: str = ""


@dataclass
class PickleResult:
    """Outcome of playing one pickle (up to STOP or up to the error that stopped it)."""

    findings: list[RawFinding]
    start: int
    end: int
    opcodes: int = 0
    complete: bool = False
    error: str | None = None
    limit_hit: bool = False
    globals_seen: int = 0  # well-formed global names decoded (evidence that this really is a pickle)
    out_of_data: bool = False

    def looks_like_pickle(self, evidence_opcodes: int | None = _PICKLE_EVIDENCE) -> bool:
        """Random bytes and text die within a few opcodes; dozens of valid ones in a row are a pickle.

        ``evidence_opcodes=None`` asks for stronger evidence (a STOP or a well-formed global), for blobs
        such as tensor storages where long runs of valid opcodes happen by chance (a constant int8 tensor
        of 0x4b is an endless run of BININT1).
        """
        if self.complete or self.globals_seen > 0:
            return True
        return evidence_opcodes is not None and (self.limit_hit or self.opcodes >= evidence_opcodes)


Nested = Callable[[bytes, str], list[RawFinding]]


class Machine:
    """Plays one pickle symbolically. Create one per pickle; call :meth:`run`."""

    def __init__(self, buf: Buffer, policy: Policy, *, at: int = 0, limit: int = NO_LIMIT,
                 torch_context: bool = False, nested: Nested | None = None,
                 cache: dict[tuple[str, str], Verdict] | None = None, label: str = "") -> None:
        self.buf = buf
        self.at = at  # read position: where :meth:`run` starts, and where it stopped after it
        self.limit = limit  # payload cap of this buffer's reads (see bastion.scan.opcodes)
        self.policy = policy
        self.torch_context = torch_context
        self.nested = nested
        self.cache = cache if cache is not None else {}
        self.label = label
        self.stack: list[Value] = []
        self.metastack: list[list[Value]] = []
        self.memo: dict[int, Value] = {}
        self.uses: dict[tuple[str, str], _Use] = {}
        self.extra: list[RawFinding] = []
        self.globals_seen = 0
        self.index = 0
        self.pos = 0
        self.persid_reported = False
        self.oob_reported = False
        self.memo_bomb_reported = False
        self.joblib_state: Value | None = None

    # helpers -------------------------------------------------------------------------------------------

    def where(self) -> str:
        return f"{self.label}opcode {self.index} (offset 0x{self.pos:x})"

    def report(self, rule: str, sev: Severity, message: str, global_name: str | None = None) -> None:
        self.extra.append((rule, sev, self.where(), message, global_name))

    def pop(self) -> Value:
        if not self.stack:
            raise PickleError("stack underflow")
        return self.stack.pop()

    def top(self) -> Value:
        if not self.stack:
            raise PickleError("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Value]:
        if not self.metastack:
            raise PickleError("MARK expected but none on the stack")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def verdict(self, module: str, name: str) -> Verdict:
        key = (module, name)
        v = self.cache.get(key)
        if v is None:
            v = self.policy.verdict(module, name)
            self.cache[key] = v
        return v

    def make_global(self, module: str, name: str) -> GlobalRef:
        ref = GlobalRef(module, name)
        if module.replace(".", "").replace("_", "").isalnum() and name.replace(".", "").replace("_", "").isalnum():
            self.globals_seen += 1
        verdict = self.verdict(module, name)
        if verdict.severity is not None:
            use = self.uses.get((module, name))
            if use is None:
                self.uses[(module, name)] = _Use(ref, verdict, self.where())
            else:
                use.uses += 1
        return ref

    def call(self, func: Value, args: Value, kind: str) -> Value:
        result = Call(func, args, kind)
        if isinstance(func, GlobalRef):
            use = self.uses.get((func.module, func.name))
            if use is not None:
                use.calls += 1
                if use.calls == 1:
                    use.call_desc = result.describe()
                    use.call_location = self.where()
            special = self._special_call(func, args)
            if special is not None:
                return special
        else:
            what = func.describe()
            self.report("BASTION-PICKLE-COMPUTED-CALL", Severity.HIGH,
                        f"{kind} of a computed callable {what} with {args.describe()}")
        return result

    def _special_call(self, func: GlobalRef, args: Value) -> Value | None:
        """Follow calls that name further globals or carry nested pickles."""
        if (func.module, func.name) not in _SPECIAL_CALLS:
            return None
        items = args.items if isinstance(args, Seq) else []
        if (func.module, func.name) == ("_codecs", "encode") and len(items) == 2:
            text, enc = items
            if isinstance(text, Const) and isinstance(text.value, str) and isinstance(enc, Const) \
                    and enc.value == "latin1":
                # protocol 2 spells bytes as _codecs.encode(str, "latin1"): keep them as bytes
                return Const(text.value.encode("latin-1"))
        if (func.module, func.name) in {("builtins", "getattr"), ("__builtin__", "getattr")} and len(items) >= 2:
            target, attr = items[0], items[1]
            if isinstance(target, GlobalRef) and isinstance(attr, Const) and isinstance(attr.value, str):
                # getattr(os, "system") names os.system: classify the reached object too
                return self.make_global(target.module, f"{target.name}.{attr.value}")
        if (func.module, func.name) in _NESTED_LOADERS and items and self.nested is not None:
            payload = items[0]
            if isinstance(payload, Const) and isinstance(payload.value, (bytes, bytearray)):
                self.report("BASTION-PICKLE-NESTED", Severity.MEDIUM,
                            f"{func.qualname} unpickles a {len(payload.value)}-byte payload; scanned below")
                self.extra.extend(self.nested(bytes(payload.value), f"{self.where()}>"))
        return None

    # the main loop -----------------------------------------------------------------------------------

    def run(self, max_opcodes: int) -> PickleResult:
        buf = self.buf
        end = len(buf)
        limit = self.limit
        pos = start = self.at
        result = PickleResult([], start, start)
        kinds = KINDS
        readers = ARG_READERS
        handlers = _BY_BYTE
        consts = _CONSTANTS
        memo = self.memo
        index = self.index
        arg: Any
        try:
            if limit < 1 and pos < end:
                raise LimitError(f"a 1-byte constant is over the payload limit ({limit})", pos)
            while True:
                # the hot loop: locals only, a kind and a handler looked up by the opcode byte
                if pos >= end:
                    raise PickleError("pickle exhausted before seeing STOP", pos)
                op = pos
                code = buf[pos]
                kind = kinds[code]
                if kind == NO_ARG:
                    arg = None
                    pos += 1
                elif kind == UINT1:
                    pos += 2
                    if pos > end:
                        raise PickleError("not enough data in stream to read uint1", end)
                    arg = buf[pos - 1]
                elif kind == UNKNOWN:
                    raise PickleError(f"at position {pos}, opcode {bytes([code])!r} unknown", pos + 1)
                else:
                    arg, pos = readers[code](buf, pos + 1, end, limit)  # type: ignore[misc]
                index += 1
                if index > max_opcodes:
                    raise LimitError(f"more than {max_opcodes} opcodes (limit max_opcodes)")
                # the commonest opcodes are played here; where() is only needed by the handlers
                if code == _BINPUT:
                    stack = self.stack
                    if not stack:
                        raise PickleError("stack underflow")
                    memo[arg] = stack[-1]
                    continue
                if consts[code]:
                    self.stack.append(Const(arg))
                    continue
                self.pos = op
                self.index = index
                if handlers[code](self, arg):
                    # FRAME checks, BUILD may move past inline joblib array bytes, STOP ends the pickle
                    if code == _STOP:
                        result.complete = True
                        break
                    pos = self.moved(code, arg, pos)
        except PickleError as exc:
            result.error = str(exc) or type(exc).__name__
            result.limit_hit = isinstance(exc, LimitError)
            result.out_of_data = isinstance(exc, OutOfData)
            if exc.at is not None:
                pos = exc.at
        except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError, OverflowError,
                EOFError) as exc:
            result.error = str(exc) or type(exc).__name__
        self.at = result.end = pos
        result.opcodes = self.index = index
        result.globals_seen = self.globals_seen
        result.findings = self._findings() + self.extra
        return result

    def moved(self, code: int, arg: Any, pos: int) -> int:
        """Opcodes that look at or move the read position: returns where reading goes on."""
        if code == _FRAME:
            # the real unframer reads the whole frame first: one that runs past the data fails there
            if pos + int(arg) > len(self.buf):
                raise OutOfData(f"FRAME of {arg} bytes runs past the end of the data")
            return pos
        return self._skip_joblib_array(pos)

    def _findings(self) -> list[RawFinding]:
        out: list[RawFinding] = []
        for use in self.uses.values():
            v = use.verdict
            assert v.severity is not None
            if use.calls:
                msg = f"calls {use.call_desc}"
                loc = use.call_location
            else:
                msg = f"imports {use.ref.qualname}"
                loc = use.location
            extra = []
            if use.uses > 1:
                extra.append(f"named {use.uses} times")
            if use.calls > 1:
                extra.append(f"called {use.calls} times")
            note = f" ({'; '.join(extra)})" if extra else ""
            msg = msg if len(msg) <= _MAX_REPR else msg[:_MAX_REPR - 3] + "..."
            out.append((v.rule_id, v.severity, loc, f"{msg}{note}: {v.reason}", use.ref.qualname))
        return out

    # opcode handlers ---------------------------------------------------------------------------------

    def op_const(self, arg: Any) -> None:
        self.stack.append(Const(arg))

    def op_none(self, arg: Any) -> None:
        self.stack.append(Const(None))

    def op_true(self, arg: Any) -> None:
        self.stack.append(Const(True))

    def op_false(self, arg: Any) -> None:
        self.stack.append(Const(False))

    def op_empty_list(self, arg: Any) -> None:
        self.stack.append(Seq("list"))

    def op_empty_tuple(self, arg: Any) -> None:
        self.stack.append(Seq("tuple"))

    def op_empty_dict(self, arg: Any) -> None:
        self.stack.append(DictV())

    def op_empty_set(self, arg: Any) -> None:
        self.stack.append(Seq("set"))

    def op_mark(self, arg: Any) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def op_list(self, arg: Any) -> None:
        items = self.pop_mark()
        self.stack.append(Seq("list", items[:_MAX_ITEMS], max(0, len(items) - _MAX_ITEMS)))

    def op_tuple(self, arg: Any) -> None:
        items = self.pop_mark()
        self.stack.append(Seq("tuple", items[:_MAX_ITEMS], max(0, len(items) - _MAX_ITEMS)))

    def op_frozenset(self, arg: Any) -> None:
        s = Seq("frozenset")
        s.add(_hashable(self.pop_mark()))
        self.stack.append(s)

    def _tuple_n(self, n: int) -> None:
        if len(self.stack) < n:
            raise PickleError("stack underflow")
        items = self.stack[len(self.stack) - n:]
        del self.stack[len(self.stack) - n:]
        self.stack.append(Seq("tuple", items))

    def op_tuple1(self, arg: Any) -> None:
        stack = self.stack
        if not stack:
            raise PickleError("stack underflow")
        stack[-1] = Seq("tuple", [stack[-1]])

    def op_tuple2(self, arg: Any) -> None:
        stack = self.stack
        if len(stack) < 2:
            raise PickleError("stack underflow")
        second = stack.pop()
        stack[-1] = Seq("tuple", [stack[-1], second])

    def op_tuple3(self, arg: Any) -> None:
        self._tuple_n(3)

    def op_dict(self, arg: Any) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise PickleError("DICT with an odd number of items")
        d = DictV()
        _hashable(items[::2])
        d.add(list(zip(items[::2], items[1::2], strict=True)))
        self.stack.append(d)

    def _method_on(self, target: Value, method: str) -> None:
        # APPEND/SETITEM/ADDITEMS on something that is not a plain container call its methods
        if isinstance(target, GlobalRef):
            self.report("BASTION-PICKLE-COMPUTED-CALL", Severity.HIGH,
                        f"calls {method} on the global {target.qualname}", target.qualname)

    def op_append(self, arg: Any) -> None:
        value = self.pop()
        self._extend(self.top(), [value], "append")

    def op_appends(self, arg: Any) -> None:
        items = self.pop_mark()
        self._extend(self.top(), items, "extend")

    def _extend(self, target: Value, items: list[Value], method: str) -> None:
        if isinstance(target, Seq) and target.kind == "list":
            target.add(items)
        elif _is_plain_data(target) and not (isinstance(target, Const) and isinstance(target.value, bytearray)):
            # the real unpickler fails here (tuples, sets, dicts, str... have no append/extend)
            raise PickleError(f"{method} on {target.describe()}, which has no such method")
        else:
            self._method_on(target, method)

    def op_additems(self, arg: Any) -> None:
        items = self.pop_mark()
        target = self.top()
        if isinstance(target, Seq) and target.kind == "set":
            target.add(_hashable(items))
        elif _is_plain_data(target):
            raise PickleError(f"ADDITEMS on {target.describe()}, which is not a set")
        else:
            self._method_on(target, "add")

    def op_setitem(self, arg: Any) -> None:
        value = self.pop()
        key = self.pop()
        self._setitems(self.top(), [key, value])

    def op_setitems(self, arg: Any) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise PickleError("SETITEMS with an odd number of items")
        self._setitems(self.top(), items)

    def _setitems(self, target: Value, items: list[Value]) -> None:
        if isinstance(target, DictV):
            _hashable(items[::2])
            target.add(list(zip(items[::2], items[1::2], strict=True)))
        elif isinstance(target, Seq) and target.kind == "list":
            # list[i] = v: any key the machine knows is not an integer makes the real unpickler fail
            if any(_is_plain_data(k) and not (isinstance(k, Const) and isinstance(k.value, int))
                   for k in items[::2]):
                raise PickleError("SETITEM on a list with a key that is not an integer")
        elif _is_plain_data(target):
            raise PickleError(f"SETITEM on {target.describe()}, which does not support item assignment")
        else:
            self._method_on(target, "__setitem__")

    def op_pop(self, arg: Any) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_dup(self, arg: Any) -> None:
        self.stack.append(self.top())

    def op_pop_mark(self, arg: Any) -> None:
        self.pop_mark()

    def op_binget(self, arg: int) -> None:
        value = self.memo.get(arg)
        if value is None:
            raise PickleError(f"memo key {arg} read before it was written")
        self.stack.append(value)

    def op_binput(self, arg: int) -> None:
        stack = self.stack
        if not stack:
            raise PickleError("stack underflow")
        if arg > _MEMO_BOMB:
            self._memo_bomb(arg)
        self.memo[arg] = stack[-1]

    def _memo_bomb(self, key: int) -> None:
        # CPython's unpickler sizes its memo table to the largest index: a few bytes can demand gigabytes
        if not self.memo_bomb_reported:
            self.memo_bomb_reported = True
            self.report("BASTION-PICKLE-MEMO-BOMB", Severity.MEDIUM,
                        f"memo index {key:,} makes pickle's loader allocate a table of that many slots "
                        "(a memory bomb: the load fails or exhausts memory)")

    def op_get(self, arg: Any) -> None:
        key = int(arg)
        if key not in self.memo:
            raise PickleError(f"memo key {key} read before it was written")
        self.stack.append(self.memo[key])

    def op_put(self, arg: Any) -> None:
        key = int(arg)
        if key < 0:
            raise PickleError("negative memo key")
        if key > _MEMO_BOMB:
            self._memo_bomb(key)
        self.memo[key] = self.top()

    def op_memoize(self, arg: Any) -> None:
        self.memo[len(self.memo)] = self.top()

    def op_ext(self, arg: Any) -> None:
        self.report("BASTION-PICKLE-EXT", Severity.HIGH,
                    f"extension code {arg}: copyreg's registry is empty unless the loader filled it, "
                    "so this names an unknown global")
        self.stack.append(Opaque(f"extension {arg}"))

    def op_global(self, arg: Any) -> None:
        module, _, name = str(arg).partition(" ")
        self.stack.append(self.make_global(module, name))

    def op_stack_global(self, arg: Any) -> None:
        name = self.pop()
        module = self.pop()
        if (isinstance(module, Const) and isinstance(module.value, str)
                and isinstance(name, Const) and isinstance(name.value, str)):
            self.stack.append(self.make_global(module.value, name.value))
            return
        self.report("BASTION-PICKLE-DYNAMIC-GLOBAL", Severity.CRITICAL,
                    f"STACK_GLOBAL with module {module.describe()} and name {name.describe()} "
                    "that are not constant strings")
        self.stack.append(Opaque("dynamic global"))

    def op_reduce(self, arg: Any) -> None:
        args = self.pop()
        func = self.pop()
        _need_tuple(args, "REDUCE")
        if _is_plain_data(func):
            raise PickleError(f"REDUCE calls {func.describe()}, which is not callable")
        self.stack.append(self.call(func, args, "call"))

    def op_newobj(self, arg: Any) -> None:
        args = self.pop()
        cls = self.pop()
        _need_tuple(args, "NEWOBJ")
        if _is_plain_data(cls):
            raise PickleError(f"NEWOBJ on {cls.describe()}, which is not a class")
        self.stack.append(self.call(cls, args, "instantiation"))

    def op_newobj_ex(self, arg: Any) -> None:
        kwargs = self.pop()
        args = self.pop()
        cls = self.pop()
        _need_tuple(args, "NEWOBJ_EX")
        if not isinstance(kwargs, (DictV, Call, Opaque)) or _is_plain_data(cls):
            raise PickleError("NEWOBJ_EX needs a class, an argument tuple and a keyword dict")
        packed = Seq("tuple", [args, kwargs])
        self.stack.append(self.call(cls, packed, "instantiation"))

    def op_inst(self, arg: Any) -> None:
        module, _, name = str(arg).partition(" ")
        items = self.pop_mark()
        ref = self.make_global(module, name)
        self.stack.append(self.call(ref, Seq("tuple", items[:_MAX_ITEMS]), "instantiation"))

    def op_obj(self, arg: Any) -> None:
        items = self.pop_mark()
        if not items:
            raise PickleError("OBJ without a class")
        self.stack.append(self.call(items[0], Seq("tuple", items[1:_MAX_ITEMS]), "instantiation"))

    def op_build(self, arg: Any) -> bool:
        state = self.pop()
        obj = self.top()
        if isinstance(obj, GlobalRef):
            self.report("BASTION-PICKLE-BUILD-GLOBAL", Severity.CRITICAL,
                        f"BUILD sets state {state.describe()} on the global {obj.qualname} itself",
                        obj.qualname)
        elif isinstance(obj, Call):
            obj.state = state
            func = obj.func
            if isinstance(func, GlobalRef) and func.name == "NumpyArrayWrapper" and \
                    func.module.startswith("joblib"):
                self.joblib_state = state
                return True  # the run loop calls moved(), which steps over the array bytes
        return False

    def _skip_joblib_array(self, pos: int) -> int:
        """joblib writes array bytes straight after the wrapper's BUILD: step over them (or scan them);
        returns where reading goes on."""
        state = self.joblib_state
        if not isinstance(state, DictV):
            raise PickleError("joblib NumpyArrayWrapper without a state dict")
        shape = state.get("shape")
        dtype = state.get("dtype")
        if not isinstance(shape, Seq) or not all(isinstance(i, Const) and isinstance(i.value, int)
                                                 for i in shape.items) or shape.dropped:
            raise PickleError("joblib array with a shape the scanner cannot read")
        count = 1
        for item in shape.items:
            assert isinstance(item, Const)
            if item.value < 0:
                raise PickleError("joblib array with a negative dimension")
            count *= item.value
        itemsize, has_object = _dtype_info(dtype)
        if has_object:
            # an object array is a whole nested pickle, played by a fresh unpickler: scan it in place
            inner = Machine(self.buf, self.policy, at=pos, limit=self.limit, nested=self.nested,
                            cache=self.cache, label=f"{self.label}joblib object array@")
            res = inner.run(max_opcodes=10_000_000)
            self.extra.extend(res.findings)
            if not res.complete:
                raise PickleError(f"joblib object array: {res.error}", res.end)
            return res.end
        region = start = pos
        if state.get("numpy_array_alignment_bytes") is not None:
            if pos >= len(self.buf):
                raise PickleError("joblib array padding byte missing", pos)
            start = pos + 1 + self.buf[pos]
        size = count * itemsize
        if start + size > len(self.buf):
            raise PickleError(f"joblib array of {size} bytes runs past the end of the data", start)
        self._probe_skipped(region, start + size)
        return start + size

    def _probe_skipped(self, start: int, end: int) -> None:
        """joblib steps over array bytes, but plain pickle.load would read them as opcodes: probe them."""
        res = analyze_stream(memoryview(self.buf)[start:end], self.policy, probe=True, evidence_opcodes=None,
                             max_opcodes=100_000, cache=self.cache, max_pickles=1)
        if res.is_pickle:
            label = f"{self.label}joblib array data at 0x{start:x}, "
            self.extra.extend((r, sev, f"{label}{w}", f"{m} (read as opcodes by plain pickle.load)", g)
                              for r, sev, w, m, g in res.findings)

    def op_persid(self, arg: Any) -> None:
        self._persid(Const(arg))

    def op_binpersid(self, arg: Any) -> None:
        self._persid(self.pop())

    def _persid(self, pid: Value) -> None:
        # PyTorch names its storages this way; elsewhere the loader's persistent_load decides
        if not self.torch_context and not self.persid_reported:
            self.persid_reported = True
            self.report("BASTION-PICKLE-PERSID", Severity.MEDIUM,
                        f"persistent id {pid.describe()} outside a PyTorch checkpoint")
        self.stack.append(Persistent(pid))

    def op_next_buffer(self, arg: Any) -> None:
        # Model loaders (pickle.load, torch.load, joblib) pass no buffers= and refuse this opcode; a loader
        # that does pass them feeds in bytes from outside the file, which no scan of the file can see.
        if not self.oob_reported:
            self.oob_reported = True
            self.report("BASTION-PICKLE-OUT-OF-BAND", Severity.MEDIUM,
                        "refers to an out-of-band buffer (protocol 5 NEXT_BUFFER): ordinary loaders refuse it, "
                        "and its contents live outside the file")
        self.stack.append(Opaque("out-of-band buffer"))

    def op_noop(self, arg: Any) -> None:
        return None

    def op_proto(self, arg: Any) -> None:
        if not 0 <= int(arg) <= _HIGHEST_PROTOCOL:
            raise PickleError(f"unsupported pickle protocol {arg}")

    def op_frame(self, arg: Any) -> bool:
        return True  # checked by moved(), which knows the read position

    def op_stop(self, arg: Any) -> bool:
        self.pop()
        return True


def _is_plain_data(v: Value) -> bool:
    """A value whose type the machine knows exactly (not the result of a call, not a global)."""
    return isinstance(v, (Const, Seq, DictV))


def _hashable(items: list[Value]) -> list[Value]:
    # lists, dicts and sets as dict keys or set members make the real unpickler raise TypeError
    for v in items:
        if isinstance(v, DictV) or (isinstance(v, Seq) and v.kind in ("list", "set")) or \
                (isinstance(v, Const) and isinstance(v.value, bytearray)):
            raise PickleError(f"unhashable {v.describe()} used as a dict key or set member")
    return items


def _need_tuple(args: Value, opcode: str) -> None:
    if _is_plain_data(args) and not (isinstance(args, Seq) and args.kind == "tuple"):
        raise PickleError(f"{opcode} argument {args.describe()} is not a tuple")


def _dtype_info(dtype: Value | None) -> tuple[int, bool]:
    """(itemsize, has_object) of a symbolic ``numpy.dtype(...)`` call with its BUILD state."""
    if not isinstance(dtype, Call) or not isinstance(dtype.args, Seq) or not dtype.args.items:
        raise PickleError("joblib array without a readable dtype")
    descr = dtype.args.items[0]
    if not isinstance(descr, Const) or not isinstance(descr.value, str):
        raise PickleError("joblib array dtype is not a type code")
    code = descr.value
    import numpy as np

    try:
        # parses a type code string only ("O", "object", "|O8", "i4,O", "(2,)O"...): nothing is imported
        dt = np.dtype(code)
    except (TypeError, ValueError) as exc:
        raise PickleError(f"joblib array dtype {code!r} is not valid ({exc})") from None
    has_obj = dt.hasobject
    itemsize = dt.itemsize
    state = dtype.state
    if isinstance(state, Seq):
        items = state.items
        # __setstate__ may add fields, a subarray or flags that make the dtype hold objects whatever the
        # code said; any sign of an object anywhere means joblib reads a nested pickle, not raw bytes
        has_obj = has_obj or _fields_have_object(items[4] if len(items) > 4 else None) or \
            any("O" in v.describe() for v in items[2:3] if v is not None and not isinstance(v, Const))
        flags = items[7] if len(items) > 7 else None
        if isinstance(flags, Const) and isinstance(flags.value, int) and flags.value & 0x01:
            has_obj = True
        elsize = items[5] if len(items) > 5 else None
        if isinstance(elsize, Const) and isinstance(elsize.value, int) and elsize.value > 0:
            itemsize = elsize.value
    return itemsize, has_obj


def _fields_have_object(fields: Value | None) -> bool:
    # structured dtypes list their fields' dtypes; any object field makes the array a pickle
    if isinstance(fields, DictV):
        return any("O" in v.describe() for _, v in fields.items)
    return False


_HANDLERS: dict[str, Callable[[Machine, Any], bool | None]] = {}
for _name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
              "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
              "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT"):
    _HANDLERS[_name] = Machine.op_const
_HANDLERS.update({
    "NONE": Machine.op_none, "NEWTRUE": Machine.op_true, "NEWFALSE": Machine.op_false,
    "EMPTY_LIST": Machine.op_empty_list, "EMPTY_TUPLE": Machine.op_empty_tuple,
    "EMPTY_DICT": Machine.op_empty_dict, "EMPTY_SET": Machine.op_empty_set,
    "MARK": Machine.op_mark, "LIST": Machine.op_list, "TUPLE": Machine.op_tuple,
    "TUPLE1": Machine.op_tuple1, "TUPLE2": Machine.op_tuple2, "TUPLE3": Machine.op_tuple3,
    "DICT": Machine.op_dict, "FROZENSET": Machine.op_frozenset,
    "APPEND": Machine.op_append, "APPENDS": Machine.op_appends, "ADDITEMS": Machine.op_additems,
    "SETITEM": Machine.op_setitem, "SETITEMS": Machine.op_setitems,
    "POP": Machine.op_pop, "DUP": Machine.op_dup, "POP_MARK": Machine.op_pop_mark,
    "GET": Machine.op_get, "BINGET": Machine.op_binget, "LONG_BINGET": Machine.op_binget,
    "PUT": Machine.op_put, "BINPUT": Machine.op_binput, "LONG_BINPUT": Machine.op_binput,
    "MEMOIZE": Machine.op_memoize,
    "EXT1": Machine.op_ext, "EXT2": Machine.op_ext, "EXT4": Machine.op_ext,
    "GLOBAL": Machine.op_global, "STACK_GLOBAL": Machine.op_stack_global, "INST": Machine.op_inst,
    "OBJ": Machine.op_obj, "NEWOBJ": Machine.op_newobj, "NEWOBJ_EX": Machine.op_newobj_ex,
    "REDUCE": Machine.op_reduce, "BUILD": Machine.op_build,
    "PERSID": Machine.op_persid, "BINPERSID": Machine.op_binpersid,
    "NEXT_BUFFER": Machine.op_next_buffer, "READONLY_BUFFER": Machine.op_noop,
    "PROTO": Machine.op_proto, "FRAME": Machine.op_frame, "STOP": Machine.op_stop,
})


#: per opcode byte, its handler; a true return asks the run loop to call Machine.moved (or to stop)
_BY_BYTE: list[Callable[[Machine, Any], bool | None]] = [Machine.op_noop] * 256
for _code, _name in NAMES.items():
    _BY_BYTE[_code] = _HANDLERS[_name]
_STOP = 0x2E
_FRAME = 0x95
_BINPUT = 0x71
#: memo indices above this make CPython's unpickler allocate a table of at least 80 MB (8 bytes a slot)
_MEMO_BOMB = 10_000_000
#: per opcode byte: whether it pushes its argument as a constant (played inline by Machine.run)
_CONSTANTS = [_BY_BYTE[code] is Machine.op_const for code in range(256)]


# -- whole pickle streams -------------------------------------------------------------------------------


@dataclass
class StreamResult:
    """All pickles found one after another in a buffer."""

    findings: list[RawFinding]
    pickles: int
    end: int  # offset just after the last complete pickle
    is_pickle: bool
    failed: bool = False  # a parse error or limit stopped the stream


def analyze_stream(data: bytes | memoryview, policy: Policy, *, torch_context: bool = False,
                   max_pickles: int | None = None, probe: bool = False, nested: Nested | None = None,
                   evidence_opcodes: int | None = _PICKLE_EVIDENCE, max_opcodes: int | None = None,
                   cache: dict[tuple[str, str], Verdict] | None = None) -> StreamResult:
    """Play every pickle in ``data``, one after another.

    ``probe``: the caller does not know this is a pickle; if the first one neither completes nor names a
    well-formed global, report nothing and say ``is_pickle=False``. After the first pickle, trailing
    bytes that do not look like a pickle end the stream without a finding (torch's legacy format and
    joblib keep raw data there); bytes that do look like one are scanned like the first.
    """
    limits = policy.limits
    cache = cache if cache is not None else {}
    op_limit = min(limits.max_opcodes, max_opcodes or limits.max_opcodes)
    if probe and len(data) <= _QUICK_PROBE_MAX:
        raw = bytes(data)
        if _no_evidence_possible(raw, evidence_opcodes, op_limit, limits.max_payload_bytes) or \
                _fails_at_once(raw, evidence_opcodes, op_limit, limits.max_payload_bytes):
            # tiny members (a version number, "little", an id): nothing to play
            return StreamResult([], 0, 0, False)
    args = (policy, torch_context, max_pickles, probe, nested, evidence_opcodes, op_limit, cache)
    if not probe and len(data) > _FAST_READER_MAX:
        # big blobs (legacy checkpoints: pickles first, gigabytes of storage after) are played from a
        # C-backed copy of their head; only if the pickles run past it is the whole blob read slowly
        for size in _WINDOWS:
            result, ran_out = _play(bytes(memoryview(data)[:size]), NO_LIMIT, *args)
            if not ran_out:
                return result
    buf, limit = _source(data, limits.max_payload_bytes, probe)
    result, _ = _play(buf, limit, *args)
    return result


_WINDOWS = (1024**2, 32 * 1024**2)
_QUICK_PROBE_MAX = 4096
#: STOP and the opcodes that name a global (GLOBAL, INST, STACK_GLOBAL): what a probe takes as evidence
_EVIDENCE_OPCODES = (b".", b"c", b"i", b"\x93")


#: opcodes whose handler fails on an empty stack with no mark: a pickle that starts with one stops there
FAILS_FIRST = frozenset(bytes([c]) for c in b"012QRabdelostu.\x81\x85\x86\x87\x90\x91\x92\x93\x94")


def _fails_at_once(raw: bytes, evidence_opcodes: int | None, max_opcodes: int, max_payload: int) -> bool:
    """True when playing ``raw`` stops at its first opcode with an error, which never looks like a
    pickle unless one opcode is evidence enough or a limit is hit there."""
    return raw[:1] in FAILS_FIRST and max_opcodes >= 1 and max_payload >= 1 and \
        (evidence_opcodes is None or evidence_opcodes > 1)


def _no_evidence_possible(raw: bytes, evidence_opcodes: int | None, max_opcodes: int, max_payload: int) -> bool:
    """True when playing ``raw`` cannot make :meth:`PickleResult.looks_like_pickle` true, so a probe can
    skip it: no byte could be a STOP or a global-naming opcode, and (when a count of opcodes is evidence)
    there are fewer bytes than that count and too few to hit the opcode or payload limits."""
    if any(code in raw for code in _EVIDENCE_OPCODES):
        return False
    if evidence_opcodes is None:
        return True
    n = len(raw)
    return n < evidence_opcodes and n <= max_opcodes and n <= max_payload


def _play(buf: Buffer, limit: int, policy: Policy, torch_context: bool, max_pickles: int | None,
          probe: bool, nested: Nested | None, evidence_opcodes: int | None, max_opcodes: int,
          cache: dict[tuple[str, str], Verdict]) -> tuple[StreamResult, bool]:
    """The stream loop of :func:`analyze_stream`; also says whether a pickle ran into the buffer's end."""
    findings: list[RawFinding] = []
    count = 0
    end = 0
    failed = False
    ran_out = False
    size = len(buf)
    pos = 0
    while pos < size and (max_pickles is None or count < max_pickles):
        start = pos
        label = f"pickle {count + 1}, " if count else ""
        machine = Machine(buf, policy, at=pos, limit=limit, torch_context=torch_context, nested=nested,
                          cache=cache, label=label)
        res = machine.run(max_opcodes)
        pos = res.end
        ran_out = ran_out or res.out_of_data or (res.error is not None and res.end >= size)
        first = count == 0
        if not res.looks_like_pickle(evidence_opcodes) and (probe or not first):
            pos = start
            break
        count += 1
        findings.extend(res.findings)
        if res.error is not None:
            rule = "BASTION-LIMIT" if res.limit_hit else "BASTION-PARSE"
            where = f"{label}opcode {res.opcodes} (offset 0x{res.end:x})"
            findings.append((rule, Severity.HIGH, where,
                             f"pickle could not be fully parsed ({res.error}); what follows was not scanned",
                             None))
            end = res.end
            failed = True
            break
        end = res.end
    # stopping at the buffer's end says nothing about what lies after a window: read further
    ran_out = ran_out or pos >= size
    return StreamResult(findings, count, end, count > 0, failed), ran_out

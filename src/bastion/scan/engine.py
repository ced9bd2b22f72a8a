"""The dispatcher: sniff a blob's format, hand it to that format's scanner, recurse into containers.

One :class:`Context` per top-level file holds the findings, the policy, the decompression budget and
the verdict cache. Every format scanner receives ``(ctx, data, inner, depth)``: ``data`` is a
memoryview (zero-copy over the mmap'd file where possible), ``inner`` the location prefix inside the
top-level file (container members joined by ``!``) and ``depth`` the nesting level.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.scan.findings import Finding, Severity
from bastion.scan.pickle_vm import RawFinding, StreamResult, analyze_stream
from bastion.scan.policy import Policy, Verdict
from bastion.scan.sniff import sniff

Handler = Callable[["Context", memoryview, str, int, frozenset[str]], None]
NO_HINTS: frozenset[str] = frozenset()
_SNIFF_BYTES = 1024
_CHUNK = 1 << 20
#: most output one decompress call may return: a bigger piece would be a second full-size copy in memory
_PIECE = 8 << 20
_STORAGE_PROBE_OPCODES = 100_000
#: formats recognised from two or three bytes, or from a plausible length field
_WEAK_KINDS = frozenset({"zlib", "lzma", "onnx", "safetensors", "pickle", "joblib-zf"})


@dataclass
class Inflated:
    """Output of one compressed stream: the bytes, whether the stream ended properly, input consumed."""

    data: bytes | bytearray
    complete: bool
    consumed: int


#: every file may decompress at least this much; beyond it, up to ``max_expansion`` times its own size
_BUDGET_FLOOR = 256 * 1024**2


def escape(text: str) -> str:
    """``text`` with control, bidi and other invisible characters escaped: names inside a scanned file
    reach terminals, logs and SARIF viewers, and must not repaint or reorder what they show."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
                                               if ord(c) < 0x10000 else f"\\U{ord(c):08x}") for c in text)


@dataclass
class Context:
    path: str
    policy: Policy
    findings: list[Finding] = field(default_factory=list)
    decompressed: int = 0
    cache: dict[tuple[str, str], Verdict] = field(default_factory=dict)
    #: size of the file on disk: the decompression budget scales with it (see :meth:`budget`)
    size: int = 0
    _budget_hit: bool = False

    @property
    def budget(self) -> int:
        """Bytes everything in this file may decompress to, over all members and streams together.

        A file of a few megabytes that inflates to gigabytes is a bomb, not a model: the budget is
        ``max_expansion`` times the file size (never below 256 MiB), capped by ``max_decompressed_bytes``.
        """
        lim = self.policy.limits
        return min(lim.max_decompressed_bytes, max(_BUDGET_FLOOR, lim.max_expansion * self.size))

    # reporting ---------------------------------------------------------------------------------------

    @staticmethod
    def location(inner: str, where: str = "") -> str:
        if inner and where:
            return f"{inner}@{where}"
        return inner or where

    @staticmethod
    def member(inner: str, name: str) -> str:
        """Location prefix of a container member: members are joined with ``!``."""
        return f"{inner}!{name}" if inner else name

    def emit(self, rule: str, severity: Severity, inner: str, where: str, message: str,
             global_name: str | None = None) -> None:
        self.findings.append(Finding(rule, severity, escape(self.path), escape(self.location(inner, where)),
                                     escape(message), None if global_name is None else escape(global_name)))

    def emit_raw(self, raws: list[RawFinding], inner: str) -> None:
        for rule, sev, where, message, gname in raws:
            self.emit(rule, sev, inner, where, message, gname)

    # recursion ---------------------------------------------------------------------------------------

    def scan(self, data: memoryview | bytes | bytearray, inner: str, depth: int, hints: frozenset[str] = frozenset()) -> str:
        """Scan one blob; returns the format it was recognised as."""
        mv = data if isinstance(data, memoryview) else memoryview(data)
        if depth > self.policy.limits.max_depth:
            self.emit("BASTION-LIMIT", Severity.HIGH, inner, "",
                      f"nested deeper than {self.policy.limits.max_depth} containers (limit max_depth); "
                      "not scanned")
            return "too-deep"
        kind = sniff(bytes(mv[:_SNIFF_BYTES]), len(mv))
        if "storage" in hints and kind in _WEAK_KINDS:
            # raw tensor bytes match weak signatures by chance: only a pickle probe is worth it there
            kind = "maybe-pickle"
        handler = _handlers().get(kind)
        if handler is None:
            return kind
        # handlers of weakly sniffed formats return what the blob turned out to be
        try:
            found: str | None = handler(self, mv, inner, depth, hints)
        except (Exception, MemoryError) as exc:  # fail closed on anything a parser raises
            self.emit("BASTION-PARSE", Severity.HIGH, inner, "",
                      f"{kind} could not be parsed ({type(exc).__name__}: {exc}); not called clean")
            return kind
        return found or kind

    def pickle_stream(self, data: memoryview | bytes, inner: str, depth: int, *, torch_context: bool = False,
                      max_pickles: int | None = None, probe: bool = False,
                      evidence_opcodes: int | None = 32, max_opcodes: int | None = None) -> StreamResult:
        """Play the pickles in ``data`` and report what they do."""

        def nested(payload: bytes, where: str) -> list[RawFinding]:
            # bytes a loader unpickles again: scan them as their own pickle stream
            sub = analyze_stream(payload, self.policy, nested=nested, cache=self.cache)
            return [(r, s, f"{where}{w}", m, g) for r, s, w, m, g in sub.findings]

        res = analyze_stream(data, self.policy, torch_context=torch_context, max_pickles=max_pickles,
                             probe=probe, nested=nested, cache=self.cache, evidence_opcodes=evidence_opcodes,
                             max_opcodes=max_opcodes)
        if res.is_pickle:
            self.emit_raw(res.findings, inner)
        return res

    # decompression under the budget -------------------------------------------------------------------

    def budget_left(self) -> int:
        return self.budget - self.decompressed

    def inflate(self, decompressor: Any, data: memoryview | bytes, inner: str,
                into: bytearray | None = None) -> Inflated | None:
        """Run a zlib/bz2/lzma decompressor under the budget, never holding more than it allows.

        ``into``: append the output there (streams a reader joins grow one buffer, never two copies).
        Returns None (after reporting BASTION-LIMIT) when the output would exceed the budget.
        """
        out = bytearray() if into is None else into
        base = len(out)
        # ``left`` bounds len(out): what was in ``into`` is already counted against the budget
        left = self.budget_left() + base
        if left <= base and self._budget_hit:
            return None
        src = memoryview(data)
        pos = 0
        is_zlib = hasattr(decompressor, "unconsumed_tail")
        pending = b""
        while not decompressor.eof:
            if is_zlib:
                if not pending:
                    if pos >= len(src):
                        break
                    pending = bytes(src[pos:pos + _CHUNK])
                    pos += len(pending)
                piece = decompressor.decompress(pending, max(1, min(_PIECE, left - len(out) + 1)))
                pending = decompressor.unconsumed_tail
            else:
                if decompressor.needs_input:
                    if pos >= len(src):
                        break
                    chunk = bytes(src[pos:pos + _CHUNK])
                    pos += len(chunk)
                else:
                    chunk = b""
                piece = decompressor.decompress(chunk, max(1, min(_PIECE, left - len(out) + 1)))
            out += piece
            if len(out) > left:
                self.over_budget(inner)
                return None
        self.decompressed += len(out) - base
        # at the end of a zlib stream its unconsumed_tail and unused_data are the same bytes: count them once
        after = len(getattr(decompressor, "unused_data", b"")) if decompressor.eof else len(pending)
        consumed = pos - (max(after, len(pending)) if is_zlib else after)
        # the bytearray itself, not a bytes copy: a copy would double the peak memory of a large member
        return Inflated(out, bool(decompressor.eof), consumed)

    def over_budget(self, inner: str) -> None:
        # the budget is spent for the whole file: later members (even ones pointing at the same
        # compressed bytes) fail at once instead of each inflating up to the budget again, and the one
        # finding stands for all of them
        self.decompressed = max(self.decompressed, self.budget)
        if self._budget_hit:
            return
        self._budget_hit = True
        self.emit("BASTION-LIMIT", Severity.HIGH, inner, "",
                  f"decompressed data would exceed {self.budget} bytes for this file (limits "
                  "max_decompressed_bytes and max_expansion); a decompression bomb? the rest was not scanned")


# -- format handlers that live here (the rest are in their own modules) -----------------------------------


def scan_pickle(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    if "storage" in hints:
        # a tensor storage whose first bytes happen to read as a pickle header: probe, do not insist
        scan_maybe_pickle(ctx, data, inner, depth, hints)
        return
    res = ctx.pickle_stream(data, inner, depth, torch_context="torch" in hints)
    trailing(ctx, data, res.end, inner, depth, "pickle")


def scan_maybe_pickle(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> str:
    storage = "storage" in hints
    # tensor bytes can be long runs of valid opcodes: give up on them early instead of playing them all
    res = ctx.pickle_stream(data, inner, depth, probe=True, torch_context="torch" in hints,
                            evidence_opcodes=None if storage else 32,
                            max_opcodes=_STORAGE_PROBE_OPCODES if storage else None)
    if res.is_pickle:
        trailing(ctx, data, res.end, inner, depth, "pickle")
        return "pickle"
    return scan_unknown(ctx, data, inner, depth, hints)


def trailing(ctx: Context, data: memoryview, end: int, inner: str, depth: int, fmt: str) -> None:
    """Bytes after a format's end: a polyglot can hide a second format there, so scan them too."""
    if end <= 0 or end >= len(data):
        return
    rest = data[end:]
    if hdf5_offset(data) is not None:
        # the pickle sits in an HDF5 user block: h5py and Keras read the same file as HDF5
        from bastion.scan.formats import scan_hdf5

        ctx.emit("BASTION-TRAILING-DATA", Severity.MEDIUM, inner, f"offset 0x{end:x}",
                 f"the {fmt} is followed by an HDF5 superblock (a user block polyglot); scanned as HDF5 too")
        scan_hdf5(ctx, data, inner, depth, frozenset())
        return
    kind = sniff(bytes(rest[:_SNIFF_BYTES]), len(rest))
    if kind in ("unknown", "maybe-pickle"):
        from bastion.scan.archives import opens_as_zip

        if _has_zip_end(rest) and opens_as_zip(rest):
            kind = "zip"
        else:
            return
    ctx.emit("BASTION-TRAILING-DATA", Severity.MEDIUM, inner, f"offset 0x{end:x}",
             f"{len(rest)} bytes after the end of the {fmt} look like {kind}; scanned as such")
    ctx.scan(rest, ctx.member(inner, f"<bytes from offset 0x{end:x}>"), depth + 1)


def _has_zip_end(data: memoryview) -> bool:
    tail = bytes(data[-(65536 + 22):])
    return b"PK\x05\x06" in tail


def hdf5_offset(data: memoryview) -> int | None:
    """Where an HDF5 superblock sits after a user block (512, 1024, 2048... bytes): h5py finds it there."""
    from bastion.scan.sniff import HDF5_MAGIC

    off = 512
    while off + 8 <= len(data):
        if data[off:off + 8] == HDF5_MAGIC:
            return off
        off *= 2
    return None


def scan_unknown(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> str:
    # an unrecognised blob may still be a zip with data in front (zip readers look at the end); tensor
    # storages are raw numbers, and four bytes of end-of-directory signature there mean nothing
    if "storage" not in hints and hdf5_offset(data) is not None:
        from bastion.scan.formats import scan_hdf5

        scan_hdf5(ctx, data, inner, depth, hints)
        return "hdf5"
    if "storage" in hints or len(data) < 22 or not _has_zip_end(data):
        return "unknown"
    from bastion.scan.archives import opens_as_zip, scan_zip

    if opens_as_zip(data):
        scan_zip(ctx, data, inner, depth, hints)
        return "zip"
    return "unknown"


def scan_torch_legacy(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    # magic, protocol version, sys_info, the object, storage keys; raw storage bytes follow
    res = ctx.pickle_stream(data, inner, depth, torch_context=True, max_pickles=5)
    if res.pickles < 5 and not res.failed:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, f"offset 0x{res.end:x}",
                 f"legacy PyTorch checkpoint holds {res.pickles} of its 5 pickles; truncated or corrupt")
        return
    if res.pickles == 5 and not res.failed:
        problem = _legacy_storage_problem(data)
        if problem and problem.startswith("+"):
            trailing(ctx, data, int(problem[1:]), inner, depth, "legacy PyTorch checkpoint")
            if _has_zip_end(data[int(problem[1:]):]) or sniff(bytes(data[int(problem[1:]):][:64]), 64) != "unknown":
                return
            ctx.emit("BASTION-TRAILING-DATA", Severity.MEDIUM, inner, f"offset 0x{int(problem[1:]):x}",
                     f"{len(data) - int(problem[1:])} bytes follow the last storage (torch.load ignores them)")
        elif problem:
            ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"legacy PyTorch checkpoint: {problem}; "
                     "torch.load cannot read it, so it is not called clean")


_STORAGE_SIZES = {"Byte": 1, "Char": 1, "Bool": 1, "QUInt8": 1, "QInt8": 1, "QUInt4x2": 1, "QUInt2x4": 1,
                  "Short": 2, "Half": 2, "BFloat16": 2, "Int": 4, "Float": 4, "QInt32": 4, "Long": 8,
                  "Double": 8, "ComplexFloat": 8, "ComplexDouble": 16}
_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "STRING", "SHORT_BINSTRING", "BINSTRING"})


def _legacy_storage_problem(data: memoryview) -> str | None:
    """What is wrong with the raw storages (None: nothing; ``"+N"``: bytes follow from offset N). After the 5 pickles come, per storage key (in the 5th pickle's order), an 8-byte element count and
    the raw elements, whose size the storage type in the object pickle's persistent ids gives."""
    import io
    import pickletools

    fh = io.BytesIO(bytes(data))
    sizes: dict[str, int] = {}
    keys: list[str] = []
    pending: int | None = None
    try:
        for i in range(5):
            for op, arg, _pos in pickletools.genops(fh):
                if i == 3 and op.name == "GLOBAL" and isinstance(arg, str) and arg.startswith("torch "):
                    pending = _STORAGE_SIZES.get(arg[6:].removesuffix("Storage"))
                elif i == 3 and op.name in _STRINGS and pending is not None and isinstance(arg, str):
                    sizes[arg] = pending  # the string after the storage type in a persistent id is its key
                    pending = None
                elif i == 4 and op.name in _STRINGS:
                    keys.append(str(arg))
    except (ValueError, EOFError) as exc:
        return f"pickles cannot be walked ({exc})"
    pos = fh.tell()
    for key in keys:
        es = sizes.get(key)
        if es is None:
            return None  # a storage type this check does not know (protocol-2 STACK_GLOBAL etc.): no claim
        if pos + 8 > len(data):
            return f"storage {key!r} is missing (file ends at {len(data)} bytes)"
        count = int.from_bytes(data[pos:pos + 8], "little")
        pos += 8 + count * es
        if pos > len(data):
            return f"storage {key!r} needs {count * es} bytes and the file ends before them"
    if pos != len(data):
        return f"+{pos}"  # trailing bytes after the last storage: the caller scans them
    return None


def scan_weakly_sniffed_stream(ctx: Context, decompressor: Any, error: type[Exception], fmt: str, data: memoryview,
                               inner: str, depth: int, hints: frozenset[str]) -> str | None:
    """A compressed stream recognised from a few header bytes only: inflate and scan it, or, when it does
    not decompress, probe it as the pickle its first byte may also be."""
    try:
        out = ctx.inflate(decompressor, data, inner)
    except error:
        return scan_maybe_pickle(ctx, data, inner, depth, hints)
    if out is None:
        return None
    if not out.complete:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"{fmt} stream is truncated; scanned what it held")
    ctx.scan(out.data, inner, depth + 1, hints)
    return None


def scan_zlib(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> str | None:
    # two bytes of zlib header are weak evidence: if it does not inflate, it may be a protocol-0 pickle
    try:
        first = ctx.inflate(zlib.decompressobj(), data, inner)
    except zlib.error:
        return scan_maybe_pickle(ctx, data, inner, depth, hints)
    if first is None:
        return None
    if not first.complete or first.consumed >= len(data) or not _is_zlib_at(data, first.consumed):
        if not first.complete:
            ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", "zlib stream is truncated; scanned what it held")
        ctx.scan(first.data, inner, depth + 1, hints)
        if first.complete and first.consumed < len(data):
            trailing(ctx, data, first.consumed, inner, depth, "zlib stream")
        return None
    # joblib's zlib reader starts a new decompressor where a stream ends: what it unpickles is the join
    joined = first.data if isinstance(first.data, bytearray) else bytearray(first.data)
    pos, n = first.consumed, 1
    while pos < len(data) and _is_zlib_at(data, pos):
        try:
            out = ctx.inflate(zlib.decompressobj(), data[pos:], inner, into=joined)
        except zlib.error as exc:
            ctx.emit("BASTION-PARSE", Severity.HIGH, inner, f"offset 0x{pos:x}", f"zlib stream {n + 1} is corrupt ({exc})")
            break
        if out is None:
            return None
        n += 1
        if not out.complete or out.consumed <= 0:
            ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"zlib stream {n} is truncated; scanned what it held")
            break
        pos += out.consumed
    ctx.emit("BASTION-MULTI-STREAM", Severity.LOW, inner, "",
             f"{n} zlib streams back to back; joblib joins them, so they were scanned as one")
    ctx.scan(joined, inner, depth + 1, hints)
    return None


def _is_zlib_at(data: memoryview, pos: int) -> bool:
    head = bytes(data[pos:pos + 2])
    return len(head) == 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


_HANDLER_CACHE: dict[str, Any] = {}


def _handlers() -> dict[str, Any]:
    if not _HANDLER_CACHE:
        from bastion.scan import archives, formats

        _HANDLER_CACHE.update({
            "pickle": scan_pickle,
            "maybe-pickle": scan_maybe_pickle,
            "torch-legacy": scan_torch_legacy,
            "unknown": scan_unknown,
            "zlib": scan_zlib,
            "zip": archives.scan_zip,
            "tar": archives.scan_tar,
            "gzip": archives.scan_gzip,
            "bz2": archives.scan_bz2,
            "xz": archives.scan_xz,
            "lzma": archives.scan_lzma,
            "7z": archives.scan_7z,
            "lz4": archives.scan_lz4,
            "zstd": archives.scan_zstd,
            "joblib-zf": archives.scan_joblib_zf,
            "npy": formats.scan_npy,
            "hdf5": formats.scan_hdf5,
            "safetensors": formats.scan_safetensors,
            "onnx": formats.scan_onnx,
        })
    return _HANDLER_CACHE

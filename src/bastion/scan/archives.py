"""Containers: zip (read from the raw local headers), tar, gzip/bz2/xz/lzma streams and 7z, recursively.

Zip members are located through the central directory but their bytes are read from each local header
ourselves, so the tricks that make Python's ``zipfile`` refuse a member while PyTorch still loads it (an
encryption flag bit, a bad CRC, odd flag bits, entries left out of the central directory) end up scanned
and reported, never skipped. Stored members are zero-copy views of the mmap'd file.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import re
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from bastion.scan.engine import Context, scan_weakly_sniffed_stream
from bastion.scan.findings import Severity
from bastion.scan.sniff import MODEL_SUFFIXES

_LOCAL = b"PK\x03\x04"
_LOCAL_FMT = struct.Struct("<4sHHHHHIIIHH")
#: raw tensor bytes in a PyTorch archive (archive/data/0, ...): torch never unpickles these
_STORAGE_NAME = re.compile(r"(^|/)data/\d+$")
_STORAGE = frozenset({"storage"})
_ZIP_ZSTD = 93
_NORMAL_FLAGS = 0x0002 | 0x0004 | 0x0008 | 0x0800  # compression options, data descriptor, UTF-8 names
#: archives up to this size are parsed from a bytes copy (slicing bytes is cheaper than slicing a view)
_COPY_MAX = 1 << 20
Blob = memoryview | bytes


class MemFile(io.RawIOBase):
    """A read-only, seekable file over a memoryview (what tarfile and py7zr want), without copying it."""

    def __init__(self, data: memoryview) -> None:
        self.mv = data
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: len(self.mv)}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), max(0, len(self.mv) - self.pos))
        memoryview(buffer).cast("B")[:n] = self.mv[self.pos:self.pos + n]
        self.pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.mv) if size is None or size < 0 else min(len(self.mv), self.pos + size)
        out = bytes(self.mv[self.pos:end])
        self.pos = max(self.pos, end)
        return out


@dataclass
class _Entry:
    name: str
    offset: int  # of the local header
    method: int
    flags: int
    csize: int
    usize: int
    crc: int
    in_directory: bool = True


def _classify_zip(names: list[str]) -> frozenset[str]:
    hints = set()
    if any(n.endswith("data.pkl") or n.endswith(".data/version") or n.endswith("/byteorder") for n in names):
        hints.add("torch")
    if any(n.endswith("constants.pkl") or "/code/" in f"/{n}" for n in names):
        hints.update({"torch", "torchscript"})
    # Keras reads config.json whether or not metadata.json and the weights are there
    if "config.json" in names and ("metadata.json" in names or any(n.endswith(".weights.h5") for n in names)
                                   or len(names) <= 3):
        hints.add("keras")
    return frozenset(hints)


def _zip_file(data: Blob) -> io.RawIOBase | io.BytesIO:
    """What zipfile reads: an in-memory file over the blob (C-backed for small copies)."""
    return io.BytesIO(data) if isinstance(data, bytes) else MemFile(data)


def opens_as_zip(data: Blob) -> bool:
    """True when Python's zipfile finds a central directory (used for blobs without a zip header)."""
    try:
        with zipfile.ZipFile(_zip_file(data)):
            return True
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, struct.error,
            NotImplementedError, UnicodeDecodeError, KeyError):
        return False


_EOCD = b"PK\x05\x06"
_EOCD_FMT = struct.Struct("<4sHHHHIIH")
_DESCRIPTOR = b"PK\x07\x08"


_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END = b"PK\x06\x06"


def _end_record(data: Blob) -> tuple[int, int, int, int] | None:
    """(where the directory ends, entries, directory size, directory offset) from the last end record.

    A zip64 archive (what torch.save writes) puts a zip64 end record between the directory and the
    classic one; its figures are used then. Values a record does not know are -1.
    """
    start = max(0, len(data) - (65535 + 22))
    tail = bytes(data[start:])
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        return None
    _sig, _disk, _cd_disk, _n_disk, n_total, size_cd, offset_cd, _clen = _EOCD_FMT.unpack(tail[at:at + 22])
    end = start + at
    locator = end - 20
    if locator >= 0 and bytes(data[locator:locator + 4]) == _ZIP64_LOCATOR:
        rec = int.from_bytes(bytes(data[locator + 8:locator + 16]), "little")
        if bytes(data[rec:rec + 4]) != _ZIP64_END or rec + 56 > locator:
            return end, -1, -1, -1  # a locator pointing nowhere: zipfile says what it makes of that
        raw = bytes(data[rec + 32:rec + 56])
        return (rec, int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little"),
                int.from_bytes(raw[16:], "little"))
    return (end, -1 if n_total == 0xFFFF else n_total, -1 if size_cd == 0xFFFFFFFF else size_cd,
            -1 if offset_cd == 0xFFFFFFFF else offset_cd)


_LOCATOR_FMT = struct.Struct("<4sIQI")
_ZIP64_END_FMT = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL_FMT = struct.Struct("<4sBBBBHHHHIIIHHHHHII")
_CENTRAL = b"PK\x01\x02"
_MAX_EXTRACT_VERSION = 63  # zipfile refuses entries that need a later version


def plain_directory(data: Blob) -> list[_Entry] | None:
    """The central directory of a plain archive, read without zipfile; None when the archive is not plain.

    Plain: no archive comment, one disk, the directory exactly where the end record (or a zip64 end
    record right before its locator) says, every entry complete, without extra fields, with a name that
    decodes and holds no NUL. For such an archive this is what ``zipfile.ZipFile(...).infolist()`` gives
    (same entries, order and fields), in a fraction of the time; anything else goes to zipfile.
    """
    size = len(data)
    if size < 22 + 20 + 56:
        return None
    at = size - 22
    sig, disk, cd_disk, n_disk, n_total, size_cd, offset_cd, comment = _EOCD_FMT.unpack_from(data, at)
    if sig != _EOCD or comment or disk or cd_disk or n_disk != n_total:
        return None
    locator = at - 20
    lsig, ldisk, reloff, disks = _LOCATOR_FMT.unpack_from(data, locator)
    if lsig == _ZIP64_LOCATOR:
        rec = locator - 56
        (zsig, zsize, _made, _need, zdisk, zdisk_dir, count, count_total, size_cd,
         offset_cd) = _ZIP64_END_FMT.unpack_from(data, rec)
        if (zsig != _ZIP64_END or ldisk or disks != 1 or reloff != rec or zsize != 44 or zdisk or zdisk_dir
                or count != count_total):
            return None
        at = rec
    if offset_cd + size_cd != at:
        return None  # zipfile would re-base the offsets: leave that to it
    out: list[_Entry] = []
    pos = offset_cd
    utf8 = 0x800
    while pos < at:
        if pos + 46 > at:
            return None
        (csig, _made_v, _made_s, need, _res, flags, method, _t, _d, crc, csize, usize, nlen, xlen, clen,
         _disk, _iattr, _eattr, offset) = _CENTRAL_FMT.unpack_from(data, pos)
        name_at = pos + 46
        pos = name_at + nlen + xlen + clen
        if csig != _CENTRAL or xlen or need > _MAX_EXTRACT_VERSION or pos > at or offset >= offset_cd:
            return None
        raw = bytes(data[name_at:name_at + nlen])
        try:
            name = raw.decode("utf-8") if flags & utf8 else raw.decode("cp437")
        except UnicodeDecodeError:
            return None
        if "\x00" in name or (os.sep != "/" and os.sep in name):
            return None
        out.append(_Entry(name, offset, method, flags, csize, usize, crc))
    return out


def _directory(ctx: Context, data: Blob, inner: str) -> list[_Entry] | None:
    entries = plain_directory(data)
    if entries is None:
        try:
            with zipfile.ZipFile(_zip_file(data)) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, struct.error,
                NotImplementedError, UnicodeDecodeError, KeyError) as exc:
            ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "central directory",
                     f"zip central directory cannot be read ({exc}); scanning entries from the local headers")
            return None
        entries = [_Entry(i.filename, i.header_offset, i.compress_type, i.flag_bits, i.compress_size,
                          i.file_size, i.CRC) for i in infos]
    end = _end_record(data)
    if end is not None and bytes(data[:4]) == _LOCAL:
        at, n_total, size_cd, offset_cd = end
        # zipfile quietly re-bases a directory that is not where the end record says (and ignores the
        # entry count); in an archive that starts with its first member either means a corrupt record
        if offset_cd >= 0 and size_cd >= 0 and at - size_cd != offset_cd:
            ctx.emit("BASTION-ZIP-ANOMALY", Severity.MEDIUM, inner, "central directory",
                     f"end record puts the central directory at 0x{offset_cd:x} ({size_cd} bytes), but it "
                     f"ends at 0x{at:x}; member offsets were re-based and every local header walked")
        elif n_total >= 0 and n_total != len(entries):
            ctx.emit("BASTION-ZIP-ANOMALY", Severity.MEDIUM, inner, "central directory",
                     f"end record counts {n_total} entries, the central directory holds {len(entries)}")
    return entries


def find(data: Blob, sig: bytes, start: int) -> int:
    """Offset of ``sig`` in ``data`` at or after ``start`` (-1 if absent), reading 1 MiB at a time."""
    step = 1 << 20
    pos = start
    while pos < len(data):
        chunk = bytes(data[pos:pos + step + len(sig) - 1])
        idx = chunk.find(sig)
        if idx >= 0:
            return pos + idx
        pos += step
    return -1


def _size_before_descriptor(data: Blob, body: int) -> int:
    """Compressed size of a member whose sizes sit in a data descriptor after its bytes.

    Without a central directory the only way to find the end is the descriptor itself: the first
    ``PK\\x07\\x08`` whose recorded size (32- or 64-bit) equals its distance from the member's start, or an
    unsigned descriptor right before the next local header. Failing both, the member runs to the next
    local header (or the end).
    """
    pos = body
    while (at := find(data, _DESCRIPTOR, pos)) >= 0:
        size = at - body
        fields = bytes(data[at + 8:at + 16])
        if len(fields) >= 4 and int.from_bytes(fields[:4], "little") == size:
            return size
        if len(fields) == 8 and int.from_bytes(fields, "little") == size:
            return size
        pos = at + 1
    nxt = find(data, _LOCAL, body)
    end = nxt if nxt >= 0 else len(data)
    for width in (12, 20):  # CRC + 32-bit sizes, CRC + 64-bit sizes, without the signature
        size = end - width - body
        if size >= 0:
            half = (width - 4) // 2
            recorded = int.from_bytes(bytes(data[end - width + 4:end - width + 4 + half]), "little")
            if recorded == size:
                return size
    return end - body


def _walk_local(data: Blob, known: dict[int, _Entry]) -> list[_Entry]:
    """Follow local headers from offset 0 while they chain (what a streaming zip reader sees).

    Sizes come from the central directory for the entries it lists; an entry it does not list and whose
    sizes sit in a data descriptor is bounded by the next local header.
    """
    out: list[_Entry] = []
    pos = 0
    size = len(data)
    while pos + 30 <= size:
        sig, _ver, flags, method, _t, _d, crc, csize, usize, nlen, xlen = _LOCAL_FMT.unpack_from(data, pos)
        if sig != _LOCAL:
            break
        body = pos + 30 + nlen + xlen
        listed = known.get(pos)
        if listed is not None:
            csize = listed.csize
        else:
            if flags & 0x08 and csize == 0:
                csize = _size_before_descriptor(data, body)
            name = bytes(data[pos + 30:pos + 30 + nlen]).decode("utf-8", "replace")
            out.append(_Entry(name, pos, method, flags, csize, usize, crc, in_directory=False))
        pos = body + csize
        if flags & 0x08:
            # optional descriptor signature, then CRC and sizes (zip64 descriptors are 8 bytes longer)
            if data[pos:pos + 4] == _DESCRIPTOR:
                pos += 4
            pos += 12
            if data[pos:pos + 4] != _LOCAL and data[pos + 8:pos + 12] == _LOCAL:
                pos += 8
    return out


def _member_bytes(ctx: Context, data: Blob, e: _Entry, inner: str) -> memoryview | bytes | bytearray | None:
    """The member's uncompressed bytes, read from its local header; None after reporting why not."""
    where = ctx.member(inner, e.name)
    fields = _LOCAL_FMT.unpack_from(data, e.offset) if 0 <= e.offset <= len(data) - 30 else None
    if fields is None or fields[0] != _LOCAL:
        ctx.emit("BASTION-PARSE", Severity.HIGH, where, "",
                 f"no local header at offset 0x{e.offset:x}; member cannot be read")
        return None
    lflags, nlen, xlen = fields[2], fields[9], fields[10]
    lname = bytes(data[e.offset + 30:e.offset + 30 + nlen]).decode("utf-8", "replace")
    if e.in_directory and lname != e.name:
        ctx.emit("BASTION-ZIP-ANOMALY", Severity.MEDIUM, where, "",
                 f"local header names the member {lname!r}, the central directory {e.name!r}")
    flags = e.flags | lflags
    if flags & 0x01:
        ctx.emit("BASTION-ZIP-ANOMALY", Severity.MEDIUM, where, "",
                 "encryption flag set (zipfile refuses the member, PyTorch's reader ignores the flag); "
                 "scanned as plain data")
    odd = flags & ~(_NORMAL_FLAGS | 0x01)
    if odd:
        ctx.emit("BASTION-ZIP-ANOMALY", Severity.MEDIUM, where, "", f"unusual zip flag bits 0x{odd:04x}")
    start = e.offset + 30 + nlen + xlen
    end = start + e.csize
    if end > len(data):
        ctx.emit("BASTION-PARSE", Severity.HIGH, where, "",
                 f"member data ({e.csize} bytes) runs past the end of the archive; scanned what exists")
        end = len(data)
    raw = data[start:end]
    try:
        if e.method == zipfile.ZIP_STORED:
            return raw
        if e.method == zipfile.ZIP_DEFLATED:
            out = ctx.inflate(zlib.decompressobj(-15), raw, where)
        elif e.method == zipfile.ZIP_BZIP2:
            out = ctx.inflate(bz2.BZ2Decompressor(), raw, where)
        elif e.method == _ZIP_ZSTD and _zstd_decompressor() is not None:
            out = ctx.inflate(_zstd_decompressor(), raw, where)
        elif e.method == zipfile.ZIP_LZMA:
            # zip's LZMA: 2 version bytes, 2-byte properties size, the properties, then raw LZMA1
            psize = int.from_bytes(bytes(raw[2:4]), "little")
            props = bytes(raw[4:4 + psize])
            filt = lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)  # type: ignore[attr-defined]
            out = ctx.inflate(lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt]), raw[4 + psize:], where)
        else:
            ctx.emit("BASTION-ARCHIVE-UNSCANNABLE", Severity.HIGH, where, "",
                     f"compression method {e.method} is not supported by the scanner; member not scanned")
            return None
    except (zlib.error, OSError, lzma.LZMAError, ValueError, EOFError, RuntimeError) as exc:
        ctx.emit("BASTION-ARCHIVE-UNSCANNABLE", Severity.HIGH, where, "",
                 f"member does not decompress ({exc}); not scanned")
        return None
    if out is None:
        return None
    if not out.complete:
        ctx.emit("BASTION-PARSE", Severity.HIGH, where, "", "compressed member is truncated; scanned what it held")
    return out.data


def scan_zip(ctx: Context, view: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    data: Blob = bytes(view) if len(view) <= _COPY_MAX else view
    entries = _directory(ctx, data, inner)
    if entries is None:
        entries = _walk_local(data, {})
    else:
        hidden = _walk_local(data, {e.offset: e for e in entries})
        for e in hidden:
            ctx.emit("BASTION-ZIP-ANOMALY", Severity.MEDIUM, ctx.member(inner, e.name), "",
                     f"local header at offset 0x{e.offset:x} is missing from the central directory "
                     "(a streaming reader would still load it); scanned")
        entries = entries + hidden
    names = [e.name for e in entries]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            ctx.emit("BASTION-ZIP-ANOMALY", Severity.MEDIUM, ctx.member(inner, n), "",
                     "the name appears twice in the archive; readers disagree on which one they load")
        seen.add(n)
    member_hints = _classify_zip(names)
    for e in entries:
        if e.name.endswith("/") and e.csize == 0:
            continue
        body = _member_bytes(ctx, data, e, inner)
        if body is None:
            continue
        where = ctx.member(inner, e.name)
        hints_here = member_hints | _STORAGE if "torch" in member_hints and _STORAGE_NAME.search(e.name) \
            else member_hints
        kind = ctx.scan(body, where, depth + 1, hints_here)
        if e.flags & 0x01 and kind == "unknown":
            # really encrypted (not just a flipped flag bit): whatever it holds could not be read
            ctx.emit("BASTION-ARCHIVE-UNSCANNABLE", Severity.HIGH, where, "",
                     "member is encrypted and its bytes are not a recognisable format; not scanned")
        suffix = PurePosixPath(e.name).suffix.lower() if kind == "unknown" and "storage" not in hints_here else ""
        if suffix in MODEL_SUFFIXES:
            # a member named like a pickle or model that parses as nothing: a loader may still try it
            ctx.emit("BASTION-UNRECOGNISED", Severity.MEDIUM, where, "",
                     f"member named like a model file ({suffix}) but its bytes match no model format; "
                     "nothing in it was analysed")
        if kind not in ("unknown", "too-deep") and e.in_directory and (zlib.crc32(body) & 0xFFFFFFFF) != e.crc:
            ctx.emit("BASTION-ZIP-ANOMALY", Severity.MEDIUM, where, "",
                     "CRC-32 does not match the data (zipfile refuses it; other readers do not check); "
                     "scanned anyway")
        _by_name(ctx, e.name, body, where, member_hints)


def _by_name(ctx: Context, name: str, body: memoryview | bytes | bytearray, where: str, hints: frozenset[str]) -> None:
    """Members a loader treats by name rather than by content: TorchScript code, Keras config."""
    code = "torchscript" in hints and "/code/" in f"/{name}" and name.endswith(".py")
    keras = "keras" in hints and name == "config.json"
    if not (code or keras):
        return
    from bastion.scan import formats

    if code:
        formats.scan_torchscript_code(ctx, bytes(body), where)
    if keras:
        formats.scan_keras_config_json(ctx, bytes(body), where)


def scan_tar(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    try:
        with tarfile.open(fileobj=MemFile(data), mode="r:") as tf:
            members = tf.getmembers()
    except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"tar archive cannot be read ({exc})")
        return
    if "storage" not in hints:
        # a tar header begins with the first member's name, which pickle.load / np.load(allow_pickle=True)
        # read as opcodes: a name can be a whole pickle program (a tar/pickle polyglot)
        from bastion.scan.engine import scan_maybe_pickle

        probe = Context(ctx.path, ctx.policy, size=ctx.size)
        scan_maybe_pickle(probe, data[:512], inner, depth, frozenset({"storage"}))
        bad = [f for f in probe.findings if f.severity >= Severity.HIGH and f.rule_id != "BASTION-PARSE"]
        if bad:
            ctx.emit("BASTION-TRAILING-DATA", Severity.MEDIUM, inner, "",
                     "the tar header also reads as a pickle (a polyglot); scanned as both")
            ctx.findings.extend(bad)
    names = [m.name for m in members]
    member_hints = hints | (frozenset({"torch"}) if {"pickle", "storages", "tensors"} <= set(names) else frozenset())
    for m in members:
        if not m.isfile():
            continue
        start, end = m.offset_data, m.offset_data + m.size
        where = ctx.member(inner, m.name)
        if end > len(data):
            ctx.emit("BASTION-PARSE", Severity.HIGH, where, "", "tar member runs past the end of the archive")
            end = len(data)
        ctx.scan(data[start:end], where, depth + 1, member_hints)


def _scan_stream(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str], label: str,
                 make: type | object, magic: bytes) -> None:
    """gzip/bz2/xz/zstd: possibly several streams back to back, which every reader (gzip.open, bz2.open,
    lzma.open, joblib) joins into one. A pickle split across members only exists in the joined bytes,
    so those are what gets scanned, under one budget."""
    pos = 0
    n = 0
    joined = bytearray()
    complete = True
    while pos < len(data):
        if n and bytes(data[pos:pos + len(magic)]) != magic:
            break  # trailing padding after the last stream (gzip allows it)
        d = make() if callable(make) else make
        try:
            out = ctx.inflate(d, data[pos:], inner, into=joined if n else None)
        except (zlib.error, OSError, lzma.LZMAError, ValueError, EOFError, RuntimeError) as exc:
            ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"{label} stream {n + 1} is corrupt ({exc})")
            break
        if out is None:
            return
        if n == 0 and (not out.complete or out.consumed <= 0 or pos + out.consumed >= len(data)):
            # the common case, one stream: scan its buffer without copying it
            if not out.complete:
                ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"{label} stream is truncated; scanned what it held")
            ctx.scan(memoryview(out.data), inner, depth + 1, hints)
            return
        if not n:
            joined = out.data if isinstance(out.data, bytearray) else bytearray(out.data)
        n += 1
        if not out.complete:
            complete = False
            break
        if out.consumed <= 0:
            break
        pos += out.consumed
    if not complete:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"{label} stream {n} is truncated; scanned what it held")
    if n > 1:
        ctx.emit("BASTION-MULTI-STREAM", Severity.LOW, inner, "",
                 f"{n} {label} streams back to back; readers join them, so they were scanned as one")
    ctx.scan(memoryview(joined), inner, depth + 1, hints)


def scan_gzip(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    _scan_stream(ctx, data, inner, depth, hints, "gzip", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
                 b"\x1f\x8b")


def scan_bz2(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    _scan_stream(ctx, data, inner, depth, hints, "bz2", bz2.BZ2Decompressor, b"BZh")


def scan_xz(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    _scan_stream(ctx, data, inner, depth, hints, "xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ),
                 b"\xfd7zXZ\x00")


def scan_lzma(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> str | None:
    # the legacy .lzma format has a 3-byte hint of a header: if it does not decode, probe it as a pickle
    return scan_weakly_sniffed_stream(ctx, lzma.LZMADecompressor(lzma.FORMAT_ALONE), lzma.LZMAError, "lzma", data,
                                      inner, depth, hints)


def scan_joblib_zf(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    # joblib < 0.10 compressed files: b"ZF" + hex length padded to 18 bytes, then one zlib stream
    scan_zlib_at(ctx, data, 18, inner, depth, hints)


def scan_zlib_at(ctx: Context, data: memoryview, offset: int, inner: str, depth: int,
                 hints: frozenset[str]) -> None:
    try:
        out = ctx.inflate(zlib.decompressobj(), data[offset:], inner)
    except zlib.error as exc:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"zlib stream is corrupt ({exc})")
        return
    if out is None:
        return
    if not out.complete:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", "zlib stream is truncated; scanned what it held")
    ctx.scan(out.data, inner, depth + 1, hints)


def scan_lz4(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    try:
        import lz4.frame  # optional: joblib's lz4 compression
    except ImportError:
        ctx.emit("BASTION-ARCHIVE-UNSCANNABLE", Severity.HIGH, inner, "",
                 "LZ4-compressed data (joblib compress='lz4'); install the lz4 package to scan it")
        return
    d = lz4.frame.LZ4FrameDecompressor()
    try:
        out = ctx.inflate(d, data, inner)
    except RuntimeError as exc:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"lz4 stream is corrupt ({exc})")
        return
    if out is not None:
        ctx.scan(out.data, inner, depth + 1, hints)


def _zstd_decompressor() -> object | None:
    """A Zstandard decompressor from the standard library (3.14+) or backports.zstd, if installed."""
    import importlib

    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name).ZstdDecompressor()
        except ImportError:
            continue
    return None


def scan_zstd(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    if _zstd_decompressor() is None:
        ctx.emit("BASTION-ARCHIVE-UNSCANNABLE", Severity.HIGH, inner, "",
                 "Zstandard-compressed data; install backports.zstd (Python < 3.14) to scan it")
        return
    _scan_stream(ctx, data, inner, depth, hints, "zstd", _zstd_decompressor, b"\x28\xb5\x2f\xfd")


def scan_7z(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    import py7zr
    from py7zr.io import BytesIOFactory

    budget = ctx.budget_left()
    try:
        with py7zr.SevenZipFile(MemFile(data), mode="r",  # type: ignore[arg-type]
                                max_extract_size=budget) as archive:
            if archive.needs_password():
                ctx.emit("BASTION-ARCHIVE-UNSCANNABLE", Severity.HIGH, inner, "",
                         "7z archive is encrypted; its members cannot be scanned")
                return
            infos = [i for i in archive.list() if not i.is_directory]
            total = sum(i.uncompressed or 0 for i in infos)
            if total > budget:
                ctx.over_budget(inner)
                return
            factory = BytesIOFactory(budget + 1)
            archive.extract(factory=factory)
    except py7zr.exceptions.DecompressionBombError:
        ctx.over_budget(inner)
        return
    except (py7zr.exceptions.ArchiveError, py7zr.exceptions.PasswordRequired, OSError, ValueError,
            EOFError, KeyError, lzma.LZMAError) as exc:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"7z archive cannot be read ({exc})")
        return
    for name, product in factory.products.items():
        product.seek(0)
        body = product.read()
        ctx.decompressed += len(body)
        ctx.scan(body, ctx.member(inner, name), depth + 1, hints)


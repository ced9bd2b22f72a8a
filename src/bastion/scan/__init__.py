"""Static model-file scanner: never unpickles, never imports what a file names.

    from bastion.scan import scan_path, scan_bytes, Policy
    report = scan_path("model.pt")             # file or folder, formats sniffed from content
    report.is_clean("high")                    # False when anything HIGH or CRITICAL was found
    findings = scan_bytes(open("x.pkl", "rb").read(), name="x.pkl")

Formats: pickle (protocols 0-5, several in a row), PyTorch zip and legacy checkpoints, TorchScript,
joblib (inline arrays, zlib/gzip/bz2/xz/lzma compression), NumPy .npy/.npz, Keras .h5/.keras, ONNX,
safetensors, and zip/tar/gzip/bz2/xz/7z containers nested in each other. A file that cannot be fully
parsed is reported (BASTION-PARSE), never called clean.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePath

from bastion.errors import InputError
from bastion.scan.engine import Context
from bastion.scan.findings import Finding, ScanReport, Severity
from bastion.scan.policy import Limits, Policy
from bastion.scan.rules import RULES, Rule
from bastion.scan.sniff import MODEL_SUFFIXES

__all__ = [
    "RULES",
    "Finding",
    "Limits",
    "Policy",
    "Rule",
    "ScanReport",
    "Severity",
    "iter_files",
    "scan_bytes",
    "scan_path",
    "scan_paths",
]


def scan_bytes(data: bytes | bytearray | memoryview, name: str = "<bytes>",
               policy: Policy | None = None) -> list[Finding]:
    """Findings for one blob of bytes (any supported format, sniffed from content). Pure: no I/O."""
    # the name's extension only decides whether an unrecognised blob deserves a finding, never the format
    return _scan_blob(data, name, policy or Policy.default(), PurePath(name).suffix if name != "<bytes>" else "")




def _scan_blob(data: bytes | bytearray | memoryview, name: str, policy: Policy, suffix: str) -> list[Finding]:
    ctx = Context(name, policy, size=len(data))
    kind = ctx.scan(memoryview(data), "", 0) if len(data) else "empty"
    if kind in ("unknown", "empty") and suffix.lower() in MODEL_SUFFIXES:
        what = "is empty" if kind == "empty" else "matches no model format Bastion knows"
        ctx.emit("BASTION-UNRECOGNISED", Severity.MEDIUM, "", "",
                 f"named like a model file ({suffix}) but {what}; nothing in it was analysed")
    return ctx.findings


#: files up to this size are read into memory: one read() costs less than setting up and tearing down a map
_READ_MAX = 4 << 20


def _read_to_end(fd: int, size: int) -> bytes:
    """The file's bytes up to its end (which may have moved since it was stat'ed): usually two reads."""
    data = os.read(fd, size + 1)
    if not data:
        return data
    chunks = [data]
    while more := os.read(fd, max(size + 1, 1 << 16)):
        chunks.append(more)
    return data if len(chunks) == 1 else b"".join(chunks)


def _scan_file(path: Path, policy: Policy) -> tuple[list[Finding], int]:
    size = os.stat(path).st_size
    if size == 0:
        return _scan_blob(b"", str(path), policy, path.suffix), 0
    # a bare descriptor: the fewest system calls (no buffer, no fstat or seek of a file object)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        if size <= _READ_MAX:
            data = _read_to_end(fd, size)
            return _scan_blob(data, str(path), policy, path.suffix), len(data)
        # mmap: the OS pages in only what the scanner touches (pickle members, headers), not tensor data
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)  # a map keeps its own reference to the file
    view = memoryview(mm)
    try:
        findings = _scan_blob(view, str(path), policy, path.suffix)
    finally:
        # a lingering slice keeps the map alive; it closes when that is collected
        with contextlib.suppress(BufferError):
            view.release()
            mm.close()
    return findings, size


#: folders a folder walk skips unless named explicitly: version-control internals and virtual environments
SKIPPED_DIRS = (".git", ".hg", ".svn", ".venv", "__pycache__")


def _excluded(rel: str, name: str, exclude: Sequence[str]) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(rel, g) or fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(rel, g + "/*")
               for g in exclude)


def iter_files(paths: Iterable[str | os.PathLike[str]], errors: list[str] | None = None,
               exclude: Sequence[str] = (), skip_default: bool = True) -> Iterable[Path]:
    """Every regular file under ``paths`` (folders walked recursively, in sorted order).

    A folder walk skips :data:`SKIPPED_DIRS` and any folder holding ``pyvenv.cfg`` (a virtual
    environment) unless ``skip_default`` is False, and every file or folder whose path relative to the
    walked folder, or whose name, matches a glob in ``exclude``. Paths given explicitly are always
    scanned. Folders that cannot be listed are appended to ``errors`` (when given) instead of vanishing.
    """

    def unreadable(exc: OSError) -> None:
        if errors is not None:
            errors.append(f"{exc.filename}: cannot be listed ({exc.strerror})")

    if isinstance(paths, (str, bytes, os.PathLike)):
        raise InputError("paths", repr(paths), "a list of file or folder paths (scan_path takes one)")
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise InputError("path", repr(p), "a file or folder path (str or pathlib.Path)")
        root = Path(p)
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
                here = Path(dirpath)
                keep = []
                for d in sorted(dirnames):
                    rel = (here / d).relative_to(root).as_posix()
                    if skip_default and (d in SKIPPED_DIRS or (here / d / "pyvenv.cfg").is_file()):
                        continue
                    if not _excluded(rel, d, exclude):
                        keep.append(d)
                dirnames[:] = keep
                for fname in sorted(filenames):
                    full = here / fname
                    if exclude and _excluded(full.relative_to(root).as_posix(), fname, exclude):
                        continue
                    # symlinked files are followed: a loader would read their targets too
                    if full.is_file():
                        yield full
        else:
            yield root


def scan_paths(paths: Iterable[str | os.PathLike[str]], policy: Policy | None = None,
               on_file: Callable[[Path, int], None] | None = None, exclude: Sequence[str] = ()) -> ScanReport:
    """Scan files and folders; unreadable paths go to ``report.errors`` (the CLI exits 2 on those).

    Folder walks skip version-control folders and virtual environments, and whatever ``exclude`` names
    (see :func:`iter_files`)."""
    pol = policy or Policy.default()
    report = ScanReport()
    for path in iter_files(paths, report.errors, exclude):
        try:
            findings, size = _scan_file(path, pol)
        except FileNotFoundError:
            report.errors.append(f"{path}: no such file or directory")
            continue
        except (PermissionError, IsADirectoryError, OSError, ValueError) as exc:
            report.errors.append(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})")
            continue
        report.findings.extend(findings)
        report.files_scanned += 1
        report.bytes_scanned += size
        if on_file is not None:
            on_file(path, size)
    return report


def scan_path(path: str | os.PathLike[str], policy: Policy | None = None) -> ScanReport:
    """Scan one file or folder (recursively)."""
    return scan_paths([path], policy)

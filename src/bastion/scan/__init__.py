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
from collections.abc import Callable, Iterable
from pathlib import Path

from bastion.scan.engine import Context
from bastion.scan.findings import Finding, ScanReport, Severity
from bastion.scan.policy import Limits, Policy
from bastion.scan.rules import RULES, Rule

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
    ctx = Context(name, policy or Policy.default())
    ctx.scan(memoryview(data), "", 0)
    return ctx.findings


#: files up to this size are read into memory: one read() costs less than setting up and tearing down a map
_READ_MAX = 4 << 20


def _scan_file(path: Path, policy: Policy) -> tuple[list[Finding], int]:
    size = os.stat(path).st_size
    if size == 0:
        return [], 0
    with open(path, "rb", buffering=0) as fh:  # unbuffered: one read into the result, no buffer between
        if size <= _READ_MAX:
            data = fh.readall()  # to the end of the file, sized from fstat
            return scan_bytes(data, str(path), policy), len(data)
        # mmap: the OS pages in only what the scanner touches (pickle members, headers), not tensor data
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        try:
            findings = scan_bytes(view, str(path), policy)
        finally:
            # a lingering slice keeps the map alive; it closes when that is collected
            with contextlib.suppress(BufferError):
                view.release()
                mm.close()
    return findings, size


def iter_files(paths: Iterable[str | os.PathLike[str]], errors: list[str] | None = None) -> Iterable[Path]:
    """Every regular file under ``paths`` (folders walked recursively, in sorted order).

    Folders that cannot be listed are appended to ``errors`` (when given) instead of vanishing.
    """

    def unreadable(exc: OSError) -> None:
        if errors is not None:
            errors.append(f"{exc.filename}: cannot be listed ({exc.strerror})")

    for p in paths:
        root = Path(p)
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
                dirnames.sort()
                for fname in sorted(filenames):
                    full = Path(dirpath) / fname
                    # symlinked files are followed: a loader would read their targets too
                    if full.is_file():
                        yield full
        else:
            yield root


def scan_paths(paths: Iterable[str | os.PathLike[str]], policy: Policy | None = None,
               on_file: Callable[[Path, int], None] | None = None) -> ScanReport:
    """Scan files and folders; unreadable paths go to ``report.errors`` (the CLI exits 2 on those)."""
    pol = policy or Policy.default()
    report = ScanReport()
    for path in iter_files(paths, report.errors):
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

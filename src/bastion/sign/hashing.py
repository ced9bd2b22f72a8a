"""Walk a model folder and hash its files in parallel, large files in shards.

Speed comes from two things. Hashing runs in a thread pool: ``hashlib`` releases the GIL while it digests
buffers larger than 2 KiB and so does ``readinto``, so threads hash on every core without processes or
copies between them. Large files are cut into shards (1 GiB by default) hashed independently, so one big
weights file spreads over the cores instead of leaving all but one idle, the way ``sha256sum`` does.

A sharded file is recorded as its shard digests plus a combined digest, ``sha256(d_0 || d_1 || ...)`` over
the raw 32-byte shard digests in order. Files no larger than one shard are recorded with their plain
SHA-256, the same value ``sha256sum`` prints.

Nothing here follows a symlink by accident: links are refused, or, when the caller allows it, recorded
as links (their target inside the folder; model-signing's format hashes the target's content under the
link's name instead). A link that leads out of the folder, or into a path the signature ignores, is
always refused, so a signature never vouches for a name whose bytes it does not cover.

Ignore paths are literal relative paths (a path and everything under it), as model-signing treats them;
glob patterns are a separate, explicit list.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bastion.sign.errors import ManifestError

#: model-signing's default shard size is 1 GB; a power of two keeps shard edges page-aligned
DEFAULT_SHARD_SIZE = 1 << 30
#: one read per 4 MiB: large enough that syscall and GIL hand-over costs vanish, small enough for caches
READ_CHUNK = 4 << 20
#: folders and files never part of a model's identity
DEFAULT_IGNORE: tuple[str, ...] = (".git",)

#: called from worker threads with the number of bytes just hashed
ProgressHook = Callable[[int], None]

_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
)


@dataclass(frozen=True)
class FileEntry:
    """A regular file found in the folder."""

    name: str  # relative POSIX path
    path: Path
    size: int


@dataclass(frozen=True)
class LinkEntry:
    """A symlink whose target stays inside the folder (recorded, never followed)."""

    name: str
    target: str  # the resolved target, relative POSIX path inside the folder


@dataclass(frozen=True)
class Refusal:
    """Something in the folder that cannot be part of a manifest, and why."""

    name: str
    reason: str


@dataclass
class FolderScan:
    files: list[FileEntry] = field(default_factory=list)
    links: list[LinkEntry] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class FileDigest:
    """The digest of one file: plain SHA-256, or the combined digest of its shards."""

    name: str
    size: int
    digest: str  # hex
    shards: tuple[str, ...] = ()  # hex shard digests; empty when the file fits in one shard


def normalize_patterns(patterns: Iterable[str], what: str = "ignore") -> tuple[str, ...]:
    """Ignore paths (or globs) relative to the folder, POSIX style: ``./logs/`` becomes ``logs``."""
    out: list[str] = []
    for raw in patterns:
        pat = str(raw).replace("\\", "/").strip()
        while pat.startswith("./"):
            pat = pat[2:]
        pat = pat.rstrip("/")
        if not pat:
            continue
        if pat.startswith("/") or ".." in pat.split("/"):
            raise ManifestError(
                f"{what}: got {raw!r}, expected a path relative to the model folder (no leading / or ..)"
            )
        if pat not in out:
            out.append(pat)
    return tuple(out)


def is_ignored(name: str, paths: Sequence[str], globs: Sequence[str] = ()) -> bool:
    """True when ``name`` is one of ``paths`` or lies under one (taken literally: ``model[1].sig`` is that
    file, ``*.sig`` is a file named ``*.sig``), or matches one of the explicit ``globs``."""
    for p in paths:
        if name == p or name.startswith(p + "/"):
            return True
    return any(fnmatch.fnmatchcase(name, pat) for pat in globs)


def shown(name: str) -> str:
    """``name`` safe to print on a terminal: control characters, bidi overrides and bytes that are not
    UTF-8 are written as escapes, so a file name cannot move the cursor, recolour or fake a line."""
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or 0x7F <= code < 0xA0 or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
            out.append(ch.encode("unicode_escape").decode("ascii") if code < 0x100 else f"\\u{code:04x}")
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    return "".join(out)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_folder(
    root: Path,
    ignore: Sequence[str],
    allow_symlinks: bool,
    globs: Sequence[str] = (),
    follow_links: bool = False,
) -> FolderScan:
    """List the regular files and (allowed) links under ``root``, sorted by name, without following links.

    Ignored directories are pruned, not entered. Everything that cannot be hashed safely (links when not
    allowed, links leaving the folder or into an ignored path, names that are not UTF-8, sockets, FIFOs,
    devices) is returned in ``refused`` rather than raised, so that a verifier can report it as a finding
    and a signer can refuse to sign. With ``follow_links`` (model-signing's serialization) an allowed link
    to a file is listed as a file under the link's name, read from its target.
    """
    root_real = Path(os.path.realpath(root))
    scan = FolderScan()
    ignored: list[str] = []
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            scan.refused.append(Refusal(prefix.rstrip("/") or ".", f"cannot list folder: {exc.strerror}"))
            continue
        for entry in entries:
            name = prefix + entry.name
            if is_ignored(name, ignore, globs):
                ignored.append(name)
                continue
            if not _utf8(entry.name):
                scan.refused.append(
                    Refusal(name, "file name is not valid UTF-8; rename it to sign the folder")
                )
            elif entry.is_symlink():
                scan_link(Path(entry.path), name, root_real, allow_symlinks, scan)
            elif entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), name + "/"))
            elif entry.is_file(follow_symlinks=False):
                scan.files.append(
                    FileEntry(name, Path(entry.path), entry.stat(follow_symlinks=False).st_size)
                )
            else:
                scan.refused.append(
                    Refusal(name, "not a regular file, folder or symlink (socket, FIFO or device)")
                )
    # a loader reads through a link: one into an ignored path would load bytes no signature covers
    kept: list[LinkEntry] = []
    for link in scan.links:
        if is_ignored(link.target, ignore, globs) or any(n.startswith(link.target + "/") for n in ignored):
            scan.refused.append(
                Refusal(
                    link.name, f"symlink to {link.target!r} leads into an ignored path, which is not signed"
                )
            )
        elif follow_links:
            target = root_real / link.target
            if not target.is_file():
                scan.refused.append(
                    Refusal(
                        link.name,
                        f"symlink to folder {link.target!r}; model-signing format follows file links only",
                    )
                )
            else:
                scan.files.append(FileEntry(link.name, target, target.stat().st_size))
        else:
            kept.append(link)
    scan.links = kept
    scan.files.sort(key=lambda f: f.name)
    scan.links.sort(key=lambda link: link.name)
    scan.refused.sort(key=lambda r: r.name)
    return scan


def scan_link(path: Path, name: str, root_real: Path, allow_symlinks: bool, scan: FolderScan) -> None:
    target_text = os.readlink(path)
    resolved = Path(os.path.realpath(path))
    try:
        inside = resolved.relative_to(root_real).as_posix()
    except ValueError:
        scan.refused.append(Refusal(name, f"symlink to {target_text!r} leads out of the model folder"))
        return
    if not allow_symlinks:
        scan.refused.append(
            Refusal(
                name, f"symlink to {target_text!r}; symlinks are refused unless allowed (--allow-symlinks)"
            )
        )
        return
    if not resolved.exists():
        scan.refused.append(
            Refusal(name, f"symlink to {target_text!r} is broken (its target does not exist)")
        )
        return
    scan.links.append(LinkEntry(name, inside))


def shard_ranges(size: int, shard_size: int) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of the shards of a file of ``size`` bytes (one range, maybe empty)."""
    if size <= shard_size:
        return [(0, size)]
    return [(start, min(start + shard_size, size)) for start in range(0, size, shard_size)]


def hash_range(path: Path, start: int, end: int, progress: ProgressHook | None = None) -> bytes:
    """SHA-256 of bytes ``[start, end)`` of ``path``, read in large chunks into one reused buffer."""
    digest = hashlib.sha256()
    if end <= start:
        return digest.digest()
    try:
        # O_NOFOLLOW: the scan saw a regular file; if it was swapped for a link since, refuse to follow it
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot open for hashing: {exc.strerror}") from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ManifestError(f"{path}: is no longer a regular file")
        if hasattr(os, "posix_fadvise"):
            # ask for aggressive read-ahead on cold caches; harmless when the pages are already cached
            os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_SEQUENTIAL)
        fh.seek(start)
        buf = memoryview(bytearray(min(READ_CHUNK, end - start)))
        pos = start
        while pos < end:
            want = min(len(buf), end - pos)
            got = fh.readinto(buf[:want])
            if not got:
                raise ManifestError(f"{path}: file shrank while it was being hashed (at byte {pos} of {end})")
            digest.update(buf[:got])
            pos += got
            if progress is not None:
                progress(got)
    return digest.digest()


def combine_shards(shard_digests: Sequence[bytes]) -> bytes:
    """The digest recorded for a sharded file: SHA-256 over its raw shard digests in order."""
    return hashlib.sha256(b"".join(shard_digests)).digest()


def default_workers() -> int:
    # threads beyond the core count keep the disk queue full on cold caches; they cost little when warm
    return min(32, (os.cpu_count() or 1) + 4)


def hash_files(
    files: Sequence[FileEntry],
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    progress: ProgressHook | None = None,
) -> list[FileDigest]:
    """Hash ``files`` in a thread pool, each file larger than ``shard_size`` as several shards.

    Work is submitted largest first so that a big shard does not start last and leave the other threads
    idle at the end. The result is in the order of ``files``.
    """
    if shard_size < 1:
        raise ManifestError(f"shard_size: got {shard_size}, expected a positive number of bytes")
    n_workers = default_workers() if workers is None else workers
    if n_workers < 1:
        raise ManifestError(f"workers: got {n_workers}, expected 1 or more threads")
    ranges = [shard_ranges(f.size, shard_size) for f in files]
    tasks = [(i, k, start, end) for i, rs in enumerate(ranges) for k, (start, end) in enumerate(rs)]
    tasks.sort(key=lambda t: t[3] - t[2], reverse=True)
    shard_digests: list[list[bytes]] = [[b""] * len(rs) for rs in ranges]
    if n_workers == 1 or len(tasks) <= 1:
        for i, k, start, end in tasks:
            shard_digests[i][k] = hash_range(files[i].path, start, end, progress)
    else:
        pool = ThreadPoolExecutor(max_workers=min(n_workers, len(tasks)), thread_name_prefix="bastion-hash")
        try:
            futures = {
                pool.submit(hash_range, files[i].path, start, end, progress): (i, k)
                for i, k, start, end in tasks
            }
            for future, (i, k) in futures.items():
                shard_digests[i][k] = future.result()
        except BaseException:
            # one unreadable file (or Ctrl-C) ends the run now, not after every queued gigabyte is hashed
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    out: list[FileDigest] = []
    for entry, digests in zip(files, shard_digests, strict=True):
        if len(digests) == 1:
            out.append(FileDigest(entry.name, entry.size, digests[0].hex()))
        else:
            out.append(
                FileDigest(
                    entry.name, entry.size, combine_shards(digests).hex(), tuple(d.hex() for d in digests)
                )
            )
    return out

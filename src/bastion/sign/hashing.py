"""Walk a model folder and hash its files in parallel, large files in shards.

Speed comes from two things. Hashing runs in a thread pool: ``hashlib`` releases the GIL while it digests
buffers larger than 2 KiB and so does ``readinto``, so threads hash on every core without processes or
copies between them. Large files are cut into shards (1 GiB by default) hashed independently, so one big
weights file spreads over the cores instead of leaving all but one idle, the way ``sha256sum`` does.

A sharded file is recorded as its shard digests plus a combined digest, ``sha256(d_0 || d_1 || ...)`` over
the raw 32-byte shard digests in order. Files no larger than one shard are recorded with their plain
SHA-256, the same value ``sha256sum`` prints.

Nothing here follows a symlink: links are refused, or, when the caller allows it, recorded as links
(their target inside the folder), never read through. A link that leads out of the folder is always
refused, so a signature can never vouch for bytes outside the folder it names.
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


def normalize_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """Ignore patterns as relative POSIX globs: ``./logs/`` becomes ``logs``; absolute ones are refused."""
    out: list[str] = []
    for raw in patterns:
        pat = raw.replace("\\", "/").strip()
        while pat.startswith("./"):
            pat = pat[2:]
        pat = pat.rstrip("/")
        if not pat:
            continue
        if pat.startswith("/") or ".." in pat.split("/"):
            raise ManifestError(
                f"ignore: got {raw!r}, expected a path or glob relative to the model folder (no leading / or ..)"
            )
        if pat not in out:
            out.append(pat)
    return tuple(out)


def is_ignored(name: str, patterns: Sequence[str]) -> bool:
    """True when ``name`` (relative POSIX path) matches a pattern; fnmatch's ``*`` also crosses ``/``."""
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def scan_folder(root: Path, ignore: Sequence[str], allow_symlinks: bool) -> FolderScan:
    """List the regular files and (allowed) links under ``root``, sorted by name, without following links.

    Ignored directories are pruned, not entered. Everything that cannot be hashed safely (links when not
    allowed, links leaving the folder, sockets, FIFOs, devices) is returned in ``refused`` rather than
    raised, so that a verifier can report it as a finding and a signer can refuse to sign.
    """
    root_real = Path(os.path.realpath(root))
    scan = FolderScan()
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
            if is_ignored(name, ignore):
                continue
            if entry.is_symlink():
                _scan_link(Path(entry.path), name, root_real, allow_symlinks, scan)
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
    scan.files.sort(key=lambda f: f.name)
    scan.links.sort(key=lambda link: link.name)
    scan.refused.sort(key=lambda r: r.name)
    return scan


def _scan_link(path: Path, name: str, root_real: Path, allow_symlinks: bool, scan: FolderScan) -> None:
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

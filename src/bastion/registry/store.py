"""Content-addressed file store: every model file is kept once, under its SHA-256, and re-checked on read."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from bastion.errors import BastionError

CHUNK = 1 << 20


class StoreIntegrityError(BastionError):
    """A stored object no longer matches its digest: the store was altered on disk."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class BlobStore:
    """Objects live at ``root/objects/ab/cdef...``; writes are atomic (temp file, fsync, rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise StoreIntegrityError(f"store: {digest!r} is not a SHA-256 digest")
        return self.root / "objects" / digest[:2] / digest[2:]

    def put(self, source: Path) -> str:
        """Copy ``source`` in (hashing while copying, so what is stored is what was hashed)."""
        objects = self.root / "objects"
        objects.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=objects, prefix=".incoming.")
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            dest = self._path(digest)
            if dest.exists():
                Path(tmp).unlink()
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, dest)
            return digest
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def has(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def open_verified(self, digest: str) -> Path:
        """The object's path, after checking its bytes still hash to ``digest``."""
        path = self._path(digest)
        if not path.is_file():
            raise StoreIntegrityError(f"store: object {digest[:12]}... is missing from {self.root}")
        if sha256_file(path) != digest:
            raise StoreIntegrityError(f"store: object {digest[:12]}... in {self.root} was altered on disk")
        return path

    def materialise(self, files: dict[str, str], dest: Path) -> None:
        """Write ``{relative path: digest}`` into the new folder ``dest``, every object verified first."""
        checked = {rel: self.open_verified(d) for rel, d in files.items()}
        dest.mkdir(parents=True, exist_ok=False)
        for rel, path in checked.items():
            target = dest / rel
            if not target.resolve().is_relative_to(dest.resolve()):
                raise StoreIntegrityError(f"store: path {rel!r} leaves the destination folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)

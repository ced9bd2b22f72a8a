"""Output safety for every command that writes: never over an input, never over a file without --force.

Checked before any long computation, so a run that cannot save its result fails in a second, not after
an hour of training; written through a temporary file in the same folder and ``os.replace``, so an
interrupted run leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from bastion.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from bastion.errors import InputError


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: equal resolved paths, or one inode (hard or symbolic links)."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop resolves to nothing we could overwrite
        return False
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(folder: Path, item: Path) -> bool:
    try:
        return item.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def _probe_writable(folder: Path, what: str, path: Path) -> None:
    """Create and remove a file in ``folder``: the only check that also sees read-only mounts and ACLs."""
    probe = folder / f".bastion-write-test-{secrets.token_hex(4)}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise InputError(what, str(path), f"a path in a folder you can write to ({exc.strerror or exc})") from None


def check_output(path: str | Path, *, inputs: Iterable[str | Path | None] = (), force: bool = False,
                 what: str = "--out") -> Path:
    """Check that ``path`` may be written as a file, creating its folder; return it.

    Refuses (``InputError`` naming ``what``): a path that is one of ``inputs`` (same resolved path or same
    inode, so links are seen through) or lies inside an input folder, an existing folder, an existing
    file unless ``force``, and a folder that cannot be created or written to. Call it before the work.
    """
    out = Path(path).expanduser()
    for given in inputs:
        if given is None:
            continue
        src = Path(given).expanduser()
        if _same_file(out, src):
            raise InputError(what, str(out), f"a new file, not the input {src} (it would be overwritten)")
        if src.is_dir() and _inside(src, out):
            raise InputError(what, str(out), f"a path outside the input folder {src} (writing there changes "
                                             "the input)")
    if out.is_dir():
        raise InputError(what, f"{out}, a folder", "a file path")
    if (out.exists() or out.is_symlink()) and not force:
        raise InputError(what, f"{out}, which exists", "a new path, or --force to overwrite it")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(what, str(out), f"a path in a folder ({parent} is a file)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(what, str(out), f"a path whose folder can be created ({exc.strerror or exc})") from None
    _probe_writable(parent, what, out)
    return out


def check_outputs(folder: str | Path, names: Iterable[str], *, inputs: Iterable[str | Path | None] = (),
                  force: bool = False, what: str = "--out") -> dict[str, Path]:
    """:func:`check_output` for each of ``names`` inside ``folder`` (created when missing)."""
    d = Path(folder).expanduser()
    if d.exists() and not d.is_dir():
        raise InputError(what, f"{d}, an existing file", "a folder (existing or to be created)")
    ins = list(inputs)
    return {name: check_output(d / name, inputs=ins, force=force, what=what) for name in names}


__all__ = ["atomic_path", "check_output", "check_outputs", "write_bytes_atomic", "write_text_atomic"]

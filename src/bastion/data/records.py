"""A data set as records: inputs, labels, a stable id and the bytes that identify each record.

Formats: ``.npz`` (arrays ``x`` and optional ``y``), ``.npy`` (inputs only), ``.csv`` and ``.parquet``
(a table; the label column named by ``label_column``), and image folders (one sub-folder per class).
A record's id is its row number for arrays and tables, its relative path for image folders; its content
is the exact bytes it was read from (the file for an image, the row's values and label otherwise), so a
content hash changes if and only if the record does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.errors import DataLoadError, InputError

FORMATS = ("npz", "npy", "csv", "parquet", "folder")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Records:
    """``x`` (N, ...) float inputs, ``y`` (N,) int labels or None, ``ids`` and per-record ``content`` bytes."""

    path: Path
    format: str
    x: np.ndarray
    y: np.ndarray | None
    ids: list[str]
    content: list[bytes] = field(repr=False)
    columns: list[str] | None = None  # tables: feature column names (label column excluded)
    label_column: str | None = None
    table: Any = field(default=None, repr=False)  # tables: the pandas DataFrame as read
    shards: dict[str, list[int]] = field(default_factory=dict, repr=False)  # shard name -> record rows

    def __len__(self) -> int:
        return len(self.ids)

    def hashes(self) -> list[str]:
        return [hashlib.sha256(c).hexdigest() for c in self.content]


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise DataLoadError(f"{path}: no such file or folder")
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        return "npz"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PAR1"):
        return "parquet"
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return "csv"
    raise DataLoadError(f"{path}: unrecognised data format; expected .npz (x, y), .npy, .csv, .parquet or an "
                        "image folder (one sub-folder per class)")


def _row_bytes(values: np.ndarray, label: Any) -> bytes:
    return np.ascontiguousarray(values, dtype=np.float64).tobytes() + repr(label).encode()


def load_records(path: str | Path, *, label_column: str | None = "label", decode: bool = True) -> Records:
    """Read ``path`` into :class:`Records`; any problem is a :class:`DataLoadError` naming the file.

    ``decode=False`` (image folders) reads only the files' bytes, for hashing: a corrupted image is still
    a record whose digest changed, not an unreadable data set.
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "folder":
        return _load_folder(p, decode)
    if fmt in ("csv", "parquet"):
        return _load_table(p, fmt, label_column)
    from bastion.datasets.files import load_data

    xt, yt = load_data(p, label_column=label_column)
    x = xt.numpy()
    y = None if yt is None else yt.numpy()
    content = [_row_bytes(x[i], None if y is None else int(y[i])) for i in range(x.shape[0])]
    return Records(p, fmt, x, y, [str(i) for i in range(x.shape[0])], content, shards={p.name: list(range(len(x)))})


def _load_table(p: Path, fmt: str, label_column: str | None) -> Records:
    import pandas as pd

    try:
        df = pd.read_csv(p) if fmt == "csv" else pd.read_parquet(p)
    except Exception as exc:  # pandas and pyarrow raise many types for a malformed file
        raise DataLoadError(f"{p}: not a readable {fmt.upper()} table ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if df.shape[0] == 0:
        raise DataLoadError(f"{p}: contains no rows")
    if label_column is not None and label_column not in df.columns:
        raise DataLoadError(f"{p}: no label column '{label_column}'; columns are {list(map(str, df.columns))[:20]} "
                            "(pass --label-column NAME, or --label-column '' for none)")
    feats = [str(c) for c in df.columns if c != label_column]
    num = df[feats].apply(pd.to_numeric, errors="coerce")
    x = num.to_numpy(dtype=np.float64)
    y = None
    if label_column is not None:
        lab = pd.to_numeric(df[label_column], errors="coerce")
        if lab.isna().any() or not np.all(lab == np.round(lab)):
            raise DataLoadError(f"{p}: label column '{label_column}' must hold integer class indices")
        y = lab.to_numpy().astype(np.int64)
    content = [_row_bytes(x[i], None if y is None else int(y[i])) for i in range(x.shape[0])]
    return Records(p, fmt, x, y, [str(i) for i in range(x.shape[0])], content, feats, label_column, df,
                   shards={p.name: list(range(len(x)))})


def _load_folder(p: Path, decode: bool = True) -> Records:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataLoadError(f"{p}: expected one sub-folder per class containing images")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    ids: list[str] = []
    content: list[bytes] = []
    shards: dict[str, list[int]] = {}
    for ci, cname in enumerate(classes):
        for f in sorted((p / cname).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
                continue
            raw = f.read_bytes()
            shards.setdefault(cname, []).append(len(ids))
            ys.append(ci)
            ids.append(f"{cname}/{f.name}")
            content.append(raw)
            if not decode:
                continue
            try:
                with Image.open(f) as im:
                    mode = "L" if im.mode in ("L", "1") else "RGB"
                    arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataLoadError(f"{f}: not a readable image ({exc})") from None
            xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    if not ids:
        raise DataLoadError(f"{p}: no images found in the class folders {classes}")
    if not decode:
        return Records(p, "folder", np.zeros((len(ids), 0), dtype=np.float32), np.asarray(ys, dtype=np.int64), ids,
                       content, shards=shards)
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataLoadError(f"{p}: images have different sizes {sorted(shapes)[:3]}; expected one size")
    return Records(p, "folder", np.stack(xs), np.asarray(ys, dtype=np.int64), ids, content, shards=shards)


@contextmanager
def atomic_output(dest: Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; move it into place only if the block finishes.

    A crash or an error leaves ``dest`` as it was (absent or the old version): never half a data set.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    target = tmp / dest.name
    try:
        yield target
        if dest.is_dir() and is_dir:
            shutil.rmtree(dest)
        os.replace(target, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def same_place(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def write_subset(records: Records, keep: np.ndarray, dest: Path, *, force: bool = False) -> None:
    """Write the rows ``keep`` (sorted indices) of ``records`` to ``dest`` in the input's format, atomically."""
    src = records.path
    if same_place(src, dest) or (dest.resolve().is_relative_to(src.resolve()) and src.is_dir()):
        raise InputError("--out", str(dest), f"a path outside the input {src} (the input is never modified)")
    if dest.exists() and not force:
        raise InputError("--out", f"{dest}, which exists", "a new path, or --force to replace it")
    fmt = records.format
    with atomic_output(dest, is_dir=fmt == "folder") as tmp:
        if fmt == "folder":
            for i in keep:
                rel = records.ids[int(i)]
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / rel, tmp / rel)
            for cname in records.shards:  # keep empty classes, so class indices stay the same
                (tmp / cname).mkdir(parents=True, exist_ok=True)
        elif fmt in ("csv", "parquet"):
            sub = records.table.iloc[np.asarray(keep, dtype=np.int64)]
            with tmp.open("wb") as fh:
                if fmt == "csv":
                    sub.to_csv(fh, index=False)
                else:
                    sub.to_parquet(fh, index=False)
        else:
            # Re-read the arrays as stored, so dtypes and any other per-record arrays survive unchanged.
            idx = np.asarray(keep, dtype=np.int64)
            with tmp.open("wb") as fh:
                if fmt == "npz":
                    with np.load(src, allow_pickle=False) as z:
                        n = len(records)
                        arrays = {k: (z[k][idx] if z[k].ndim and z[k].shape[0] == n else z[k]) for k in z.files}
                    np.savez(fh, **arrays)
                else:
                    np.save(fh, np.load(src, allow_pickle=False)[idx])

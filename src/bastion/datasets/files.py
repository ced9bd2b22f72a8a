"""Read users' data files into (inputs, labels) tensors.

Formats: ``.npz`` with arrays ``x`` and ``y``; ``.npy`` inputs with labels from ``labels=`` (another .npy);
``.csv`` with a header and the label column named by ``label_column``; an image folder with one
sub-folder per class (sorted names become classes 0..C-1). Pickled object arrays are refused.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bastion.errors import DataLoadError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@contextmanager
def _numpy_errors(path: Path, what: str) -> Iterator[None]:
    """NumPy's read errors as DataLoadError; a pickled (object) array is named as the risk it is."""
    try:
        yield
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataLoadError(f"{path}: {what} holds pickled object arrays, which could run code; "
                                "expected plain numeric arrays") from None
        raise DataLoadError(f"{path}: {what} is not readable ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataLoadError(f"{path}: {what} is not readable ({exc})") from None


def _np_load(path: Path) -> np.ndarray | np.lib.npyio.NpzFile:
    with _numpy_errors(path, "the NumPy file"):
        return np.load(path, allow_pickle=False)


def _numeric(arr: np.ndarray, what: str, path: Path) -> np.ndarray:
    if arr.dtype.kind not in "fiub":
        raise DataLoadError(f"{path}: array '{what}' has dtype {arr.dtype}, expected numbers")
    return arr


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    data = _np_load(path)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataLoadError(f"{path}: expected an .npz archive")
    with data:
        keys = set(data.files)
        if "x" not in keys:
            raise DataLoadError(f"{path}: has arrays {sorted(keys)}, expected 'x' (inputs) and 'y' (labels)")
        x = _numeric(_member(data, "x", path), "x", path)
        y = _numeric(_member(data, "y", path), "y", path) if "y" in keys else None
    return x, y


def _member(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    # Members of an .npz are read lazily: a pickled (object) array is only refused here.
    with _numpy_errors(path, f"array '{key}'"):
        arr: np.ndarray = data[key]
    return arr


def _load_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataLoadError(f"{path}: not a readable CSV file ({exc})") from exc
    if len(rows) < 2:
        raise DataLoadError(f"{path}: expected a header row and at least one data row")
    header, body = rows[0], [r for r in rows[1:] if r]
    if label_column is not None and label_column not in header:
        raise DataLoadError(f"{path}: no column '{label_column}'; columns are {header}")
    li = header.index(label_column) if label_column is not None else None
    try:
        table = np.array([[float(v) for v in r] for r in body], dtype=np.float64)
    except ValueError as exc:
        raise DataLoadError(f"{path}: non-numeric value ({exc}); every column must be numeric") from exc
    if table.ndim != 2 or table.shape[1] != len(header):
        raise DataLoadError(f"{path}: rows have differing lengths; expected {len(header)} columns each")
    if li is None:
        return table, None
    y = table[:, li]
    x = np.delete(table, li, axis=1)
    return x, y


def _load_image_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DataLoadError(f"{path}: expected one sub-folder per class containing images")
    xs, ys = [], []
    for ci, cname in enumerate(classes):
        for f in sorted((path / cname).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataLoadError(f"{f}: not a readable image ({exc})") from exc
            xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            ys.append(ci)
    if not xs:
        raise DataLoadError(f"{path}: no images found in the class folders {classes}")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataLoadError(f"{path}: images have different sizes {sorted(shapes)[:3]}; resize them to one size")
    return np.stack(xs), np.asarray(ys)


def load_data(path: str | Path, *, label_column: str | None = "label", labels: str | Path | None = None,
              input_shape: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor | None]:
    """Load inputs and labels from a file or image folder; returns float32 inputs and int64 labels."""
    p = Path(path)
    if not p.exists():
        raise DataLoadError(f"{p}: no such file or folder")
    y: np.ndarray | None
    if p.is_dir():
        x, y = _load_image_folder(p)
    else:
        with p.open("rb") as fh:
            head = fh.read(8)
        if head.startswith(b"PK"):
            x, y = _load_npz(p)
        elif head.startswith(b"\x93NUMPY"):
            arr = _np_load(p)
            assert isinstance(arr, np.ndarray)
            x, y = _numeric(arr, "x", p), None
        elif p.suffix.lower() in (".csv", ".txt", ".tsv"):
            x, y = _load_csv(p, label_column)
        else:
            raise DataLoadError(f"{p}: unrecognised data format; expected .npz (x, y), .npy, .csv or an image folder")
    if labels is not None:
        lab = _np_load(Path(labels))
        if not isinstance(lab, np.ndarray):
            raise DataLoadError(f"{labels}: expected a .npy array of labels")
        y = _numeric(lab, "labels", Path(labels))
    if x.shape[0] == 0:
        raise DataLoadError(f"{p}: contains no examples")
    if y is not None:
        y = y.reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise DataLoadError(f"{p}: {x.shape[0]} inputs but {y.shape[0]} labels")
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise DataLoadError(f"{p}: labels must be integer class indices")
    if input_shape is not None:
        try:
            x = x.reshape((x.shape[0], *input_shape))
        except ValueError as exc:
            raise DataLoadError(f"{p}: inputs of shape {x.shape[1:]} cannot be reshaped to {input_shape}") from exc
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.int64)) if y is not None else None
    return xt, yt

"""HDF5 (Keras ``.h5``): read the ``model_config`` attribute with h5py and check its layers."""

from __future__ import annotations

import json

from bastion.scan.engine import Context
from bastion.scan.findings import Severity
from bastion.scan.formats.keras import scan_keras_config


def scan_hdf5(ctx: Context, data: memoryview, inner: str, depth: int, hints: frozenset[str]) -> None:
    import h5py

    from bastion.scan.archives import MemFile

    try:
        with h5py.File(MemFile(data), "r") as f:
            # attributes only: h5py reads them as strings or bytes, nothing is deserialised as code
            attrs = {k: f.attrs[k] for k in ("model_config", "training_config") if k in f.attrs}
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        ctx.emit("BASTION-PARSE", Severity.HIGH, inner, "", f"HDF5 file cannot be read ({exc})")
        return
    for key, raw in attrs.items():
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            config = json.loads(text)
        except ValueError as exc:
            ctx.emit("BASTION-PARSE", Severity.HIGH, inner, f"attribute {key}", f"not valid JSON ({exc})")
            continue
        scan_keras_config(ctx, config, inner, f"attribute {key} ", root_is_layer=key == "model_config")

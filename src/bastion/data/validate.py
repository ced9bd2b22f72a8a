"""Schema validation: one YAML file for tables (through pandera) and tensors (the same keys, checked here).

    label: label                  # tables: the label column
    labels: [0, 1]                # allowed labels
    class_balance: {min: 0.05, max: 0.6}   # bounds on each class's share
    shape: [1, 8, 8]              # per-record input shape (tensors and images)
    range: [0, 1]                 # every input value
    missing: false                # NaN allowed?
    columns:                      # tables: per-column dtype, range and nulls
      mean radius: {dtype: float, min: 0, max: 1, nullable: false}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bastion.data.records import Records
from bastion.errors import DataLoadError

KNOWN_KEYS = {"label", "labels", "class_balance", "shape", "range", "missing", "columns", "dtype"}
#: violations listed per check before the rest are only counted
MAX_LISTED = 1000


@dataclass
class Violation:
    record: str | None  # None: the data set as a whole
    check: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"record": self.record, "check": self.check, "message": self.message}


def load_schema(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    try:
        obj = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataLoadError(f"{p}: not a readable YAML schema ({exc})") from None
    if not isinstance(obj, dict):
        raise DataLoadError(f"{p}: expected a mapping of schema keys ({', '.join(sorted(KNOWN_KEYS))})")
    unknown = set(obj) - KNOWN_KEYS
    if unknown:
        raise DataLoadError(f"{p}: unknown schema keys {sorted(unknown)}; expected some of {sorted(KNOWN_KEYS)}")
    return obj


def _table_violations(records: Records, schema: dict[str, Any]) -> list[Violation]:
    import pandera.pandas as pa
    from pandera.errors import SchemaErrors

    dtypes = {"float": float, "int": int, "str": str, "bool": bool}
    cols = {}
    for name, spec in (schema.get("columns") or {}).items():
        spec = spec or {}
        checks = []
        if "min" in spec:
            checks.append(pa.Check.ge(spec["min"]))
        if "max" in spec:
            checks.append(pa.Check.le(spec["max"]))
        if "allowed" in spec:
            checks.append(pa.Check.isin(spec["allowed"]))
        dtype = dtypes.get(str(spec.get("dtype", "")))
        cols[str(name)] = pa.Column(dtype, checks=checks, nullable=bool(spec.get("nullable", False)),
                                    coerce=dtype is not None, required=True)
    if records.label_column is not None and schema.get("labels") is not None:
        cols.setdefault(records.label_column, pa.Column(None, checks=[pa.Check.isin(list(schema["labels"]))]))
    try:
        pa.DataFrameSchema(cols).validate(records.table, lazy=True)
    except SchemaErrors as exc:
        out = []
        for row in exc.failure_cases.itertuples(index=False):
            rec = None if row.index is None or (isinstance(row.index, float) and np.isnan(row.index)) else str(int(row.index))
            out.append(Violation(rec, f"column {row.column}: {row.check}",
                                 f"value {row.failure_case!r} fails {row.check}"))
        return out
    return []


def validate(records: Records, schema: dict[str, Any]) -> list[Violation]:
    """Every violation of ``schema`` by ``records``, per record where a record is to blame."""
    out: list[Violation] = []
    if records.table is not None and (schema.get("columns") or schema.get("labels") is not None):
        out += _table_violations(records, schema)
    x = records.x
    if "shape" in schema and tuple(schema["shape"]) != tuple(x.shape[1:]):
        out.append(Violation(None, "shape", f"records have shape {list(x.shape[1:])}, expected {list(schema['shape'])}"))
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    nan_rows = np.isnan(flat).any(axis=1)
    if not schema.get("missing", records.table is not None and "columns" in schema):
        out += [Violation(records.ids[i], "missing", "has missing (NaN) values") for i in np.flatnonzero(nan_rows)]
    if "range" in schema:
        lo, hi = (float(v) for v in schema["range"])
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(((flat < lo) | (flat > hi)).any(axis=1))
        out += [Violation(records.ids[i], "range",
                          f"values from {np.nanmin(flat[i]):.4g} to {np.nanmax(flat[i]):.4g}, expected within [{lo}, {hi}]")
                for i in bad]
    y = records.y
    if (schema.get("labels") is not None or schema.get("class_balance")) and y is None:
        out.append(Violation(None, "labels", "the schema constrains labels but the data has none"))
    elif y is not None:
        if schema.get("labels") is not None and records.table is None:
            allowed = {int(v) for v in schema["labels"]}
            out += [Violation(records.ids[i], "labels", f"label {int(y[i])} not in {sorted(allowed)}")
                    for i in np.flatnonzero(~np.isin(y, list(allowed)))]
        bal = schema.get("class_balance") or {}
        if bal:
            classes, counts = np.unique(y, return_counts=True)
            for c, n in zip(classes, counts, strict=True):
                share = n / y.shape[0]
                if "min" in bal and share < float(bal["min"]):
                    out.append(Violation(None, "class_balance", f"class {c} is {share:.1%} of the records, below {bal['min']}"))
                if "max" in bal and share > float(bal["max"]):
                    out.append(Violation(None, "class_balance", f"class {c} is {share:.1%} of the records, above {bal['max']}"))
    return out

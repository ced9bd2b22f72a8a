"""Training-data hygiene and provenance: validate, audit, clean, and a signed manifest of every record.

    from bastion.data import load_records, audit, clean, manifest
    rec = load_records("train.npz")
    res = audit(rec, model=torch_model)           # duplicates, leakage, outliers, label issues, poison
    plan = clean.plan(rec, res); clean.write(rec, plan, Path("clean.npz"), Path("removed.jsonl"))
    m = manifest.build(rec, source="vendor-A")     # per-record and per-shard SHA-256
"""

from bastion.data import clean, manifest
from bastion.data.audit import CHECKS, AuditResult, Finding, audit
from bastion.data.records import FORMATS, Records, load_records
from bastion.data.validate import Violation, load_schema, validate

__all__ = ["CHECKS", "FORMATS", "AuditResult", "Finding", "Records", "Violation", "audit", "clean", "load_records",
           "load_schema", "manifest", "validate"]

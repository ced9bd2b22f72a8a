"""What the scanner reports: severities, findings (plain data) and the report of one scan."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from bastion.errors import InputError


class Severity(enum.IntEnum):
    """How bad a finding is; ordered so thresholds compare with ``>=``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | int | Severity, argument: str = "severity") -> Severity:
        """``"high"``, ``"HIGH"``, ``3`` or ``Severity.HIGH`` -> ``Severity.HIGH``."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        elif isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        names = ", ".join(s.name.lower() for s in cls)
        raise InputError(argument, repr(value), f"one of {names}")


@dataclass(frozen=True)
class Finding:
    """One problem found in one file.

    ``path`` is the file on disk (or the name given to :func:`scan_bytes`); ``location`` is the place
    inside it, e.g. ``archive/data.pkl@opcode 37 (offset 0x1a2)`` (members of containers joined by ``!``).
    """

    rule_id: str
    severity: Severity
    path: str
    location: str
    message: str
    global_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "severity": self.severity.name.lower(),
            "path": self.path,
            "location": self.location,
            "message": self.message,
            "global_name": self.global_name,
        }


@dataclass
class ScanReport:
    """Findings of a scan over one or more files, plus what could not be read at all."""

    findings: list[Finding] = field(default_factory=list)
    files_scanned: int = 0
    bytes_scanned: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def max_severity(self) -> Severity | None:
        """The worst severity found, or None when there are no findings."""
        return max((f.severity for f in self.findings), default=None)

    def is_clean(self, threshold: Severity | str = Severity.HIGH) -> bool:
        """True when nothing at or above ``threshold`` was found and every path could be read."""
        limit = Severity.parse(threshold)
        return not self.errors and all(f.severity < limit for f in self.findings)

    def merge(self, other: ScanReport) -> None:
        self.findings.extend(other.findings)
        self.files_scanned += other.files_scanned
        self.bytes_scanned += other.bytes_scanned
        self.errors.extend(other.errors)

    def to_dict(self) -> dict[str, Any]:
        worst = self.max_severity
        counts = {s.name.lower(): 0 for s in Severity}
        for f in self.findings:
            counts[f.severity.name.lower()] += 1
        return {
            "files_scanned": self.files_scanned,
            "bytes_scanned": self.bytes_scanned,
            "max_severity": worst.name.lower() if worst is not None else None,
            "counts": counts,
            "findings": [f.to_dict() for f in self.findings],
            "errors": list(self.errors),
        }

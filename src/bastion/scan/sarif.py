"""SARIF 2.1.0 output for code-scanning dashboards (GitHub, GitLab, Azure DevOps)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bastion.scan.findings import ScanReport, Severity
from bastion.scan.rules import RULES

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"

#: SARIF levels, and GitHub's numeric security-severity (its scale: >= 9 critical, >= 7 high, >= 4 medium)
_LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
          Severity.LOW: "note", Severity.INFO: "note"}
_SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5",
                      Severity.LOW: "3.0", Severity.INFO: "0.0"}


def _uri(path: str) -> str:
    """A path relative to the working directory when below it (what dashboards match against)."""
    p = Path(path)
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return p.as_posix() if not p.is_absolute() else p.resolve().as_uri()


def to_sarif(report: ScanReport, tool_version: str = "0.1.0") -> dict[str, Any]:
    """The report as one SARIF run: every rule described once, one result per finding."""
    rule_ids = sorted(RULES)
    index = {rid: i for i, rid in enumerate(rule_ids)}
    rules = []
    for rid in rule_ids:
        rule = RULES[rid]
        rules.append({
            "id": rid,
            "name": "".join(part.capitalize() for part in rid.split("-")[1:]),
            "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": rule.summary},
            "defaultConfiguration": {"level": _LEVEL[rule.severity]},
            "properties": {"security-severity": _SECURITY_SEVERITY[rule.severity],
                           "tags": ["security", "supply-chain", "ml-model"]},
        })
    results = []
    for f in report.findings:
        result: dict[str, Any] = {
            "ruleId": f.rule_id,
            "level": _LEVEL[f.severity],
            "message": {"text": f.message},
            "locations": [{
                "physicalLocation": {"artifactLocation": {"uri": _uri(f.path)}},
                "logicalLocations": [{"fullyQualifiedName": f.location or os.path.basename(f.path),
                                      "kind": "member"}],
            }],
            "properties": {"severity": f.severity.name.lower(),
                           "security-severity": _SECURITY_SEVERITY[f.severity]},
        }
        if f.rule_id in index:
            result["ruleIndex"] = index[f.rule_id]
        if f.global_name:
            result["properties"]["global"] = f.global_name
        results.append(result)
    invocation: dict[str, Any] = {"executionSuccessful": not report.errors}
    if report.errors:
        invocation["toolExecutionNotifications"] = [
            {"level": "error", "message": {"text": e}} for e in report.errors]
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": "bastion-scan", "version": tool_version, "rules": rules}},
            "invocations": [invocation],
            "results": results,
        }],
    }

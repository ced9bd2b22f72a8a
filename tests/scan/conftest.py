"""Tiny builders shared by the scanner's tests."""

from __future__ import annotations

import os
import struct

from bastion.scan import Finding, Severity


class RunsSystem:
    """Pickling this writes a REDUCE of os.system; dumping never runs it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def rules(findings: list[Finding], at_least: Severity = Severity.INFO) -> set[str]:
    return {f.rule_id for f in findings if f.severity >= at_least}


def worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), default=None)


def proto4_stack_global(module: str, name: str, arg: str) -> bytes:
    """A protocol-4 pickle calling module.name(arg), names memoised then fetched back with BINGET."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return b"\x8c" + struct.pack("<B", len(raw)) + raw

    return (b"\x80\x04" + s(module) + b"\x94" + s(name) + b"\x94"
            + b"h\x00h\x01\x93" + s(arg) + b"\x85R.")

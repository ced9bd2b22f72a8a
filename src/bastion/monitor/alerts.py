"""Incidents and their webhook bodies: a generic signed JSON incident, and Cortex XSOAR's incident shape.

XSOAR's generic webhook / "create incident" integrations take ``name``, ``type``, ``severity`` (0 unknown,
0.5 info, 1 low, 2 medium, 3 high, 4 critical), ``occurred`` (RFC 3339), ``details``, ``labels`` (a list of
``{"type", "value"}``) and ``rawJSON`` (the original event as a string); the body below uses exactly those.
The generic body is signed with HMAC-SHA256 over the exact bytes sent, in the ``X-Bastion-Signature``
header (``sha256=<hex>``), so a receiver can check who sent it and that nothing changed on the way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from bastion.errors import InputError

SEVERITIES = {"info": 0.5, "low": 1, "medium": 2, "high": 3, "critical": 4}
SIGNATURE_HEADER = "X-Bastion-Signature"


@dataclass(frozen=True)
class Incident:
    """Something a monitor or detector saw that a security team should know about."""

    title: str
    severity: str
    source: str  # the monitor or detector that fired
    model: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    atlas: tuple[str, ...] = ()  # MITRE ATLAS technique ids, e.g. AML.T0043
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise InputError("severity", self.severity, f"one of {sorted(SEVERITIES)}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["atlas"] = list(self.atlas)
        return out


def generic_body(incident: Incident) -> bytes:
    return json.dumps({"type": "bastion.incident", "incident": incident.to_dict()}, sort_keys=True,
                      separators=(",", ":"), default=str).encode()


def xsoar_body(incident: Incident) -> bytes:
    labels = [{"type": "source", "value": incident.source}, {"type": "incident_id", "value": incident.id}]
    labels += [{"type": "model", "value": incident.model}] if incident.model else []
    labels += [{"type": "mitre_atlas", "value": t} for t in incident.atlas]
    summary = "; ".join(f"{k}: {v}" for k, v in incident.details.items() if not isinstance(v, dict | list))
    body = {"name": incident.title, "type": "Bastion ML Security", "severity": SEVERITIES[incident.severity],
            "occurred": incident.occurred, "details": summary or incident.title, "labels": labels,
            "rawJSON": json.dumps(incident.to_dict(), sort_keys=True, default=str)}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_body(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_body(body: bytes, secret: bytes, header: str) -> bool:
    """Constant-time check of a received ``X-Bastion-Signature`` header."""
    return hmac.compare_digest(sign_body(body, secret), header or "")

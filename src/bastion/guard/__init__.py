"""Guarded serving: ``bastion serve``, an inference gateway in front of any model Bastion loads.

Every request is authenticated (API keys with scopes, :mod:`.keys`), rate-limited and budgeted per key
(:mod:`.ratelimit`), validated against the model's input spec (:mod:`.spec`), screened by detectors fitted
on clean data (:mod:`.detectors`), answered through the key's output policy, and recorded in a hash-chained,
checkpoint-signed audit log (:mod:`.audit`) before the answer leaves.

    from bastion.guard import ServeOptions, build_gateway, create_app
    app = create_app(build_gateway(ServeOptions(model="model.pt", reference="clean.npz")))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.lazy import lazy_members

if TYPE_CHECKING:
    from bastion.guard.app import Gateway, create_app
    from bastion.guard.audit import AuditLog, VerifyReport, verify
    from bastion.guard.config import GuardConfig
    from bastion.guard.keys import KeyStore
    from bastion.guard.serve import ServeOptions, build_gateway

# Imported on first use: `bastion keys`, `bastion audit` and the registry read the database through
# bastion.guard.db and must not pay for torch and FastAPI (seconds) to do it.
_WHERE = {"Gateway": "app", "create_app": "app", "AuditLog": "audit", "VerifyReport": "audit", "verify": "audit",
          "GuardConfig": "config", "KeyStore": "keys", "ServeOptions": "serve", "build_gateway": "serve"}

__all__ = ["AuditLog", "Gateway", "GuardConfig", "KeyStore", "ServeOptions", "VerifyReport", "build_gateway",
           "create_app", "verify"]


__getattr__ = lazy_members("bastion.guard", _WHERE, globals())

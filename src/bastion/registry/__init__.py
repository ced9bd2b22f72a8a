"""Model registry: only signed, scanned versions are accepted; promotion is gated on stored evidence.

    reg = bn.registry.Registry("sqlite:///registry.db", store="registry-store")
    reg.push("my-model/", "digits", "1", public_key="keys/release.pub", evidence=["out/result.json"])
    reg.promote("digits", "1", to="production", policy=bn.registry.GatePolicy.load("gate.yaml"))
    reg.rollback("digits")
"""

from bastion.registry.api import Registry, RegistryRefusal, VersionInfo
from bastion.registry.policy import DEFAULT_POLICY, GatePolicy, extract_evidence, judge
from bastion.registry.store import BlobStore, StoreIntegrityError

__all__ = [
    "DEFAULT_POLICY",
    "BlobStore",
    "GatePolicy",
    "Registry",
    "RegistryRefusal",
    "StoreIntegrityError",
    "VersionInfo",
    "extract_evidence",
    "judge",
]

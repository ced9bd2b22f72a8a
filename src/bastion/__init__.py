"""Bastion: attack, harden, scan and sign, sanitize and guard machine-learning models.

    import bastion as bn
    model = bn.wrap(torch_module, bounds=(0, 1))
    raw, clipped, success = bn.attacks.PGD(norm="linf")(model, x, y, epsilons=0.1)
    report = bn.evaluate(model, x, y, bn.ThreatModel("linf", epsilons=(0.1, 0.2)))

Sub-packages load on first use, so `bastion scan` and `import bastion.scan` do not pay for PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bastion.errors import BastionError, CapabilityError, DataLoadError, InputError, ModelLoadError

__version__ = "0.1.0"

_SUBPACKAGES = ("assess", "attacks", "certify", "core", "data", "datasets", "defenses", "detect", "guard", "monitor", "privacy", "registry", "respond", "scan", "sign", "zoo")
_NAMES = {
    "L1": "bastion.core",
    "L2": "bastion.core",
    "Linf": "bastion.core",
    "Capability": "bastion.core",
    "Model": "bastion.core",
    "Norm": "bastion.core",
    "ThreatModel": "bastion.core",
    "get_norm": "bastion.core",
    "wrap": "bastion.core",
    "evaluate": "bastion.assess",
    "load_model": "bastion.core.loading",
    "safe_load": "bastion.scan.safe_load",
}

if TYPE_CHECKING:
    from bastion import (
        assess,
        attacks,
        certify,
        core,
        data,
        datasets,
        defenses,
        detect,
        guard,
        monitor,
        privacy,
        registry,
        respond,
        scan,
        sign,
        zoo,
    )
    from bastion.assess.evaluate import evaluate
    from bastion.core import L1, L2, Capability, Linf, Model, Norm, ThreatModel, get_norm, wrap
    from bastion.core.loading import load_model
    from bastion.scan.safe_load import safe_load


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"bastion.{name}")
    elif name in _NAMES:
        module = getattr(importlib.import_module(_NAMES[name]), name)
    else:
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "L1",
    "L2",
    "BastionError",
    "Capability",
    "CapabilityError",
    "DataLoadError",
    "InputError",
    "Linf",
    "Model",
    "ModelLoadError",
    "Norm",
    "ThreatModel",
    "__version__",
    "assess",
    "attacks",
    "certify",
    "core",
    "data",
    "datasets",
    "defenses",
    "detect",
    "evaluate",
    "get_norm",
    "guard",
    "load_model",
    "monitor",
    "privacy",
    "registry",
    "respond",
    "safe_load",
    "scan",
    "sign",
    "wrap",
    "zoo",
]

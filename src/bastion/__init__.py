"""Bastion: attack, harden, scan and sign, sanitize and guard machine-learning models.

    import bastion as bn
    model = bn.wrap(torch_module, bounds=(0, 1))
    raw, clipped, success = bn.attacks.PGD(norm="linf")(model, x, y, epsilons=0.1)
    report = bn.evaluate(model, x, y, bn.ThreatModel("linf", epsilons=(0.1, 0.2)))
"""

from bastion import attacks, certify, datasets, defenses, scan, sign, zoo
from bastion.assess import evaluate
from bastion.core import L1, L2, Capability, Linf, Model, Norm, ThreatModel, get_norm, wrap
from bastion.core.loading import load_model
from bastion.errors import BastionError, CapabilityError, DataLoadError, InputError, ModelLoadError
from bastion.scan.safe_load import safe_load

__version__ = "0.1.0"

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
    "attacks",
    "certify",
    "datasets",
    "defenses",
    "evaluate",
    "get_norm",
    "load_model",
    "safe_load",
    "scan",
    "sign",
    "wrap",
    "zoo",
]

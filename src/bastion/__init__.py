"""Bastion: attack, harden, scan and sign, sanitize and guard machine-learning models.

    import bastion as bn
    model = bn.wrap(torch_module, bounds=(0, 1))
    raw, clipped, success = bn.attacks.PGD(norm="linf")(model, x, y, epsilons=0.1)
"""

from bastion import attacks, datasets, zoo
from bastion.core import L1, L2, Capability, Linf, Model, Norm, ThreatModel, get_norm, wrap
from bastion.errors import BastionError, CapabilityError, DataLoadError, InputError, ModelLoadError

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
    "datasets",
    "get_norm",
    "wrap",
    "zoo",
]

"""The small core every capability builds on: model adapters, threat models, validation, loading."""

from bastion.core.adapters import (
    Capability,
    HTTPModel,
    Model,
    OnnxModel,
    SklearnModel,
    TorchModel,
    wrap,
)
from bastion.core.threat import L1, L2, Linf, Norm, ThreatModel, get_norm

__all__ = [
    "L1",
    "L2",
    "Capability",
    "HTTPModel",
    "Linf",
    "Model",
    "Norm",
    "OnnxModel",
    "SklearnModel",
    "ThreatModel",
    "TorchModel",
    "get_norm",
    "wrap",
]

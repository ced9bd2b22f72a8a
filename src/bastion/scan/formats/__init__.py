"""One scanner per model format; each takes ``(ctx, data, inner, depth, hints)`` and reports to ``ctx``."""

from bastion.scan.formats.hdf5 import scan_hdf5
from bastion.scan.formats.keras import scan_keras_config, scan_keras_config_json
from bastion.scan.formats.npy import scan_npy
from bastion.scan.formats.onnx import scan_onnx
from bastion.scan.formats.safetensors import scan_safetensors
from bastion.scan.formats.torchscript import scan_torchscript_code

__all__ = [
    "scan_hdf5",
    "scan_keras_config",
    "scan_keras_config_json",
    "scan_npy",
    "scan_onnx",
    "scan_safetensors",
    "scan_torchscript_code",
]

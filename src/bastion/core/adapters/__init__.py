"""Model adapters: one interface over PyTorch, scikit-learn, ONNX Runtime and HTTP endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.core.adapters.base import Capability, Model
from bastion.core.adapters.http_model import EndpointError, HTTPModel
from bastion.core.adapters.onnx_model import OnnxModel
from bastion.core.adapters.sklearn_model import SklearnModel
from bastion.core.adapters.torch_model import TorchModel
from bastion.errors import InputError


def wrap(model: Any, bounds: Sequence[float] = (0.0, 1.0), **kwargs: Any) -> Model:
    """Wrap any supported model once; every attack, defence and evaluation then takes the result.

    - ``torch.nn.Module`` -> :class:`TorchModel` (``preprocessing=(mean, std)``, ``device=``)
    - an ONNX file path or ``onnxruntime.InferenceSession`` -> :class:`OnnxModel`
    - an ``http(s)://`` URL -> :class:`HTTPModel` (``output='scores'|'labels'``, ``timeout=``, ``retries=``)
    - an estimator with ``predict_proba``/``predict`` -> :class:`SklearnModel`
    - an already wrapped :class:`Model` is returned unchanged.
    """
    import torch

    if isinstance(model, Model):
        return model
    if isinstance(model, torch.nn.Module):
        return TorchModel(model, bounds, **kwargs)
    if isinstance(model, str) and model.startswith(("http://", "https://")):
        return HTTPModel(model, bounds, **kwargs)
    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        return OnnxModel(model, bounds, **kwargs)
    if hasattr(model, "get_inputs") and hasattr(model, "run"):
        return OnnxModel(model, bounds, **kwargs)
    if hasattr(model, "predict_proba") or hasattr(model, "predict"):
        return SklearnModel(model, bounds, **kwargs)
    raise InputError("model", type(model).__name__,
                     "a torch.nn.Module, scikit-learn estimator, ONNX file/session or http(s) URL")


__all__ = ["Capability", "EndpointError", "HTTPModel", "Model", "OnnxModel", "SklearnModel", "TorchModel", "wrap"]

"""ONNX Runtime sessions: black-box scores (or labels when the graph outputs class indices)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.core.adapters.base import Capability, Model
from bastion.core.validation import check_bounds
from bastion.errors import InputError, ModelLoadError


class OnnxModel(Model):
    """Wrap an ONNX model file or an ``onnxruntime.InferenceSession``.

    The first float output of rank 2 is taken as scores; if the graph only has an integer output (as
    sklearn-onnx classifiers may), the model is labels-only. ``output`` picks an output by name.
    """

    def __init__(self, model: Any, bounds: Sequence[float] = (0.0, 1.0), output: str | None = None,
                 num_classes: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        if isinstance(model, (str, Path)):
            try:
                model = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise ModelLoadError(f"could not load ONNX model {model}: {exc}") from exc
        if not hasattr(model, "run") or not hasattr(model, "get_inputs"):
            raise InputError("model", type(model).__name__, "an ONNX file path or onnxruntime.InferenceSession")
        self.session = model
        self.bounds = check_bounds(bounds)
        inp = model.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = inp.shape
        # Graphs exported in double precision need double inputs; everything else gets float32.
        self.input_dtype = np.float64 if "double" in str(inp.type) else np.float32
        outs = model.get_outputs()
        names = [o.name for o in outs]
        if output is not None and output not in names:
            raise InputError("output", output, f"one of the model's outputs {names}")
        self.score_output = output
        self.label_output: str | None = None
        if output is None:
            for o in outs:
                if "float" in o.type and len(o.shape or []) == 2:
                    self.score_output = o.name
                    break
            for o in outs:
                if "int" in o.type:
                    self.label_output = o.name
                    break
        self.capabilities = Capability.LABELS | (Capability.SCORES if self.score_output else Capability(0))
        self.num_classes = num_classes

    def _run(self, x: Tensor, name: str) -> np.ndarray:
        arr = x.detach().cpu().numpy().astype(self.input_dtype)
        shape = self.input_shape
        if shape is not None and len(shape) == 2 and arr.ndim != 2:
            arr = arr.reshape(arr.shape[0], -1)
        elif (shape is not None and len(shape) != arr.ndim and all(isinstance(s, int) for s in shape[1:])
              and int(np.prod(shape[1:])) == int(np.prod(arr.shape[1:]))):
            # Flat rows for an image graph: the graph's static shape says how to fold them.
            arr = arr.reshape((arr.shape[0], *shape[1:]))
        try:
            out = self.session.run([name], {self.input_name: arr})[0]
        except Exception as exc:  # onnxruntime raises its own types for shape and type mismatches
            raise InputError("inputs", f"shape {tuple(arr.shape)}",
                             f"inputs the ONNX graph accepts ({self.input_name}: {shape}): {exc}") from exc
        self._count(x)
        if isinstance(out, list):  # sklearn-onnx ZipMap output: list of {class: prob}
            out = np.array([[d[k] for k in sorted(d)] for d in out], dtype=np.float32)
        return np.asarray(out)

    def scores(self, x: Tensor) -> Tensor:
        self.require(Capability.SCORES, "scores()")
        assert self.score_output is not None
        return torch.from_numpy(self._run(x, self.score_output).astype(np.float32)).to(x.device)

    def predict(self, x: Tensor) -> Tensor:
        if self.score_output is not None:
            return self.scores(x).argmax(dim=1)
        assert self.label_output is not None
        return torch.from_numpy(self._run(x, self.label_output).astype(np.int64).reshape(-1)).to(x.device)

"""Give a traced TorchScript network back the layer settings interval bound propagation needs.

``torch.jit.trace`` keeps each layer's weights and buffers and its ``original_name`` (Conv2d, MaxPool2d...)
but drops settings such as a convolution's stride or a pooling window; they survive only as constants of
the traced graph. :func:`untrace` reads them back and builds the same network from torch.nn layers, then
checks it against the file's own forward on real inputs before anything is certified with it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import InputError

#: how closely the rebuilt network must reproduce the file's outputs (float rounding only)
RTOL, ATOL = 1e-4, 1e-5


def _graph_args(module: Any, op: str) -> list[Any]:
    """Constant arguments of the ``op`` call in a traced layer's graph (tensor arguments are None)."""
    for node in module.graph.nodes():
        if node.kind() == op:
            args: list[Any] = []
            for value in node.inputs():
                src = value.node()
                if src.kind() == "prim::Constant":
                    args.append(value.toIValue())
                elif src.kind() == "prim::ListConstruct":
                    args.append([v.toIValue() for v in src.inputs()])
                else:
                    args.append(None)
            return args
    raise LookupError(f"no {op} in the traced graph")


def _copy(dst: Tensor | None, src: Tensor | None) -> None:
    if dst is not None and src is not None:
        with torch.no_grad():
            dst.copy_(src)


def _conv(module: Any, name: str) -> nn.Module:
    a = _graph_args(module, "aten::_convolution")
    stride, padding, dilation, transposed, groups = a[3], a[4], a[5], a[6], a[8]
    if transposed:
        raise LookupError("a transposed convolution")
    w: Tensor = module.weight
    bias = getattr(module, "bias", None)
    cls: Any = nn.Conv1d if name == "Conv1d" else nn.Conv2d
    layer = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(stride), padding=tuple(padding),
                dilation=tuple(dilation), groups=groups, bias=bias is not None)
    _copy(layer.weight, w)
    _copy(layer.bias, bias)
    return layer


def _batchnorm(module: Any, name: str) -> nn.Module:
    eps = float(_graph_args(module, "aten::batch_norm")[7])
    weight = getattr(module, "weight", None)
    cls = nn.BatchNorm1d if name == "BatchNorm1d" else nn.BatchNorm2d
    layer = cls(module.running_mean.shape[0], eps=eps, affine=weight is not None)
    _copy(layer.running_mean, module.running_mean)
    _copy(layer.running_var, module.running_var)
    _copy(layer.weight, weight)
    _copy(layer.bias, getattr(module, "bias", None))
    return layer


def _layer(module: Any) -> nn.Module:
    name = str(getattr(module, "original_name", ""))
    if name in ("Conv1d", "Conv2d"):
        return _conv(module, name)
    if name in ("BatchNorm1d", "BatchNorm2d"):
        return _batchnorm(module, name)
    if name == "MaxPool2d":
        a = _graph_args(module, "aten::max_pool2d")
        return nn.MaxPool2d(a[1], a[2], a[3], a[4], ceil_mode=bool(a[5]))
    if name == "AvgPool2d":
        a = _graph_args(module, "aten::avg_pool2d")
        return nn.AvgPool2d(a[1], a[2], a[3], ceil_mode=bool(a[4]), count_include_pad=bool(a[5]),
                            divisor_override=a[6])
    if name == "Flatten":
        a = _graph_args(module, "aten::flatten")
        return nn.Flatten(a[1], a[2])
    if name == "LeakyReLU":
        return nn.LeakyReLU(float(_graph_args(module, "aten::leaky_relu")[1]))
    if name == "AdaptiveAvgPool2d":
        return nn.AdaptiveAvgPool2d(tuple(_graph_args(module, "aten::adaptive_avg_pool2d")[1]))
    # Linear keeps weight and bias; activations and Identity have no settings: IBP reads them as they are.
    return module


class _Container(nn.Module):
    """A traced container: rebuilt children for IBP to walk, the traced forward as the reference to check."""

    def __init__(self, traced: Any, children: dict[str, nn.Module]) -> None:
        super().__init__()
        self.__dict__["traced"] = traced  # kept out of the children: IBP walks only the rebuilt layers
        for name, child in children.items():
            self.add_module(name, child)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.__dict__["traced"](x)
        return out


def _rebuild(module: Any) -> nn.Module:
    children = list(module.named_children())
    if not children:
        return _layer(module)
    if str(getattr(module, "original_name", "")) == "Sequential":
        return nn.Sequential(*(_rebuild(child) for _, child in children))
    return _Container(module, {name: _rebuild(child) for name, child in children})


def untrace(module: Any, example: Tensor) -> nn.Module:
    """An ``nn.Module`` equal to the traced TorchScript ``module`` whose layers keep their settings.

    Raises :class:`InputError` when a layer's settings cannot be read back, or the rebuilt network does
    not reproduce the file's outputs on ``example``.
    """
    expected = "a traced network of supported layers, or safetensors weights with --factory module:Factory"
    try:
        rebuilt = _rebuild(module).eval()
    except (LookupError, AttributeError, IndexError, TypeError, ValueError) as exc:
        raise InputError("--model", f"a TorchScript file whose layer settings cannot be read back ({exc})",
                         expected) from None
    with torch.no_grad():
        same = torch.allclose(rebuilt(example), module(example), rtol=RTOL, atol=ATOL)
    if not same:
        raise InputError("--model", "a TorchScript file whose forward is not its layers applied in order",
                         expected)
    return rebuilt

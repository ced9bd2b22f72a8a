"""Interval bound propagation (Gowal et al. 2018): sound logit bounds over an L-inf box.

A network is compiled once into a chain of interval operations, walking ``nn.Sequential`` containers
(nested ones too) and modules whose forward applies their children in registration order (checked
against the module's own output). Affine layers (Linear, Conv, eval-mode BatchNorm) map the box's
centre through the layer and its radius through the layer's absolute weights; monotone layers (ReLU,
pooling, Flatten, ...) map the two corners directly. Anything else is refused by name.

Bounds are computed in float arithmetic, so they are sound up to rounding (about 1e-6 relative).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core.adapters import TorchModel
from bastion.core.validation import check_bounds, check_inputs, check_labels
from bastion.errors import InputError

Interval = tuple[Tensor, Tensor]

#: tolerance when checking that a container's forward is its children in order
_CHAIN_RTOL, _CHAIN_ATOL = 1e-4, 1e-5


class IntervalOp:
    """One layer's action on an interval [lower, upper]."""

    name = "op"

    def __call__(self, lower: Tensor, upper: Tensor) -> Interval:
        raise NotImplementedError


class MonotoneOp(IntervalOp):
    """A layer that is non-decreasing in every input: the box's corners map to the output's bounds."""

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor]) -> None:
        self.name = name
        self.fn = fn

    def __call__(self, lower: Tensor, upper: Tensor) -> Interval:
        return self.fn(lower), self.fn(upper)


class AffineOp(IntervalOp):
    """y = A x + b: centre through the layer, radius through |A| (``abs_fn`` applies |A| without bias)."""

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor], abs_fn: Callable[[Tensor], Tensor]) -> None:
        self.name = name
        self.fn = fn
        self.abs_fn = abs_fn

    def __call__(self, lower: Tensor, upper: Tensor) -> Interval:
        centre, radius = (upper + lower) / 2, (upper - lower) / 2
        c, r = self.fn(centre), self.abs_fn(radius)
        return c - r, c + r


class LinearOp(AffineOp):
    """A fully connected layer; kept apart so the last one can be merged into the margin (elision)."""

    def __init__(self, name: str, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__(name, lambda t: F.linear(t, weight, bias), lambda t: F.linear(t, weight.abs()))
        self.weight = weight
        self.bias = bias


def _refuse(path: str, module: Any, why: str) -> InputError:
    return InputError("model", f"layer '{path}' ({type(module).__name__}{why})",
                      f"layers interval bound propagation supports: {', '.join(sorted(_BUILDERS))}, "
                      "inside nn.Sequential or modules that apply their children in order")


def _layer_name(module: nn.Module) -> str | None:
    """The torch.nn class a module is exactly (TorchScript keeps it as ``original_name``), else None.

    Subclasses of torch.nn layers may override forward, so they are not trusted as the layer they extend.
    """
    if isinstance(module, torch.jit.ScriptModule):
        return str(getattr(module, "original_name", "")) or None
    if type(module).__module__.startswith("torch.nn.modules."):
        return type(module).__name__
    return None


def _conv(module: Any, path: str) -> IntervalOp:
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise _refuse(path, module, f" with padding_mode={module.padding_mode!r}")
    weight: Tensor = module.weight
    bias: Tensor | None = module.bias
    conv = F.conv1d if weight.dim() == 3 else F.conv2d
    kw: dict[str, Any] = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation,
                          "groups": module.groups}
    return AffineOp("conv", lambda t: conv(t, weight, bias, **kw), lambda t: conv(t, weight.abs(), None, **kw))


def _batchnorm(module: Any, path: str) -> IntervalOp:
    if module.running_mean is None or module.running_var is None:
        raise _refuse(path, module, " without running statistics")

    def scale_shift(like: Tensor) -> tuple[Tensor, Tensor]:
        # Evaluation-mode batch norm is a per-channel affine map; a negative gamma flips the interval.
        # Read at every call, so training that updates the statistics is seen.
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shift = -module.running_mean * scale
        if module.bias is not None:
            shift = shift + module.bias
        shape = (1, -1) + (1,) * (like.dim() - 2)
        return scale.reshape(shape), shift.reshape(shape)

    def fn(t: Tensor) -> Tensor:
        scale, shift = scale_shift(t)
        return t * scale + shift

    return AffineOp("batchnorm", fn, lambda t: t * scale_shift(t)[0].abs())


def _leaky_relu(module: Any, path: str) -> IntervalOp:
    slope = float(module.negative_slope)
    if slope < 0:
        raise _refuse(path, module, f" with negative_slope={slope}, not monotone")
    return MonotoneOp("leaky_relu", lambda t: F.leaky_relu(t, slope))


def _flatten(module: Any, path: str) -> IntervalOp:
    start, end = int(module.start_dim), int(module.end_dim)
    return MonotoneOp("flatten", lambda t: t.flatten(start, end))


def _max_pool(module: Any, path: str) -> IntervalOp:
    kw = {"kernel_size": module.kernel_size, "stride": module.stride, "padding": module.padding,
          "dilation": module.dilation, "ceil_mode": module.ceil_mode}
    return MonotoneOp("max_pool", lambda t: F.max_pool2d(t, **kw))


def _avg_pool(module: Any, path: str) -> IntervalOp:
    # Averages have non-negative weights, so they are monotone and the corner rule is exact.
    kw = {"kernel_size": module.kernel_size, "stride": module.stride, "padding": module.padding,
          "ceil_mode": module.ceil_mode, "count_include_pad": module.count_include_pad,
          "divisor_override": module.divisor_override}
    return MonotoneOp("avg_pool", lambda t: F.avg_pool2d(t, **kw))


def _adaptive_avg_pool(module: Any, path: str) -> IntervalOp:
    size = module.output_size
    return MonotoneOp("adaptive_avg_pool", lambda t: F.adaptive_avg_pool2d(t, size))


def _identity(module: Any, path: str) -> IntervalOp:
    # Dropout is the identity at evaluation, which is what a certificate is about.
    return MonotoneOp("identity", lambda t: t)


_BUILDERS: dict[str, Callable[[Any, str], IntervalOp]] = {
    "Linear": lambda m, p: LinearOp("linear", m.weight, m.bias),
    "Conv1d": _conv,
    "Conv2d": _conv,
    "BatchNorm1d": _batchnorm,
    "BatchNorm2d": _batchnorm,
    "ReLU": lambda m, p: MonotoneOp("relu", F.relu),
    "LeakyReLU": _leaky_relu,
    "Sigmoid": lambda m, p: MonotoneOp("sigmoid", torch.sigmoid),
    "Tanh": lambda m, p: MonotoneOp("tanh", torch.tanh),
    "Flatten": _flatten,
    "MaxPool2d": _max_pool,
    "AvgPool2d": _avg_pool,
    "AdaptiveAvgPool2d": _adaptive_avg_pool,
    "Identity": _identity,
    "Dropout": _identity,
}


def _compile(module: nn.Module, x: Tensor, path: str) -> tuple[list[IntervalOp], Tensor]:
    """Interval ops for ``module`` and its nominal output on ``x`` (used to check container forwards)."""
    name = _layer_name(module)
    children = list(module.named_children())
    if name == "Sequential":
        ops: list[IntervalOp] = []
        for child_name, child in children:
            child_ops, x = _compile(child, x, f"{path}.{child_name}" if path else child_name)
            ops += child_ops
        return ops, x
    if name in _BUILDERS:
        try:
            op = _BUILDERS[name](module, path or "model")
        except AttributeError as exc:
            # TorchScript drops some layers' hyper-parameters (a scripted Conv2d has no .stride).
            raise InputError(f"model layer {path or 'model'}", f"a {name} without its settings ({exc})",
                             "a model whose layers keep their attributes: save the weights as safetensors and "
                             "pass --factory module:Factory") from None
        return [op], module(x)
    if not children:
        raise _refuse(path or "model", module, "")
    x_in = x
    ops = []
    for child_name, child in children:
        child_ops, x = _compile(child, x, f"{path}.{child_name}" if path else child_name)
        ops += child_ops
    try:
        reference = module(x_in)
    except Exception as exc:  # a container such as ModuleList has no forward of its own
        raise _refuse(path or "model", module, f": its forward failed ({type(exc).__name__})") from None
    if not (isinstance(reference, Tensor) and reference.shape == x.shape
            and torch.allclose(reference, x, rtol=_CHAIN_RTOL, atol=_CHAIN_ATOL)):
        raise _refuse(path or "model", module, ": its forward is not its children applied in order")
    return ops, x


def _unwrap(model: Any) -> tuple[nn.Module, Tensor | None, Tensor | None]:
    """The module to bound, and the (mean, std) normalisation a TorchModel applies before it."""
    if isinstance(model, TorchModel):
        return model.module, getattr(model, "_mean", None), getattr(model, "_std", None)
    if isinstance(model, nn.Module):
        return model, None, None
    raise InputError("model", type(model).__name__, "a torch.nn.Module or bastion TorchModel (IBP needs the layers)")


class IntervalNetwork:
    """A network compiled for interval bound propagation; compile once, bound many batches.

    ``example`` is a batch of inputs the network accepts; it checks that containers with their own
    forward really apply their children in order.
    """

    def __init__(self, model: Any, example: Tensor) -> None:
        self.module, mean, std = _unwrap(model)
        self.device = _device(self.module)
        ex = example.to(self.device).float()
        self.ops: list[IntervalOp] = []
        if mean is not None and std is not None:
            m, s = mean.to(self.device), std.to(self.device)
            # A per-channel (C,) vector applies to dim 1, as in TorchModel.
            if m.dim() == 1 and ex.dim() > 2 and m.shape[0] == ex.shape[1]:
                m, s = (v.reshape((1, -1) + (1,) * (ex.dim() - 2)) for v in (m, s))
            self.ops.append(AffineOp("normalize", lambda t: (t - m) / s, lambda t: t / s))
            ex = (ex - m) / s
        was_training = [mod.training for mod in self.module.modules()]
        self.module.eval()
        try:
            with torch.no_grad():
                ops, out = _compile(self.module, ex, "")
        finally:
            for mod, flag in zip(self.module.modules(), was_training, strict=True):
                mod.training = flag
        self.ops += ops
        #: width of the output (the number of classes for a classifier)
        self.num_outputs = int(out.shape[1]) if out.dim() == 2 else None
        if not self.ops:
            raise InputError("model", "a network with no layers", "at least one layer to bound")

    def bounds(self, lower: Tensor, upper: Tensor) -> Interval:
        """Propagate the box [lower, upper] to bounds on the logits."""
        for op in self.ops:
            lower, upper = op(lower, upper)
        return lower, upper

    def margins(self, lower: Tensor, upper: Tensor, labels: Tensor) -> Tensor:
        """Upper bounds on logit_j - logit_y for every class j, shape (N, C); 0 at j = y.

        With a final linear layer the difference is bounded in one step through W_j - W_y (elision of
        the last layer, Gowal et al. section 3), which is tighter than subtracting separate logit bounds.
        """
        last = self.ops[-1]
        y = labels.long()
        lo, hi = lower, upper
        for op in self.ops[:-1]:
            lo, hi = op(lo, hi)
        # Elision needs the last layer to act on (N, d) features; a Linear over a trailing axis does not.
        if isinstance(last, LinearOp) and lo.dim() == 2:
            centre, radius = (hi + lo) / 2, (hi - lo) / 2
            w = last.weight
            diff = w.unsqueeze(0) - w[y].unsqueeze(1)  # (N, C, d)
            out = torch.einsum("ncd,nd->nc", diff, centre) + torch.einsum("ncd,nd->nc", diff.abs(), radius)
            if last.bias is not None:
                out = out + (last.bias.unsqueeze(0) - last.bias[y].unsqueeze(1))
        else:
            lo, hi = last(lo, hi)
            out = hi - lo.gather(1, y.unsqueeze(1))
        return out.scatter(1, y.unsqueeze(1), 0.0)


def _device(module: nn.Module) -> torch.device:
    for ref in (*module.parameters(), *module.buffers()):
        return ref.device
    return torch.device("cpu")


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise InputError("eps", eps, "a finite L-inf radius >= 0")
    return float(eps)


def input_box(x: Tensor, eps: float, bounds: tuple[float, float]) -> Interval:
    """The L-inf ball of radius eps around x, intersected with the input bounds."""
    lo, hi = bounds
    return (x - eps).clamp(lo, hi), (x + eps).clamp(lo, hi)


def ibp_bounds(model: Any, x: Any, eps: float, bounds: tuple[float, float] = (0.0, 1.0)) -> Interval:
    """Lower and upper bounds on every logit over all inputs within L-inf distance ``eps`` of ``x``.

    ``model`` is an ``nn.Module`` (or a bastion TorchModel, whose normalisation is included).
    """
    b = check_bounds(bounds)
    e = _check_eps(eps)
    net = IntervalNetwork(model, check_inputs(x, b))
    xt = check_inputs(x, b, device=net.device).float()
    with torch.no_grad():
        return net.bounds(*input_box(xt, e, b))


def ibp_certify(model: Any, x: Any, y: Any, eps: float, bounds: tuple[float, float] = (0.0, 1.0),
                batch_size: int = 512) -> Tensor:
    """Boolean mask (on the CPU): True where IBP proves the label ``y`` wins everywhere in the eps-box.

    An example is certified iff the upper bound on logit_j - logit_y is negative for every j != y.
    """
    b = check_bounds(bounds)
    e = _check_eps(eps)
    xt = check_inputs(x, b)
    yt = check_labels(y, xt.shape[0])
    if batch_size < 1:
        raise InputError("batch_size", batch_size, "a positive integer")
    net = IntervalNetwork(model, xt[:batch_size])
    if net.num_outputs is None:
        raise InputError("model", "outputs that are not (N, classes) logits", "a classifier returning (N, C)")
    yt = check_labels(yt, xt.shape[0], net.num_outputs)
    out = []
    with torch.no_grad():
        for i in range(0, xt.shape[0], batch_size):
            xb = xt[i:i + batch_size].to(net.device).float()
            yb = yt[i:i + batch_size].to(net.device)
            m = net.margins(*input_box(xb, e, b), yb)
            m = m.scatter(1, yb.unsqueeze(1), -math.inf)
            out.append((m.amax(dim=1) < 0).cpu())
    return torch.cat(out)

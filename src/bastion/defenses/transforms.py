"""Input-transform defences as models, each with an honest ``adaptive()`` view.

A transform defence classifies ``T(x)`` instead of ``x``. Many such defences were published as robust
because ``T`` breaks or randomises the gradient an attacker follows; Athalye, Carlini & Wagner (2018,
"Obfuscated Gradients Give a False Sense of Security") broke them with

- BPDA (backward pass differentiable approximation): forward ``T(x)``, backward as if ``T`` were the
  identity (``T(x) ~ x`` for a defence that keeps accuracy), for transforms with no useful gradient;
- EOT (expectation over transformation): differentiate the average over random draws of ``T``.

Every wrapper here is a :class:`~bastion.core.adapters.Model`. Called directly (or through ``naive()``)
it is what a careless attacker differentiates: rounding and JPEG give zero gradients, a randomised
transform one random draw. ``adaptive()`` returns the BPDA/EOT view that ``bastion.evaluate`` attacks;
``adaptive_notes`` says what it does. Success is always judged on the real wrapper.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.core.adapters import Model, wrap
from bastion.errors import InputError

#: EOT draws per forward pass of the adaptive view of a randomised transform
DEFAULT_EOT_DRAWS = 16


def straight_through(x: Tensor, tx: Tensor) -> Tensor:
    """BPDA with the identity: the value of ``tx``, the gradient of ``x``."""
    return x + (tx - x).detach()


def _zero_gradient(x: Tensor, tx: Tensor) -> Tensor:
    # A transform computed outside autograd gives an attacker no gradient at all. Exposing that as a
    # zero gradient (instead of a crash) lets a naive attack run and shows it fooled, which is the
    # gradient-masking failure the adaptive view exists to avoid.
    return tx.detach() + 0.0 * x if x.requires_grad else tx.detach()


class InputTransform(Model):
    """Base class: ``scores(x) = model.scores(T(x))``. Subclasses implement ``transform``.

    ``differentiable`` says whether autograd through ``transform`` gives a usable gradient (then the
    adaptive view differentiates it exactly); ``randomized`` says whether each call draws new randomness
    (then the adaptive view averages logits over ``eot_draws`` draws).
    """

    differentiable: bool = True
    randomized: bool = False
    description: str = "input transform"

    def __init__(self, model: Any, bounds: Any = None, *, eot_draws: int = DEFAULT_EOT_DRAWS) -> None:
        super().__init__()
        inner = wrap(model, bounds) if bounds is not None else wrap(model)
        self.model = inner
        self.bounds = inner.bounds
        self.device = inner.device
        self.num_classes = inner.num_classes
        self.capabilities = inner.capabilities
        if not isinstance(eot_draws, int) or eot_draws < 1:
            raise InputError("eot_draws", eot_draws, "an integer >= 1")
        self.eot_draws = eot_draws

    @property
    def kind(self) -> str:
        return f"{type(self).__name__}({self.model.kind})"

    def transform(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _as_seen(self, x: Tensor) -> Tensor:
        tx = self.transform(x)
        return tx if self.differentiable else _zero_gradient(x, tx)

    def scores(self, x: Tensor) -> Tensor:
        self._count(x)
        return self.model.scores(self._as_seen(x))

    def naive(self) -> Model:
        """A view whose ``adaptive()`` is itself: what a non-adaptive attacker differentiates."""
        return _View(self, adaptive=False)

    def adaptive(self) -> Model:
        if self.differentiable and not self.randomized:
            return self
        return _View(self, adaptive=True)

    @property
    def adaptive_notes(self) -> tuple[str, ...]:  # type: ignore[override]
        notes: list[str] = []
        if not self.differentiable:
            notes.append(f"BPDA (straight-through identity gradient) through {self.description}")
        if self.randomized:
            notes.append(f"EOT: logits averaged over {self.eot_draws} random draws of {self.description}")
        return tuple(notes)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "defence": self.description, "adaptive_notes": list(self.adaptive_notes)}


class _View(Model):
    """The attacker's view of a transform defence: naive (as implemented) or adaptive (BPDA/EOT)."""

    def __init__(self, parent: InputTransform, *, adaptive: bool) -> None:
        super().__init__()
        self.parent = parent
        self.is_adaptive = adaptive
        self.bounds = parent.bounds
        self.device = parent.device
        self.num_classes = parent.num_classes
        self.capabilities = parent.capabilities
        self.adaptive_notes = parent.adaptive_notes if adaptive else (
            f"naive: gradients of {parent.description} as implemented (gradient masking not countered)",)

    @property
    def kind(self) -> str:
        return f"{'adaptive' if self.is_adaptive else 'naive'} view of {self.parent.kind}"

    def scores(self, x: Tensor) -> Tensor:
        self._count(x)
        p = self.parent
        if not self.is_adaptive:
            return p.scores(x)
        p._count(x)
        if not p.randomized:
            return p.model.scores(straight_through(x, p.transform(x)))
        # EOT: one forward pass over all draws, then the mean of the logits per example.
        k = p.eot_draws
        xs = x.repeat((k,) + (1,) * (x.dim() - 1))
        tx = p.transform(xs)
        if not p.differentiable:
            tx = straight_through(xs, tx)
        return p.model.scores(tx).reshape(k, x.shape[0], -1).mean(dim=0)

    def adaptive(self) -> Model:
        return self


def _check_images(x: Tensor, name: str, channels: tuple[int, ...] | None = None) -> None:
    if x.dim() != 4 or (channels is not None and x.shape[1] not in channels):
        expected = f"images (N, C, H, W){'' if channels is None else f' with C in {channels}'}"
        raise InputError("x", f"shape {tuple(x.shape)}", f"{expected} for {name}")


class BitDepthReduction(InputTransform):
    """Feature squeezing by colour depth (Xu et al. 2018): quantise to ``bits`` bits per value."""

    differentiable = False  # rounding: zero gradient almost everywhere

    def __init__(self, model: Any, bits: int = 3, bounds: Any = None) -> None:
        super().__init__(model, bounds)
        if not isinstance(bits, int) or not 1 <= bits <= 16:
            raise InputError("bits", bits, "an integer in [1, 16]")
        self.bits = bits
        self.description = f"{bits}-bit depth reduction"

    def transform(self, x: Tensor) -> Tensor:
        lo, hi = self.bounds
        levels = 2**self.bits - 1
        return torch.round((x - lo) / (hi - lo) * levels) / levels * (hi - lo) + lo


class MedianFilter(InputTransform):
    """Feature squeezing by local smoothing (Xu et al. 2018): a ``size`` x ``size`` median per channel.

    Differentiable almost everywhere (the gradient flows to the median pixel), so the adaptive view
    differentiates it exactly.
    """

    def __init__(self, model: Any, size: int = 2, bounds: Any = None) -> None:
        super().__init__(model, bounds)
        if not isinstance(size, int) or size < 2:
            raise InputError("size", size, "an integer >= 2")
        self.size = size
        self.description = f"{size}x{size} median filter"

    def transform(self, x: Tensor) -> Tensor:
        _check_images(x, "MedianFilter")
        k = self.size
        # Reflect-pad so the output keeps the input's size; even windows lean right/down as in Xu et al.
        top, left = (k - 1) // 2, (k - 1) // 2
        padded = F.pad(x, (left, k - 1 - left, top, k - 1 - top), mode="reflect")
        patches = padded.unfold(2, k, 1).unfold(3, k, 1)
        ordered = patches.reshape(*patches.shape[:4], k * k).sort(dim=-1).values
        m = k * k // 2
        # An even window has two middle values; their mean (not torch.median's lower one, which darkens).
        return ordered[..., m] if (k * k) % 2 else 0.5 * (ordered[..., m - 1] + ordered[..., m])


class SpatialSmoothing(InputTransform):
    """A Gaussian blur of standard deviation ``sigma`` (differentiable: a fixed convolution)."""

    def __init__(self, model: Any, sigma: float = 1.0, bounds: Any = None) -> None:
        super().__init__(model, bounds)
        if not sigma > 0:
            raise InputError("sigma", sigma, "a positive number")
        self.sigma = float(sigma)
        radius = max(1, round(2 * self.sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(t**2) / (2 * self.sigma**2))
        self._kernel1d = (g / g.sum()).to(self.device)
        self.description = f"Gaussian smoothing (sigma={self.sigma:g})"

    def transform(self, x: Tensor) -> Tensor:
        _check_images(x, "SpatialSmoothing")
        c = x.shape[1]
        r = self._kernel1d.shape[0] // 2
        k = self._kernel1d.to(x.device, x.dtype)
        # Separable blur, replicate padding so borders are not darkened.
        y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class JPEGCompression(InputTransform):
    """JPEG round trip through Pillow at ``quality`` (Dziugaite et al. 2016; Guo et al. 2018).

    Not differentiable (runs outside autograd on the host), so the adaptive view uses BPDA.
    """

    differentiable = False

    def __init__(self, model: Any, quality: int = 75, bounds: Any = None) -> None:
        super().__init__(model, bounds)
        if not isinstance(quality, int) or not 1 <= quality <= 95:
            raise InputError("quality", quality, "an integer in [1, 95] (Pillow's useful range)")
        self.quality = quality
        self.description = f"JPEG compression (quality {quality})"

    def transform(self, x: Tensor) -> Tensor:
        from PIL import Image

        _check_images(x, "JPEGCompression", channels=(1, 3))
        lo, hi = self.bounds
        arr = ((x.detach().float() - lo) / (hi - lo) * 255.0).round().clamp(0, 255).to(torch.uint8)
        arr_np = arr.permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(arr_np)
        for i, img in enumerate(arr_np):
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img, mode="L" if img.shape[-1] == 1 else "RGB")
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=self.quality)
            buf.seek(0)
            with Image.open(buf) as dec:
                dec_arr = np.asarray(dec)
            out[i] = dec_arr[..., None] if dec_arr.ndim == 2 else dec_arr
        back = torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0
        return back * (hi - lo) + lo


class RandomResizePad(InputTransform):
    """Randomised resizing and padding (Xie et al. 2018), kept at the model's input size.

    Each example is shrunk to a random side ``s`` in ``[H, scale * H]`` of a canvas ``scale * H`` wide and
    placed at a random offset (the padding takes the lower bound), and the canvas is resized back to
    ``H x W`` so any model accepts it. Resize, pad and resize compose to one random affine map, applied with
    ``grid_sample``: differentiable and batched. The adaptive view uses EOT.
    """

    randomized = True

    def __init__(self, model: Any, scale: float = 1.25, bounds: Any = None, *,
                 eot_draws: int = DEFAULT_EOT_DRAWS) -> None:
        super().__init__(model, bounds, eot_draws=eot_draws)
        if not scale > 1.0:
            raise InputError("scale", scale, "a canvas scale > 1 (e.g. 1.25)")
        self.scale = float(scale)
        self.description = f"random resize-and-pad (canvas {self.scale:g}x)"

    def transform(self, x: Tensor) -> Tensor:
        _check_images(x, "RandomResizePad")
        n = x.shape[0]
        lo = self.bounds[0]
        # Fraction of the canvas the image covers, uniform in [1/scale, 1]; offset uniform in what is left.
        frac = 1.0 / self.scale + torch.rand(n, device=x.device) * (1.0 - 1.0 / self.scale)
        slack = 1.0 - frac
        shift_x = (torch.rand(n, device=x.device) * 2 - 1) * slack
        shift_y = (torch.rand(n, device=x.device) * 2 - 1) * slack
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        # grid_sample maps output coordinates to input ones: the inverse of shrink-then-shift.
        theta[:, 0, 0] = 1.0 / frac
        theta[:, 1, 1] = 1.0 / frac
        theta[:, 0, 2] = -shift_x / frac
        theta[:, 1, 2] = -shift_y / frac
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x - lo, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out + lo


__all__ = [
    "BitDepthReduction",
    "InputTransform",
    "JPEGCompression",
    "MedianFilter",
    "RandomResizePad",
    "SpatialSmoothing",
    "straight_through",
]

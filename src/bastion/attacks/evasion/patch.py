"""Adversarial patch (Brown et al., 2017): one printable sticker that fools the model wherever it sits.

Unlike an epsilon attack, the patch is universal (one for all inputs) and unbounded inside its area, but
confined to that area: pixels outside it are never touched. It is learned by gradient descent over
random placements, scales and rotations (expectation over transformation), so it keeps working when
printed and stuck somewhere else. Values stay within the model's input bounds, and two optional penalties
make it printable in practice: total variation (printers and cameras blur pixel-level noise; Sharif et
al., CCS 2016) and a non-printability score against a palette of colours the printer can reproduce (the
mean distance of each patch pixel to its nearest palette colour, the min-distance form of Sharif et al.'s
score used by Thys et al., 2019). ``snap_to_palette`` rounds the final patch to palette colours exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.attacks.evasion.base import is_adversarial
from bastion.core.adapters import Capability, Model, wrap
from bastion.core.validation import check_inputs, check_labels
from bastion.errors import InputError


@dataclass
class PatchResult:
    """A learned patch and how well it works on images it was not trained on."""

    patch: Tensor  # (C, h, w), inside the model's bounds
    success_rate: float  # held-out images, random placements: flipped (untargeted) or sent to target
    clean_accuracy: float  # the model's accuracy on the same held-out images without the patch
    target: int | None
    n_eval: int
    losses: list[float] = field(default_factory=list)  # training loss per step
    total_variation: float = 0.0  # mean absolute difference between neighbouring patch pixels
    non_printability: float | None = None  # mean distance to the nearest palette colour (None: no palette)


def _check_range(argument: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(argument, repr(value), "a pair (low, high)") from None
    if not (0 < lo <= hi):
        raise InputError(argument, value, "0 < low <= high")
    return lo, hi


class AdversarialPatch:
    """Learn one universal patch. ``fit(model, x, y)`` returns a :class:`PatchResult`.

    - ``patch_size``: ``(h, w)`` pixels, or a fraction of the image area (a square patch).
    - ``target``: a class to force everywhere (targeted), or ``None`` to flip the true class.
    - ``scale`` (range of size factors), ``rotation`` (max degrees either way) and random locations are
      the training-time transformations (EOT); ``eval_placements`` random positions per held-out image
      measure ``success_rate``.
    - ``eval_fraction`` of the inputs is held out for that measure unless ``x_eval``/``y_eval`` are given.
    - Printability: ``tv_weight`` penalises total variation (smooth patches survive printing);
      ``palette`` (K, C) lists the printable colours in the model's input space and ``nps_weight``
      penalises the distance to them; ``snap_to_palette`` replaces each final pixel by its nearest palette
      colour, so what is reported is exactly what can be printed.
    """

    name = "AdversarialPatch"
    needs = Capability.GRADIENTS

    def __init__(self, patch_size: tuple[int, int] | float = 0.1, steps: int = 300, lr: float = 0.05,
                 target: int | None = None, scale: tuple[float, float] = (0.9, 1.1), rotation: float = 15.0,
                 batch_size: int = 64, eval_fraction: float = 0.2, eval_placements: int = 4,
                 seed: int | None = 0, tv_weight: float = 0.0, palette: Any = None, nps_weight: float = 0.0,
                 snap_to_palette: bool = False) -> None:
        if isinstance(patch_size, tuple):
            if len(patch_size) != 2 or any(not isinstance(v, int) or v < 1 for v in patch_size):
                raise InputError("patch_size", patch_size, "(height, width) in pixels, or a fraction in (0, 1)")
        elif not (isinstance(patch_size, float) and 0 < patch_size < 1):
            raise InputError("patch_size", patch_size, "(height, width) in pixels, or a fraction in (0, 1)")
        for arg, val in (("steps", steps), ("batch_size", batch_size), ("eval_placements", eval_placements)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise InputError(arg, val, "a positive integer")
        if not lr > 0:
            raise InputError("lr", lr, "a positive learning rate")
        if target is not None and (not isinstance(target, int) or target < 0):
            raise InputError("target", target, "a class index or None")
        if not 0 <= rotation <= 180:
            raise InputError("rotation", rotation, "degrees in [0, 180]")
        if not 0 < eval_fraction < 1:
            raise InputError("eval_fraction", eval_fraction, "a fraction in (0, 1)")
        for arg, w in (("tv_weight", tv_weight), ("nps_weight", nps_weight)):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise InputError(arg, w, "a finite weight >= 0")
        self.palette = _check_palette(palette)
        if (nps_weight > 0 or snap_to_palette) and self.palette is None:
            raise InputError("palette", None, "a (K, C) tensor of printable colours when nps_weight > 0 or "
                                              "snap_to_palette is set")
        self.tv_weight, self.nps_weight, self.snap_to_palette = float(tv_weight), float(nps_weight), snap_to_palette
        self.patch_size = patch_size
        self.steps, self.lr, self.target = steps, float(lr), target
        self.scale = _check_range("scale", scale)
        self.rotation = float(rotation)
        self.batch_size, self.eval_fraction, self.eval_placements = batch_size, eval_fraction, eval_placements
        self.seed = seed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    # --- public API --------------------------------------------------------------------------------
    def fit(self, model: Any, x: Any, y: Any, *, x_eval: Any = None, y_eval: Any = None) -> PatchResult:
        m = wrap(model)
        m.require(self.needs, self.name)
        xt = self._images(check_inputs(x, m.bounds, argument="x", device=m.device), "x")
        yt = check_labels(y, xt.shape[0], m.num_classes, argument="y", device=m.device)
        gen_state = torch.random.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if m.device.type == "cuda" else None
        if self.seed is not None:
            torch.manual_seed(self.seed)
        try:
            if x_eval is None:
                if y_eval is not None:
                    raise InputError("y_eval", "labels without x_eval", "both x_eval and y_eval, or neither")
                perm = torch.randperm(xt.shape[0], device=xt.device)
                n_eval = max(1, round(self.eval_fraction * xt.shape[0]))
                if n_eval >= xt.shape[0]:
                    raise InputError("x", f"{xt.shape[0]} image(s)", "at least 2 (some are held out for evaluation)")
                xe, ye = xt[perm[:n_eval]], yt[perm[:n_eval]]
                xt, yt = xt[perm[n_eval:]], yt[perm[n_eval:]]
            else:
                xe = self._images(check_inputs(x_eval, m.bounds, argument="x_eval", device=m.device), "x_eval")
                ye = check_labels(y_eval, xe.shape[0], m.num_classes, argument="y_eval", device=m.device)
                if xe.shape[1:] != xt.shape[1:]:
                    raise InputError("x_eval", f"shape {tuple(xe.shape[1:])}", f"images like x, {tuple(xt.shape[1:])}")
            if self.target is not None:
                n_classes = m.infer_num_classes(xt)
                if self.target >= n_classes:
                    raise InputError("target", self.target, f"a class in [0, {n_classes - 1}]")
            palette = self._palette_for(xt, m.bounds)
            patch, losses = self._train(m, xt, yt, palette)
            if self.snap_to_palette and palette is not None:
                patch = snap(patch, palette)
            rate, clean = self._evaluate(m, patch, xe, ye)
        finally:
            torch.random.set_rng_state(gen_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
        nps = None if palette is None else float(non_printability(patch, palette))
        return PatchResult(patch.detach(), rate, clean, self.target, int(xe.shape[0]), losses,
                           float(total_variation(patch)), nps)

    def apply(self, x: Any, patch: Tensor, locations: Any = None) -> Tensor:
        """Paste ``patch`` (C, h, w) onto every image at ``locations`` (N, 2) top-left (row, col) corners,
        or at random corners that keep it fully inside the image. Nothing else changes."""
        xt = self._images(check_inputs(x, None, argument="x"), "x")
        p = patch.to(xt.device, xt.dtype)
        n, c, hh, ww = xt.shape
        if p.dim() != 3 or p.shape[0] != c or p.shape[1] > hh or p.shape[2] > ww:
            raise InputError("patch", f"shape {tuple(p.shape)}", f"(C={c}, h<={hh}, w<={ww})")
        ph, pw = p.shape[1], p.shape[2]
        if locations is None:
            r0 = torch.randint(0, hh - ph + 1, (n,), device=xt.device)
            c0 = torch.randint(0, ww - pw + 1, (n,), device=xt.device)
        else:
            loc = torch.as_tensor(locations, device=xt.device).long().reshape(-1, 2)
            if loc.shape[0] != n:
                raise InputError("locations", f"{loc.shape[0]} corners", f"{n}, one (row, col) per image")
            r0, c0 = loc[:, 0], loc[:, 1]
            if bool((r0 < 0).any() | (c0 < 0).any() | (r0 > hh - ph).any() | (c0 > ww - pw).any()):
                raise InputError("locations", "a corner that puts the patch outside the image",
                                 f"rows in [0, {hh - ph}] and columns in [0, {ww - pw}]")
        rows = torch.arange(hh, device=xt.device)[None, :] - r0[:, None]  # (N, H) row inside the patch
        cols = torch.arange(ww, device=xt.device)[None, :] - c0[:, None]
        inside = ((rows >= 0) & (rows < ph))[:, :, None] & ((cols >= 0) & (cols < pw))[:, None, :]
        rr, cc = rows.clamp(0, ph - 1), cols.clamp(0, pw - 1)
        pasted = p[:, rr[:, :, None], cc[:, None, :]].permute(1, 0, 2, 3)  # (N, C, H, W)
        return torch.where(inside.unsqueeze(1), pasted, xt)

    # --- internals --------------------------------------------------------------------------------
    @staticmethod
    def _images(x: Tensor, argument: str) -> Tensor:
        if x.dim() != 4:
            raise InputError(argument, f"shape {tuple(x.shape)}", "images (N, C, H, W): a patch needs a picture")
        return x

    def _size(self, x: Tensor) -> tuple[int, int]:
        hh, ww = x.shape[2], x.shape[3]
        if isinstance(self.patch_size, tuple):
            ph, pw = self.patch_size
            if ph > hh or pw > ww:
                raise InputError("patch_size", self.patch_size, f"at most the image size ({hh}, {ww})")
            return ph, pw
        side = max(1, round(math.sqrt(self.patch_size * hh * ww)))
        return min(side, hh), min(side, ww)

    def _loss(self, scores: Tensor, y: Tensor) -> Tensor:
        if self.target is not None:
            return F.cross_entropy(scores, torch.full_like(y, self.target))
        # Untargeted: push the true class's log-probability down (maximise cross-entropy).
        return scores.log_softmax(dim=1).gather(1, y[:, None]).mean()

    def _palette_for(self, x: Tensor, bounds: tuple[float, float]) -> Tensor | None:
        if self.palette is None:
            return None
        if bool((self.palette < bounds[0]).any() | (self.palette > bounds[1]).any()):
            raise InputError("palette", f"colours in [{float(self.palette.min()):g}, {float(self.palette.max()):g}]",
                             f"colours inside the model's input bounds {tuple(bounds)}")
        if self.palette.shape[1] != x.shape[1]:
            raise InputError("palette", f"colours with {self.palette.shape[1]} channel(s)",
                             f"{x.shape[1]} channel(s), like the images")
        return self.palette.to(x.device, x.dtype)

    def _train(self, m: Model, x: Tensor, y: Tensor, palette: Tensor | None) -> tuple[Tensor, list[float]]:
        lo, hi = m.bounds
        ph, pw = self._size(x)
        grad_model = m.adaptive()
        patch = (torch.rand(x.shape[1], ph, pw, device=x.device) * (hi - lo) + lo).requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=self.lr * (hi - lo))
        losses: list[float] = []
        for _ in range(self.steps):
            idx = torch.randint(0, x.shape[0], (min(self.batch_size, x.shape[0]),), device=x.device)
            xb, yb = x[idx], y[idx]
            loss = self._loss(grad_model.scores(self._transform(xb, patch)), yb)
            if self.tv_weight > 0:
                loss = loss + self.tv_weight * total_variation(patch)
            if self.nps_weight > 0 and palette is not None:
                loss = loss + self.nps_weight * non_printability(patch, palette)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                patch.clamp_(lo, hi)  # printable: every value a real pixel value
            losses.append(float(loss.detach()))
        return patch.detach(), losses

    def _transform(self, x: Tensor, patch: Tensor) -> Tensor:
        """Differentiable placement with a random scale, rotation and position per image (EOT)."""
        n, _, hh, ww = x.shape
        ph, pw = patch.shape[1], patch.shape[2]
        dev, dt = x.device, x.dtype
        s = torch.empty(n, device=dev, dtype=dt).uniform_(*self.scale)
        ang = torch.empty(n, device=dev, dtype=dt).uniform_(-self.rotation, self.rotation) * math.pi / 180
        # Centre positions that keep the (scaled, unrotated) patch inside the image where possible.
        half_h, half_w = (s * ph / 2).clamp_max(hh / 2), (s * pw / 2).clamp_max(ww / 2)
        cy = half_h + torch.rand(n, device=dev, dtype=dt) * (hh - 2 * half_h)
        cx = half_w + torch.rand(n, device=dev, dtype=dt) * (ww - 2 * half_w)
        cos, sin = ang.cos(), ang.sin()
        # Output pixel p (in pixels) = (u * W/2 + W/2, v * H/2 + H/2) for normalised (u, v); the patch
        # coordinate is R(-angle) (p - centre) / (scale * patch_half_size), normalised to [-1, 1].
        ox, oy = ww / 2 - cx, hh / 2 - cy
        ax, ay = ww / 2, hh / 2
        dx, dy = s * pw / 2, s * ph / 2
        theta = torch.stack([
            torch.stack([cos * ax / dx, sin * ay / dx, (cos * ox + sin * oy) / dx], dim=1),
            torch.stack([-sin * ax / dy, cos * ay / dy, (-sin * ox + cos * oy) / dy], dim=1),
        ], dim=1)
        grid = F.affine_grid(theta, [n, patch.shape[0], hh, ww], align_corners=False)
        src = patch.unsqueeze(0).expand(n, -1, -1, -1)
        warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mask = F.grid_sample(torch.ones_like(src[:, :1]), grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)
        return x * (1 - mask) + warped

    def _evaluate(self, m: Model, patch: Tensor, x: Tensor, y: Tensor) -> tuple[float, float]:
        with torch.no_grad():
            clean_pred = m.predict(x)
            clean = float((clean_pred == y).float().mean())
            # Untargeted success counts images the model got right; targeted, images not already the target.
            if self.target is None:
                eligible = clean_pred == y
                tgt = None
            else:
                eligible = y != self.target
                tgt = torch.full_like(y, self.target)
            if not bool(eligible.any()):
                return 0.0, clean
            xe, ye = x[eligible], y[eligible]
            te = None if tgt is None else tgt[eligible]
            hits = []
            for _ in range(self.eval_placements):
                pred = m.predict(self.apply(xe, patch))
                hits.append(is_adversarial(pred, ye, te).float().mean())
            return float(torch.stack(hits).mean()), clean


def total_variation(patch: Tensor) -> Tensor:
    """Mean absolute difference between vertically and horizontally neighbouring pixels of (C, h, w)."""
    parts = [d.abs().mean() for d in (patch[:, 1:, :] - patch[:, :-1, :], patch[:, :, 1:] - patch[:, :, :-1])
             if d.numel() > 0]
    return torch.stack(parts).sum() if parts else patch.sum() * 0


def non_printability(patch: Tensor, palette: Tensor) -> Tensor:
    """Mean Euclidean distance (over channels) from each pixel of (C, h, w) to its nearest palette colour."""
    pixels = patch.flatten(1).T  # (h*w, C)
    return torch.cdist(pixels, palette.to(pixels.dtype)).amin(dim=1).mean()


def snap(patch: Tensor, palette: Tensor) -> Tensor:
    """Replace every pixel by its nearest palette colour."""
    pixels = patch.flatten(1).T
    nearest = torch.cdist(pixels, palette.to(pixels.dtype)).argmin(dim=1)
    return palette.to(pixels.dtype)[nearest].T.reshape(patch.shape)


def _check_palette(palette: Any) -> Tensor | None:
    if palette is None:
        return None
    try:
        p = torch.as_tensor(palette, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise InputError("palette", type(palette).__name__, "a (K, C) array of printable colours") from None
    if p.dim() != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise InputError("palette", f"shape {tuple(p.shape)}", "(K, C): K colours of C channels")
    if not bool(torch.isfinite(p).all()):
        raise InputError("palette", "NaN or Inf values", "finite colours")
    return p

"""Pictures for self-contained reports: the robustness curve as inline SVG, inputs as base64 PNG.

No plotting library: the curve is a handful of SVG elements, so reports need nothing beyond Pillow.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape

import numpy as np
from torch import Tensor

#: SVG canvas and margins, in px
WIDTH, HEIGHT = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 20, 50
#: rendered side of the longer image edge in the example grid, in px (small inputs are upscaled)
IMAGE_SIDE = 96


def robustness_curve_svg(epsilons: Sequence[float], robust: Sequence[float], clean: float, norm: str) -> str:
    """An SVG line chart of robust accuracy against epsilon (the clean accuracy is the point at ε=0)."""
    pts = sorted(zip(epsilons, robust, strict=True))
    if not pts or pts[0][0] > 0:
        pts = [(0.0, clean), *pts]
    xmax = max(e for e, _ in pts) or 1.0
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(e: float) -> float:
        return LEFT + pw * e / xmax

    def sy(a: float) -> float:
        return TOP + ph * (1.0 - a)

    # No xmlns: inline SVG in HTML needs none, and the report must not name any external address.
    parts = [f'<svg width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="robustness curve">',
             f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>']
    for k in range(0, 11, 2):  # horizontal grid every 20 %
        y = sy(k / 10)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{k * 10}%</text>')
    for e, _ in pts:
        parts.append(f'<text x="{sx(e):.1f}" y="{TOP + ph + 16}" font-size="11" text-anchor="middle">{e:.3g}</text>')
    line = " ".join(f"{sx(e):.1f},{sy(a):.1f}" for e, a in pts)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#c0392b" stroke-width="2"/>')
    for e, a in pts:
        parts.append(f'<circle cx="{sx(e):.1f}" cy="{sy(a):.1f}" r="3.5" fill="#c0392b">'
                     f"<title>ε={e:.4g}: {a:.1%}</title></circle>")
    parts.append(f'<text x="{LEFT + pw / 2}" y="{HEIGHT - 10}" font-size="12" text-anchor="middle">'
                 f"ε ({escape(norm)})</text>")
    parts.append(f'<text x="14" y="{TOP + ph / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {TOP + ph / 2})">robust accuracy</text>')
    parts.append("</svg>")
    return "".join(parts)


def is_image(shape: Sequence[int]) -> bool:
    """(C, H, W) with 1 or 3 channels, or (H, W), both sides at least 4 pixels: render as pictures."""
    if len(shape) == 3:
        return shape[0] in (1, 3) and shape[1] >= 4 and shape[2] >= 4
    return len(shape) == 2 and shape[0] >= 4 and shape[1] >= 4


def png_base64(x: Tensor, bounds: tuple[float, float]) -> str:
    """An image tensor (C, H, W) or (H, W) in ``bounds`` as a base64 PNG, upscaled with nearest neighbour."""
    from PIL import Image

    lo, hi = bounds
    arr = x.detach().cpu().float().numpy()
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    img = Image.fromarray((arr * 255).round().astype(np.uint8))
    scale = max(1, IMAGE_SIDE // max(img.size))
    if scale > 1:
        img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def perturbation_png_base64(x: Tensor, x_adv: Tensor) -> str:
    """The perturbation, rescaled so its largest magnitude is full contrast (grey = unchanged)."""
    d = (x_adv - x).detach().cpu().float()
    m = float(d.abs().max()) or 1.0
    return png_base64(d / (2 * m) + 0.5, (0.0, 1.0))


def largest_changes(x: Tensor, x_adv: Tensor, k: int = 5) -> list[tuple[int, float, float]]:
    """For tabular inputs: the ``k`` features that changed most, as (feature, clean value, adversarial value)."""
    flat, flat_adv = x.reshape(-1).cpu(), x_adv.reshape(-1).cpu()
    order = (flat_adv - flat).abs().argsort(descending=True)[:k]
    return [(int(i), float(flat[i]), float(flat_adv[i])) for i in order if float((flat_adv[i] - flat[i]).abs()) > 0]

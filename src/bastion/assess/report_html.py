"""One self-contained HTML file per evaluation: inline SVG curve, base64 images, no external assets."""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

import jinja2

from bastion.assess.plots import (
    is_image,
    largest_changes,
    perturbation_png_base64,
    png_base64,
    robustness_curve_svg,
)

if TYPE_CHECKING:
    from bastion.assess.result import EvaluationResult

TEMPLATE = "report.html.j2"


def _template() -> jinja2.Template:
    text = resources.files("bastion.assess").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
    return env.from_string(text)


def _examples(result: EvaluationResult) -> tuple[bool, list[dict[str, Any]]]:
    shape = result.settings.get("input_shape", [])
    images = is_image(shape)
    bounds = tuple(result.settings.get("bounds", (0.0, 1.0)))
    out = []
    for k in result.examples:
        row = k.to_dict()
        row["distance"] = k.distance
        if images:
            row["clean_png"] = png_base64(k.x, bounds)
            row["adv_png"] = png_base64(k.x_adv, bounds)
            row["delta_png"] = perturbation_png_base64(k.x, k.x_adv)
        else:
            row["changes"] = largest_changes(k.x, k.x_adv)
        out.append(row)
    return images, out


def render_html(result: EvaluationResult) -> str:
    from bastion import __version__

    data = result.to_dict()
    images, examples = _examples(result)
    svg = robustness_curve_svg(result.epsilons, result.robust_accuracy, result.clean_accuracy, result.norm)
    settings = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in data["settings"].items()]
    return _template().render(r=data, svg=svg, images=images, examples=examples, settings=settings,
                              prov=data.get("provenance") or {}, version=__version__,
                              pct=lambda v: f"{100 * v:.1f} %")

"""Drift and attack monitoring: fit a baseline on clean data, test windows of live traffic against it.

    base = bn.monitor.Baseline(alpha=0.01).fit_model(model, x_reference)
    report = base.check_model(model, x_window)      # report.drift, report.fired, report.to_dict()

Monitors: per-feature Kolmogorov-Smirnov on inputs (corrected for the number of features), kernel MMD on the
model's output probabilities, chi-square on the predicted-class mix, a one-sided test for a confidence drop,
and a binomial test for a rise in near-decision-boundary inputs. One ``alpha`` bounds the false-alarm
rate per window for all of them together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.lazy import lazy_members

if TYPE_CHECKING:
    from bastion.monitor.baseline import MONITORS, Baseline, StreamMonitor, WindowReport, model_probabilities
    from bastion.monitor.drift import KSDrift, MMDDrift, combine_p_values
    from bastion.monitor.outputs import (
        ConfidenceDrop,
        NearBoundaryRate,
        PredictionShift,
        as_probabilities,
        margins,
    )
    from bastion.monitor.result import DriftResult

# Imported on first use: incidents and alerts (bastion.monitor.alerts) are read by commands that must not
# pay for torch (seconds) to list a table.
_WHERE = {"MONITORS": "baseline", "Baseline": "baseline", "StreamMonitor": "baseline", "WindowReport": "baseline",
          "model_probabilities": "baseline", "KSDrift": "drift", "MMDDrift": "drift", "combine_p_values": "drift",
          "ConfidenceDrop": "outputs", "NearBoundaryRate": "outputs", "PredictionShift": "outputs",
          "as_probabilities": "outputs", "margins": "outputs", "DriftResult": "result"}


__getattr__ = lazy_members("bastion.monitor", _WHERE, globals())


__all__ = [
    "MONITORS",
    "Baseline",
    "ConfidenceDrop",
    "DriftResult",
    "KSDrift",
    "MMDDrift",
    "NearBoundaryRate",
    "PredictionShift",
    "StreamMonitor",
    "WindowReport",
    "as_probabilities",
    "combine_p_values",
    "margins",
    "model_probabilities",
]

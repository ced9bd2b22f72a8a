"""Margins for statistical assertions, derived from the number of examples.

A rate measured on n examples moves by about sqrt(p(1-p)/n) when floating-point details change which
borderline examples an attack breaks (another CPU, another BLAS). A threshold closer than a few of those
standard errors is a coin toss; these helpers keep every such assertion several standard errors wide.
"""

from __future__ import annotations

import math

#: standard errors of slack: a rate this far off on another machine is a real regression, not noise
Z = 4.0


def binomial_margin(n: int, p: float = 0.5, z: float = Z) -> float:
    """``z`` standard errors of a rate ``p`` estimated from ``n`` examples (p = 0.5 is the widest)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    return z * math.sqrt(p * (1.0 - p) / n)


def paired_margin(n: int, z: float = Z) -> float:
    """Slack for the difference of two rates measured on the same ``n`` examples (two independent errors)."""
    return binomial_margin(n, z=z) * math.sqrt(2.0)

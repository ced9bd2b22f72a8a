"""What every monitor returns: one plain record per test of a window against its baseline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DriftResult:
    """The verdict of one monitor on one window of traffic.

    ``drift`` is the decision at the monitor's significance level ``alpha``: under no change, a window is
    flagged with probability at most ``alpha`` (per window, not per feature: multiple tests are corrected).
    """

    monitor: str
    drift: bool
    p_value: float
    statistic: float
    alpha: float
    n_window: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

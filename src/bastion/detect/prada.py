"""PRADA: per-client detection of model-extraction query streams (Juuti et al., 2019).

Natural queries are spread the way natural data is, so the distance from each new query to the nearest
query the same client sent before is roughly normally distributed. Extraction attacks that synthesise
their queries (Jacobian-based augmentation, small steps around seed points, line searches towards a
decision boundary) produce many near-identical small distances next to a few large ones, a clearly
non-normal distribution. PRADA keeps, per client, the minimum L2 distance of every query to that
client's earlier queries and raises an alarm when the Shapiro-Wilk statistic W of those distances falls
below ``threshold``.

Known limit (stated by the authors and by Orekondy et al.): an attacker who sends natural-looking data
(Knockoff Nets with a public data set) is not flagged; pair PRADA with per-key query budgets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from torch import Tensor

from bastion.errors import InputError

#: the Shapiro-Wilk approximation scipy uses is specified up to this many samples
_SHAPIRO_MAX = 5000


@dataclass
class _ClientState:
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    size: int = 0
    distances: deque[float] = field(default_factory=lambda: deque(maxlen=_SHAPIRO_MAX))
    seen: int = 0
    alarm: bool = False


class PRADA:
    """Per-client extraction detector: ``update(client, x)`` returns True once the client's stream alarms.

    ``threshold``: alarm when W < threshold (Juuti et al. tuned 0.87-0.96 per model; 0.9 is a middle value).
    ``min_queries``: W is only judged once a client has this many distances (W is meaningless on a few).
    ``max_history``: earlier queries kept per client (oldest forgotten first) to bound memory and time.
    An alarm is sticky until :meth:`reset`.
    """

    def __init__(self, threshold: float = 0.9, min_queries: int = 100, max_history: int = 10_000) -> None:
        if not 0.0 < threshold < 1.0:
            raise InputError("threshold", threshold, "a Shapiro-Wilk W in (0, 1), e.g. 0.9")
        if isinstance(min_queries, bool) or not isinstance(min_queries, int) or min_queries < 3:
            raise InputError("min_queries", min_queries, "an integer >= 3 (Shapiro-Wilk needs at least 3 values)")
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 2:
            raise InputError("max_history", max_history, "an integer >= 2")
        self.threshold = threshold
        self.min_queries = min_queries
        self.max_history = max_history
        self._clients: dict[str, _ClientState] = {}

    def _rows(self, x: Tensor | np.ndarray) -> np.ndarray:
        arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
        if arr.ndim == 0 or arr.size == 0:
            raise InputError("x", f"shape {arr.shape}", "one query or a batch of queries (N, ...)")
        if not np.issubdtype(arr.dtype, np.number):
            raise InputError("x", f"dtype {arr.dtype}", "numeric queries")
        rows = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
        if not np.isfinite(rows).all():
            raise InputError("x", "values with NaN or inf", "finite queries")
        return rows.astype(np.float64)

    def update(self, client: str, x: Tensor | np.ndarray) -> bool:
        """Record queries ``x`` (one query of any shape is a 1-D vector; a batch is (N, ...)) from ``client``.

        Queries of a batch are taken in order, each compared with everything the client sent before it.
        Returns whether the client is (now or already) in alarm.
        """
        rows = self._rows(x)
        state = self._clients.setdefault(client, _ClientState())
        if state.size and state.history.shape[1] != rows.shape[1]:
            raise InputError("x", f"queries of {rows.shape[1]} values",
                             f"the {state.history.shape[1]} values per query this client sent before")
        for row in rows:
            if state.size:
                seen = state.history[:state.size]
                state.distances.append(float(np.sqrt(((seen - row) ** 2).sum(axis=1)).min()))
            self._remember(state, row)
            state.seen += 1
        if not state.alarm and state.seen - 1 >= self.min_queries:
            state.alarm = self._w(state) < self.threshold
        return state.alarm

    def _remember(self, state: _ClientState, row: np.ndarray) -> None:
        if state.size == 0 and state.history.shape[1] != row.shape[0]:
            state.history = np.zeros((16, row.shape[0]))
        if state.size == self.max_history:
            # forget the oldest query: a sliding window keeps memory and time per query bounded
            state.history[:-1] = state.history[1:].copy()
            state.size -= 1
        elif state.size == state.history.shape[0]:
            grown = np.zeros((min(self.max_history, 2 * state.size), row.shape[0]))
            grown[:state.size] = state.history[:state.size]
            state.history = grown
        state.history[state.size] = row
        state.size += 1

    def _w(self, state: _ClientState) -> float:
        d = np.asarray(state.distances)
        if d.size < 3 or np.ptp(d) == 0.0:
            # identical distances (e.g. a fixed-step grid walk) are as far from normal as data can be
            return 0.0 if d.size >= 3 else 1.0
        return float(stats.shapiro(d).statistic)

    def score(self, client: str) -> float:
        """Shapiro-Wilk W of the client's minimum distances (1.0 before there are enough to judge)."""
        state = self._clients.get(client)
        if state is None or state.seen - 1 < self.min_queries:
            return 1.0
        return self._w(state)

    def queries(self, client: str) -> int:
        """Queries seen from ``client`` since its last reset."""
        state = self._clients.get(client)
        return 0 if state is None else state.seen

    def reset(self, client: str) -> None:
        """Forget everything about ``client`` (a new key, or after an incident was handled)."""
        self._clients.pop(client, None)

    def clients(self) -> list[str]:
        return sorted(self._clients)


__all__ = ["PRADA"]

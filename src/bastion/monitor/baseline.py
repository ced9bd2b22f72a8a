"""A model's baseline at promotion time, and the check of a window of live traffic against it.

Five monitors share one false-alarm budget: each runs at ``alpha / 5`` (Bonferroni), so a window of clean
traffic raises any alarm with probability at most ``alpha``, whatever the monitors' dependence.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.atomic import write_bytes_atomic
from bastion.errors import InputError
from bastion.monitor._checks import as_rows, check_alpha, require_fitted
from bastion.monitor.drift import KSDrift, MMDDrift
from bastion.monitor.outputs import ConfidenceDrop, NearBoundaryRate, PredictionShift, as_probabilities
from bastion.monitor.result import DriftResult

MONITORS = ("inputs", "outputs", "predictions", "confidence", "boundary")
_FORMAT = "bastion-monitor-baseline/1"


@dataclass(frozen=True)
class WindowReport:
    """Every monitor's verdict on one window; ``drift`` when any of them fired."""

    results: tuple[DriftResult, ...]
    alpha: float

    @property
    def drift(self) -> bool:
        return any(r.drift for r in self.results)

    @property
    def fired(self) -> list[str]:
        return [r.monitor for r in self.results if r.drift]

    def to_dict(self) -> dict[str, Any]:
        return {"drift": self.drift, "fired": self.fired, "alpha": self.alpha,
                "monitors": [r.to_dict() for r in self.results]}


def model_probabilities(model: Any, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities from anything ``bn.wrap`` accepts, without building a graph."""
    from bastion.core import wrap

    m = wrap(model)
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(m.scores(x[i:i + batch_size]).detach().float().cpu().numpy())
    return as_probabilities(np.concatenate(outs), "model scores")


class Baseline:
    """Reference distributions of a model's inputs and outputs, and the tests of new windows against them.

    ``fit(reference_inputs, reference_scores)`` learns from clean data (scores: the model's logits or
    probabilities on it; ``fit_model`` computes them). ``check(window_inputs, window_scores)`` returns a
    :class:`WindowReport`. The output monitors use the model's class probabilities as its feature space.
    """

    def __init__(self, alpha: float = 0.01, monitors: tuple[str, ...] = MONITORS, n_permutations: int = 200,
                 seed: int = 0) -> None:
        self.alpha = alpha
        self.monitors = monitors
        self.n_permutations = n_permutations
        self.seed = seed

    def _build(self) -> dict[str, Any]:
        check_alpha(self.alpha)
        unknown = sorted(set(self.monitors) - set(MONITORS))
        if unknown or not self.monitors:
            raise InputError("monitors", list(self.monitors), f"a non-empty subset of {list(MONITORS)}")
        each = self.alpha / len(self.monitors)
        make = {"inputs": lambda: KSDrift(each), "outputs": lambda: MMDDrift(each, self.n_permutations, seed=self.seed),
                "predictions": lambda: PredictionShift(each), "confidence": lambda: ConfidenceDrop(each),
                "boundary": lambda: NearBoundaryRate(each)}
        return {name: make[name]() for name in self.monitors}

    def fit(self, reference_inputs: Any, reference_scores: Any) -> Baseline:
        x = as_rows(reference_inputs, "reference_inputs", min_rows=20)
        probs = as_probabilities(reference_scores, "reference_scores")
        if len(probs) != len(x):
            raise InputError("reference_scores", f"{len(probs)} rows", f"{len(x)}, one per reference input")
        self.monitors_ = self._build()
        for name, mon in self.monitors_.items():
            mon.fit(x if name == "inputs" else probs)
        self.reference_inputs_, self.reference_probs_ = x, probs
        return self

    def fit_model(self, model: Any, reference_inputs: Any) -> Baseline:
        x = torch.as_tensor(np.asarray(reference_inputs, dtype=np.float32))
        return self.fit(x.reshape(len(x), -1).numpy(), model_probabilities(model, x))

    def check(self, window_inputs: Any, window_scores: Any) -> WindowReport:
        require_fitted(self, "monitors_")
        x = as_rows(window_inputs, "window_inputs", width=self.reference_inputs_.shape[1])
        probs = as_probabilities(window_scores, "window_scores")
        if len(probs) != len(x):
            raise InputError("window_scores", f"{len(probs)} rows", f"{len(x)}, one per window input")
        # Named by role ("inputs", "outputs", ...) rather than by test ("ks", "mmd"): the role is what a playbook
        # or an operator reacts to; the test stays in the details.
        results = tuple(replace(r, monitor=name, details={**r.details, "test": r.monitor})
                        for name, r in ((name, mon.test(x if name == "inputs" else probs))
                                        for name, mon in self.monitors_.items()))
        return WindowReport(results, self.alpha)

    def check_model(self, model: Any, window_inputs: Any) -> WindowReport:
        x = torch.as_tensor(np.asarray(window_inputs, dtype=np.float32))
        return self.check(x.reshape(len(x), -1).numpy(), model_probabilities(model, x))

    def save(self, path: str | Path) -> Path:
        """Write the reference data and settings to one .npz (no pickles), atomically."""
        require_fitted(self, "monitors_")
        path = Path(path)
        meta = {"format": _FORMAT, "alpha": self.alpha, "monitors": list(self.monitors),
                "n_permutations": self.n_permutations, "seed": self.seed}
        buf = io.BytesIO()
        np.savez(buf, inputs=self.reference_inputs_, probs=self.reference_probs_,
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        write_bytes_atomic(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                inputs, probs = data["inputs"], data["probs"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise InputError("baseline", str(path), f"a baseline written by Baseline.save ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise InputError("baseline", str(path), f"a file in format {_FORMAT}")
        base = cls(alpha=float(meta["alpha"]), monitors=tuple(meta["monitors"]),
                   n_permutations=int(meta["n_permutations"]), seed=int(meta["seed"]))
        return base.fit(inputs, probs)


class StreamMonitor:
    """Collects live traffic into tumbling windows and checks each full window against a baseline."""

    def __init__(self, baseline: Baseline, window: int = 200) -> None:
        if int(window) < 20:
            raise InputError("window", window, "at least 20 requests per window")
        self.baseline = baseline
        self.window = int(window)
        self._x: list[np.ndarray] = []
        self._p: list[np.ndarray] = []
        self.history: list[WindowReport] = []

    def update(self, inputs: Any, scores: Any) -> WindowReport | None:
        """Add a batch of requests; return the report of the window it completed, if any."""
        self._x.append(as_rows(inputs, "inputs", min_rows=1))
        self._p.append(as_probabilities(scores))
        if sum(len(a) for a in self._x) < self.window:
            return None
        x, p = np.concatenate(self._x), np.concatenate(self._p)
        self._x, self._p = [x[self.window:]], [p[self.window:]]
        report = self.baseline.check(x[:self.window], p[:self.window])
        self.history.append(report)
        return report

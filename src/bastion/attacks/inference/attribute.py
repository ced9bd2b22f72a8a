"""Attribute inference (MITRE ATLAS AML.T0024.001): fill in a hidden sensitive column of a training record.

The attacker knows every column of a record but one, and the record's label; they try each candidate
value of the hidden column and keep the one under which the model is most confident in the known label
(Fredrikson et al. 2014; Yeom et al. 2018), weighted by how likely the value is given the other columns
(an imputation model fitted on the attacker's population: the model's answers are then evidence on top of
what the distribution already says). A leak is only a leak if
it beats what the data distribution alone gives away, so the result compares the attack with two
baselines fitted on the attacker's population data: the most frequent value, and a classifier predicting
the column from the other columns. ``advantage`` is the attack's accuracy minus the better baseline's.

Continuous columns are cut into ``bins`` quantile bins (of the population); the attack then names a bin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from bastion.attacks.inference._scores import probabilities
from bastion.core.adapters import Capability, wrap
from bastion.errors import InputError

#: a column with at most this many distinct values is treated as categorical
MAX_CATEGORIES = 10


@dataclass
class AttributeResult:
    column: int
    candidates: list[float]
    attack_accuracy: float
    majority_baseline: float
    distribution_baseline: float
    queries: int
    n: int

    @property
    def advantage(self) -> float:
        return self.attack_accuracy - max(self.majority_baseline, self.distribution_baseline)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "candidates": self.candidates, "attack_accuracy": self.attack_accuracy,
                "majority_baseline": self.majority_baseline, "distribution_baseline": self.distribution_baseline,
                "advantage": self.advantage, "queries": self.queries, "n": self.n}


def _bins(column: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate values and bin edges: the distinct values if few, else quantile-bin medians."""
    values = np.unique(column)
    if values.size <= MAX_CATEGORIES:
        edges = (values[1:] + values[:-1]) / 2
        return values, edges
    edges = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]))
    assign = np.digitize(column, edges)
    centres = np.array([np.median(column[assign == b]) for b in range(edges.size + 1)])
    return centres, edges


def attribute_inference(model: Any, x: Tensor, y: Tensor, column: int, population: tuple[Tensor, Tensor],
                        bins: int = 4) -> AttributeResult:
    """Infer column ``column`` of tabular records ``x`` (N, d) with labels ``y`` through ``model``.

    ``population``: records the attacker has (not the targets), for the value prior and the baselines.
    """
    from sklearn.linear_model import LogisticRegression

    target = wrap(model)
    target.require(Capability.SCORES, "attribute inference")
    if x.dim() != 2 or not 0 <= column < x.shape[1]:
        raise InputError("column", column, f"a column index of tabular inputs (N, d); inputs have shape {tuple(x.shape)}")
    px, _ = population
    if px.dim() != 2 or px.shape[1] != x.shape[1] or px.shape[0] < 2:
        raise InputError("population", tuple(px.shape), f"at least 2 records of {x.shape[1]} columns")
    pop_col = px[:, column].double().numpy()
    candidates, edges = _bins(pop_col, bins)
    truth = np.digitize(x[:, column].double().numpy(), edges)
    pop_bins = np.digitize(pop_col, edges)
    prior = np.bincount(pop_bins, minlength=candidates.size) / pop_bins.size
    others = np.delete(px.double().numpy(), column, axis=1)
    target_others = np.delete(x.double().numpy(), column, axis=1)
    log_prior = np.tile(np.log(np.maximum(prior, 1e-12)), (x.shape[0], 1))
    dist = majority = float((truth == prior.argmax()).mean())
    if np.unique(pop_bins).size > 1:
        clf = LogisticRegression(max_iter=2000).fit(others, pop_bins)
        dist = float((clf.predict(target_others) == truth).mean())
        log_prior[:, clf.classes_] = np.log(np.maximum(clf.predict_proba(target_others), 1e-12))
        missing = np.setdiff1d(np.arange(candidates.size), clf.classes_)
        log_prior[:, missing] = np.log(1e-12)
    before = target.queries
    scores = log_prior.copy()
    for k, v in enumerate(candidates):
        xv = x.clone().float()
        xv[:, column] = float(v)
        p = probabilities(target, xv).gather(1, y.long()[:, None]).squeeze(1).double().numpy()
        scores[:, k] += np.log(np.maximum(p, 1e-30))
    guess = scores.argmax(1)
    return AttributeResult(column=column, candidates=[float(c) for c in candidates],
                           attack_accuracy=float((guess == truth).mean()), majority_baseline=majority,
                           distribution_baseline=dist, queries=target.queries - before, n=int(x.shape[0]))


__all__ = ["AttributeResult", "attribute_inference"]

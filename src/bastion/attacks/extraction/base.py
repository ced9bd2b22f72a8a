"""What every extraction attack reports: the copy, the queries it cost, and how faithful it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from bastion.attacks.inference._scores import labels as predicted_labels
from bastion.core.adapters import Model, wrap
from bastion.errors import InputError


@dataclass
class BudgetPoint:
    """The copy's quality after ``queries`` victim queries."""

    queries: int
    fidelity: float | None
    accuracy: float | None
    #: fidelity of each member when the copy is an ensemble (None for a single copy)
    member_fidelity: list[float | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"queries": self.queries, "fidelity": self.fidelity, "accuracy": self.accuracy}
        if self.member_fidelity is not None:
            out["member_fidelity"] = list(self.member_fidelity)
        return out


@dataclass
class ExtractionResult:
    """``copy`` is a PyTorch module returning logits; ``curve`` has one point per budget."""

    attack: str
    copy: nn.Module
    queries: int
    fidelity: float | None = None
    accuracy: float | None = None
    victim_accuracy: float | None = None
    curve: list[BudgetPoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "queries": self.queries, "fidelity": self.fidelity,
                "accuracy": self.accuracy, "victim_accuracy": self.victim_accuracy,
                "curve": [p.to_dict() for p in self.curve], "notes": list(self.notes)}


def agreement(copy: nn.Module | Model, victim_labels: Tensor, x: Tensor) -> float:
    """Fraction of ``x`` on which ``copy`` predicts ``victim_labels`` (fidelity, Jagielski et al.)."""
    pred = predicted_labels(wrap(copy), x)
    return float((pred == victim_labels.cpu()).double().mean())


class Evaluation:
    """Held-out inputs (and optionally labels) to measure a copy; the victim's answers are fetched once.

    The victim queries spent here are an auditor's, not the attacker's: they are subtracted from the
    count the attack reports.
    """

    def __init__(self, victim: Model, x: Tensor | None, y: Tensor | None = None) -> None:
        self.x = x
        self.y = y
        self.victim_labels: Tensor | None = None
        if x is not None:
            if y is not None and y.shape[0] != x.shape[0]:
                raise InputError("eval labels", f"{y.shape[0]} labels", f"{x.shape[0]}, one per held-out input")
            before = victim.queries
            self.victim_labels = predicted_labels(victim, x)
            victim.queries = before

    def measure(self, copy: nn.Module) -> tuple[float | None, float | None]:
        if self.x is None or self.victim_labels is None:
            return None, None
        fid = agreement(copy, self.victim_labels, self.x)
        acc = agreement(copy, self.y, self.x) if self.y is not None else None
        return fid, acc

    def victim_accuracy(self) -> float | None:
        if self.y is None or self.victim_labels is None:
            return None
        return float((self.victim_labels == self.y.cpu()).double().mean())


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def as_float(x: Tensor) -> Tensor:
    return x.detach().float().cpu()


__all__ = ["BudgetPoint", "Evaluation", "ExtractionResult", "agreement"]

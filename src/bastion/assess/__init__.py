"""Robustness evaluation and reports: ``bastion.evaluate`` and what it returns.

    res = bastion.evaluate(model, x, y, norm="linf", epsilons=[0.05, 0.1])
    res.robust_accuracy, res.findings
    res.save("report/")  # report.html (self-contained), report.md, result.json
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.lazy import lazy_members

if TYPE_CHECKING:
    from bastion.assess.evaluate import evaluate
    from bastion.assess.result import AttackStats, EvaluationResult, Finding, KeptExample
    from bastion.assess.suites import ATTACK_NAMES, SUITES, AttackSpec, build_attack

__all__ = ["ATTACK_NAMES", "SUITES", "AttackSpec", "AttackStats", "EvaluationResult", "Finding", "KeptExample",
           "build_attack", "evaluate"]

# Imported on first use: `bastion assess --init-policy` and the policy checks need none of torch.
_WHERE = {"evaluate": "evaluate", "AttackStats": "result", "EvaluationResult": "result", "Finding": "result",
          "KeptExample": "result", "ATTACK_NAMES": "suites", "SUITES": "suites", "AttackSpec": "suites",
          "build_attack": "suites"}


__getattr__ = lazy_members("bastion.assess", _WHERE, globals())

"""``bastion assess``: every check that applies to a model, one policy, one verdict, one report.

    from bastion.assess.gate import assess, Policy
    a = assess("model.pt", data="test.npz", policy=Policy.from_file("policy.yaml"))
    a.verdict        # "pass" | "fail" | "error"; a.exit_code 0 | 1 | 2
    write_reports(a, "report/")   # report.html, report.md, result.json, model-card.md
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.lazy import lazy_members

if TYPE_CHECKING:
    from bastion.assess.gate.checks import CATALOGUE, CheckInfo, CheckOutcome
    from bastion.assess.gate.policy import Policy
    from bastion.assess.gate.report import write_reports
    from bastion.assess.gate.runner import BUDGETS, Assessment, Inputs, assess

__all__ = ["BUDGETS", "CATALOGUE", "Assessment", "CheckInfo", "CheckOutcome", "Inputs", "Policy", "assess",
           "write_reports"]

# Imported on first use: writing or reading a policy needs none of torch.
_WHERE = {"CATALOGUE": "checks", "CheckInfo": "checks", "CheckOutcome": "checks", "Policy": "policy",
          "write_reports": "report", "BUDGETS": "runner", "Assessment": "runner", "Inputs": "runner",
          "assess": "runner"}


__getattr__ = lazy_members("bastion.assess.gate", _WHERE, globals())

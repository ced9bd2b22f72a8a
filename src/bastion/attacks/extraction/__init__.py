"""Model extraction (MITRE ATLAS AML.T0024.002, extract ML model): steal a copy through the prediction API.

- :class:`EquationSolving` (Tramèr et al.): exact copies of logistic/softmax regressions in d + 1 queries.
- :class:`KnockoffNets` (Orekondy et al.): a copy trained on the victim's scores for natural queries,
  random or adaptive (gradient bandit) selection.
- :class:`JacobianAugmentation` (Papernot et al.): a substitute from labels only, grown along its gradients.
- :func:`transfer_from_copy`: adversarial examples crafted on the copy, success measured on the victim.

Every attack reports fidelity (agreement with the victim on held-out inputs), accuracy and queries.
"""

from bastion.attacks.extraction.base import BudgetPoint, ExtractionResult, agreement
from bastion.attacks.extraction.equation import EquationSolving, LinearCopy
from bastion.attacks.extraction.jacobian import JacobianAugmentation
from bastion.attacks.extraction.knockoff import KnockoffNets
from bastion.attacks.extraction.transfer import TransferResult, transfer_from_copy

__all__ = ["BudgetPoint", "EquationSolving", "ExtractionResult", "JacobianAugmentation", "KnockoffNets",
           "LinearCopy", "TransferResult", "agreement", "transfer_from_copy"]

"""Inference attacks on a model's training data (MITRE ATLAS AML.T0024.000/.001).

- Membership inference: :class:`LossThreshold`, :class:`ConfidenceThreshold`, :class:`ShadowAttack`
  (Shokri), :class:`LiRA` (online/offline), :class:`LabelOnlyAttack`; results carry AUC, balanced
  accuracy, TPR at 0.1 % and 1 % FPR and the ROC curve.
"""

from bastion.attacks.inference.membership import (
    ConfidenceThreshold,
    LabelOnlyAttack,
    LiRA,
    LossThreshold,
    MembershipAttack,
    ShadowAttack,
)
from bastion.attacks.inference.metrics import MembershipResult, membership_metrics
from bastion.attacks.inference.shadows import ShadowPool, default_trainer, sklearn_trainer, torch_trainer

__all__ = ["ConfidenceThreshold", "LabelOnlyAttack", "LiRA", "LossThreshold", "MembershipAttack",
           "MembershipResult", "ShadowAttack", "ShadowPool", "default_trainer", "membership_metrics",
           "sklearn_trainer", "torch_trainer"]

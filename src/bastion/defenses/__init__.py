"""Hardening (MITRE ATLAS mitigations for AML.T0043, craft adversarial data).

- Adversarial training: :class:`AdversarialBatch` (a per-batch hook for your own loop) and
  :class:`AdversarialTrainer` (turnkey, keeps the most robust checkpoint): PGD-AT, TRADES, FGSM-RS.
- :class:`DefensiveDistillation` (Papernot et al. 2016); known to fall to margin-loss attacks.
- Input transforms that are themselves models, each with an honest ``adaptive()`` view (BPDA for
  non-differentiable transforms, EOT for randomised ones): :class:`BitDepthReduction`,
  :class:`MedianFilter`, :class:`JPEGCompression`, :class:`SpatialSmoothing`, :class:`RandomResizePad`.
- :class:`Ensemble` of any adapters, averaging logits or probabilities.
- Output coarsening (AML.T0024 mitigations): :class:`OutputPolicy`, :func:`apply_output_policy` and the
  wrappers :class:`TopK`, :class:`Rounded`, :class:`LabelOnly`, :class:`ReverseSigmoid`, :class:`NoisyScores`.
"""

from bastion.defenses.coarsening import (
    CoarsenedModel,
    LabelOnly,
    NoisyScores,
    OutputPolicy,
    ReverseSigmoid,
    Rounded,
    TopK,
    apply_output_policy,
)
from bastion.defenses.distillation import DefensiveDistillation
from bastion.defenses.ensemble import Ensemble
from bastion.defenses.inner import maximize, robust_accuracy
from bastion.defenses.trades import trades_loss
from bastion.defenses.training import AdversarialBatch, AdversarialTrainer
from bastion.defenses.transforms import (
    BitDepthReduction,
    InputTransform,
    JPEGCompression,
    MedianFilter,
    RandomResizePad,
    SpatialSmoothing,
    straight_through,
)

__all__ = [
    "AdversarialBatch",
    "AdversarialTrainer",
    "BitDepthReduction",
    "CoarsenedModel",
    "DefensiveDistillation",
    "Ensemble",
    "InputTransform",
    "JPEGCompression",
    "LabelOnly",
    "MedianFilter",
    "NoisyScores",
    "OutputPolicy",
    "RandomResizePad",
    "ReverseSigmoid",
    "Rounded",
    "SpatialSmoothing",
    "TopK",
    "apply_output_policy",
    "maximize",
    "robust_accuracy",
    "straight_through",
    "trades_loss",
]

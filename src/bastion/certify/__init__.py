"""Certification: guarantees that no perturbation within a radius changes a model's decision.

- Randomized smoothing (Cohen et al. 2019), any model, L2: :class:`Smoothed` with ``predict`` and
  ``certify``; :func:`train_with_noise` makes a base model suited to it.
- Interval bound propagation (Gowal et al. 2018), PyTorch networks, L-inf: :func:`ibp_bounds`,
  :func:`ibp_certify`, and certified training with :func:`ibp_train`.
"""

from bastion.certify.ibp import IntervalNetwork, ibp_bounds, ibp_certify
from bastion.certify.ibp_training import IBPSchedule, ibp_loss, ibp_train
from bastion.certify.noise_training import train_with_noise
from bastion.certify.smoothing import ABSTAIN, CertifyResult, Smoothed
from bastion.certify.stats import binomial_pvalue, certified_radius, clopper_pearson_lower

__all__ = [
    "ABSTAIN",
    "CertifyResult",
    "IBPSchedule",
    "IntervalNetwork",
    "Smoothed",
    "binomial_pvalue",
    "certified_radius",
    "clopper_pearson_lower",
    "ibp_bounds",
    "ibp_certify",
    "ibp_loss",
    "ibp_train",
    "train_with_noise",
]

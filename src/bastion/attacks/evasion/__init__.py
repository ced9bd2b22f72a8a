"""Evasion attacks (MITRE ATLAS AML.T0043, craft adversarial data).

White-box (need gradients): FGSM, PGD, APGD, CarliniWagnerL2, DeepFool, FAB, AdversarialPatch.
Black-box: Square (scores), HopSkipJump (labels only), TransferAttack (a surrogate's examples replayed).
"""

from bastion.attacks.evasion.apgd import APGD
from bastion.attacks.evasion.base import (
    Attack,
    AttackResult,
    FixedEpsilonAttack,
    MinimizationAttack,
    autocast,
    is_adversarial,
)
from bastion.attacks.evasion.cw import CarliniWagnerL2
from bastion.attacks.evasion.deepfool import DeepFool
from bastion.attacks.evasion.fab import FAB, FABAtEpsilon
from bastion.attacks.evasion.fgsm import FGSM
from bastion.attacks.evasion.hopskipjump import HopSkipJump
from bastion.attacks.evasion.patch import AdversarialPatch
from bastion.attacks.evasion.pgd import PGD
from bastion.attacks.evasion.square import Square
from bastion.attacks.evasion.transfer import TransferAttack

__all__ = [
    "APGD",
    "FAB",
    "FGSM",
    "PGD",
    "AdversarialPatch",
    "Attack",
    "AttackResult",
    "CarliniWagnerL2",
    "DeepFool",
    "FABAtEpsilon",
    "FixedEpsilonAttack",
    "HopSkipJump",
    "MinimizationAttack",
    "Square",
    "TransferAttack",
    "autocast",
    "is_adversarial",
]

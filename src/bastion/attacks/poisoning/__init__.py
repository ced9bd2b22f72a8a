"""Poisoning attacks to test defences with (MITRE ATLAS AML.T0020, poison training data).

    from bastion.attacks.poisoning import BadNets
    res = BadNets(target=0, rate=0.01, size=2)(x_train, y_train)
    res.x, res.y, res.indices                     # the poisoned set and where the poison is
    res.attack_success_rate(model, x_test, y_test)  # stamped non-target inputs read as the target
"""

from bastion.attacks.poisoning.base import PoisonResult, attack_success_rate
from bastion.attacks.poisoning.label_flip import LabelFlip
from bastion.attacks.poisoning.triggers import BadNets, Blended, CleanLabel, TabularTrigger

__all__ = ["BadNets", "Blended", "CleanLabel", "LabelFlip", "PoisonResult", "TabularTrigger", "attack_success_rate"]

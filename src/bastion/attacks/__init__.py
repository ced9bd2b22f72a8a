"""Attacks: evasion today; poisoning, extraction, inversion and membership inference to come."""

from bastion.attacks import evasion, extraction, inference, poisoning
from bastion.attacks.evasion import *  # noqa: F403 - the evasion attacks are the public attack API

__all__ = ["evasion", "extraction", "inference", "poisoning", *evasion.__all__]

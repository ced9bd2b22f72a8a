"""Auto-PGD (placeholder: its owner replaces this module)."""

from __future__ import annotations

from bastion.attacks.evasion.base import FixedEpsilonAttack


class APGD(FixedEpsilonAttack):
    name = "APGD"

"""Fast adaptive boundary (placeholder: its owner replaces this module)."""

from __future__ import annotations

from bastion.attacks.evasion.base import MinimizationAttack


class FAB(MinimizationAttack):
    name = "FAB"

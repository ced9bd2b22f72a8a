"""Privacy and IP audit: every leak that applies to a model, measured, gated and reported.

    from bastion.privacy import audit, save
    report = audit(model, (x_train, y_train), (x_holdout, y_holdout), max_mia_auc=0.6)
    save(report, "privacy-report/")

The attacks live in :mod:`bastion.attacks.inference` and :mod:`bastion.attacks.extraction`, the defences
in :mod:`bastion.defenses.coarsening`, :mod:`bastion.defenses.dp` and :mod:`bastion.detect.prada`.
"""

from bastion.privacy.audit import ATLAS, ATTACKS, PrivacyReport, audit, parse_attacks
from bastion.privacy.report import REPORT_FILES, html, markdown, save

__all__ = ["ATLAS", "ATTACKS", "REPORT_FILES", "PrivacyReport", "audit", "html", "markdown", "parse_attacks", "save"]

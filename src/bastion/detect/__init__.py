"""Detectors: inputs, clients and data sets that look like an attack.

Poisoned training records (``fit(model, x, y)``, then ``scores_``/``labels_``, ``score_samples``,
``decision_function``, ``predict``): :class:`Spectre` (robust covariance whitening, per class),
:class:`SpectralSignature`, :class:`ActivationClustering`, :class:`LabelIssues` (cleanlab). Triggered
inputs at inference: :class:`STRIP`. A backdoored model, without its data: :class:`NeuralCleanse`.
"""

from bastion.detect.activation_clustering import ActivationClustering
from bastion.detect.base import PoisonDetector
from bastion.detect.label_issues import LabelIssues
from bastion.detect.neural_cleanse import NeuralCleanse
from bastion.detect.spectral import SpectralSignature
from bastion.detect.spectre import Spectre
from bastion.detect.strip import STRIP

__all__ = ["STRIP", "ActivationClustering", "LabelIssues", "NeuralCleanse", "PoisonDetector", "SpectralSignature",
           "Spectre"]

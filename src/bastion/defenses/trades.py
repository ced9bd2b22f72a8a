"""The TRADES objective (Zhang et al., 2019, "Theoretically Principled Trade-off between Robustness and
Accuracy"): natural cross-entropy plus ``beta`` times the KL divergence between the model's outputs on
the clean input and on the adversarial one, the latter found by maximising that same KL.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

#: the paper's default trade-off on MNIST and CIFAR-10 (1/lambda = 6)
DEFAULT_BETA = 6.0


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float = DEFAULT_BETA) -> Tensor:
    """``CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))``, both averaged over the batch.

    Gradients flow through both terms, as in the reference implementation; the outputs are taken in
    fp32 so the KL is not computed in half precision.
    """
    zc, za = logits_clean.float(), logits_adv.float()
    natural = F.cross_entropy(zc, y)
    robust = F.kl_div(F.log_softmax(za, dim=1), F.softmax(zc, dim=1), reduction="batchmean")
    return natural + beta * robust

"""Membership inference (MITRE ATLAS AML.T0024.000): was this record in the model's training set?

Every attack returns a :class:`~bastion.attacks.inference.metrics.MembershipResult` computed from a
per-record score (higher: more likely a member) on known members and non-members:

- :class:`LossThreshold` and :class:`ConfidenceThreshold` (Yeom et al. 2018; Salem et al. 2019): the
  model's loss on the record, or its confidence; no shadow models.
- :class:`ShadowAttack` (Shokri et al. 2017): an attack classifier trained on shadow models' outputs on
  records they did and did not train on.
- :class:`LiRA` (Carlini et al. 2022): per-record Gaussians of the shadows' logit-scaled confidence
  ``log p_y - log(1 - p_y)``, IN and OUT (online) or OUT only (offline); the score is a likelihood ratio.
- :class:`LabelOnlyAttack` (Choquette-Choo et al. 2021): with labels only, a training record's prediction
  survives more random perturbation than a non-member's.

Members and non-members are used only to measure; the attacks never see which is which. The shadow
population is members and non-members pooled (and any extra data), drawn in random halves, as in the
LiRA paper's evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from bastion.attacks.inference._scores import labels as predicted_labels
from bastion.attacks.inference.metrics import MembershipResult, membership_metrics
from bastion.attacks.inference.shadows import ShadowPool, Trainer, default_trainer, model_logit_confidence
from bastion.core.adapters import Model, wrap
from bastion.errors import InputError

#: below this many IN (or OUT) shadows per record, one global variance is more reliable than per-record ones
#: (Carlini et al., Fig. 6: fixed variance wins with few shadows)
MIN_SHADOWS_PER_RECORD_VARIANCE = 32


def _check_xy(x: Tensor, y: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise InputError(name, type(x).__name__, "torch tensors (inputs, labels)")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InputError(name, f"{x.shape[0]} inputs and {y.shape[0]} labels", "a non-empty set, one label per input")
    return x.float(), y.long()


class MembershipAttack:
    """Base: ``run(model, members, non_members)`` -> result; subclasses implement ``score``."""

    name = "membership"

    def score(self, model: Model, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def prepare(self, model: Model, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor]) -> None:
        """Learn what the attack needs (shadow models) from data that does not reveal membership."""

    def notes(self) -> list[str]:
        return []

    def run(self, model: Any, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor]) -> MembershipResult:
        target = wrap(model)
        xm, ym = _check_xy(*members, name="members")
        xn, yn = _check_xy(*non_members, name="non_members")
        self.prepare(target, (xm, ym), (xn, yn))
        before = target.queries
        s_in = self.score(target, xm, ym)
        s_out = self.score(target, xn, yn)
        return membership_metrics(self.name, s_in, s_out, queries=target.queries - before, notes=self.notes())


class LossThreshold(MembershipAttack):
    """Yeom et al.: members have lower loss. Score = -cross-entropy of the model on the record."""

    name = "loss threshold (Yeom)"

    def score(self, model: Model, x: Tensor, y: Tensor) -> Tensor:
        phi = model_logit_confidence(model, x, y)
        # -CE = log p_y = -log(1 + exp(-phi)): a monotone function of LiRA's statistic, computed stably
        return -torch.nn.functional.softplus(-phi)


class ConfidenceThreshold(MembershipAttack):
    """Salem et al.: members get more confident predictions. Score = the largest class probability."""

    name = "confidence threshold"

    def score(self, model: Model, x: Tensor, y: Tensor) -> Tensor:
        from bastion.attacks.inference._scores import probabilities

        return probabilities(model, x).max(dim=1).values.double()


class _ShadowBased(MembershipAttack):
    def __init__(self, n_shadows: int = 16, trainer: Trainer | None = None, *, shadow_epochs: int = 60,
                 population: tuple[Tensor, Tensor] | None = None, pool: ShadowPool | None = None,
                 seed: int = 0, progress: Callable[[int, int], None] | None = None) -> None:
        self.n_shadows = n_shadows
        self.trainer = trainer
        self.shadow_epochs = shadow_epochs
        self.population = population
        self.pool = pool
        self.seed = seed
        self.progress = progress
        self.pool_: ShadowPool | None = pool

    def prepare(self, model: Model, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor]) -> None:
        if self.pool_ is not None:
            return
        xs, ys = [members[0], non_members[0]], [members[1], non_members[1]]
        if self.population is not None:
            xs.append(self.population[0].float())
            ys.append(self.population[1].long())
        trainer, note = (self.trainer, "shadows: the caller's trainer") if self.trainer is not None \
            else default_trainer(model, self.shadow_epochs)
        self.pool_ = ShadowPool.train(torch.cat(xs), torch.cat(ys), trainer, self.n_shadows, self.seed, note,
                                      self.progress)

    def notes(self) -> list[str]:
        pool = self.pool_
        return [f"{len(pool.models)} shadow models; {pool.notes}"] if pool is not None else []


class LiRA(_ShadowBased):
    """Carlini et al.'s likelihood-ratio attack.

    ``online=True``: shadows that trained on the record (IN) and did not (OUT) give two Gaussians of the
    logit-scaled confidence; score = log N(φ; IN) - log N(φ; OUT). ``online=False``: OUT shadows only,
    score = log Φ((φ - μ_out) / σ_out), one-sided (members are more confident). ``fixed_variance``:
    one variance for all records (None: automatic, when fewer than 32 IN/OUT shadows per record).
    Shadows are trained once and can be shared with :class:`ShadowAttack` through ``pool``.
    """

    def __init__(self, n_shadows: int = 16, trainer: Trainer | None = None, *, online: bool = True,
                 fixed_variance: bool | None = None, **kwargs: Any) -> None:
        super().__init__(n_shadows, trainer, **kwargs)
        self.online = online
        self.fixed_variance = fixed_variance

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"LiRA ({'online' if self.online else 'offline'})"

    def score(self, model: Model, x: Tensor, y: Tensor) -> Tensor:
        pool = self.pool_
        if pool is None:
            raise InputError("LiRA", "no shadow models", "run() (or prepare()) before score()")
        phi = model_logit_confidence(model, x, y).numpy()
        conf = pool.confidences(x, y)
        inside = pool.membership(x)
        n_in = inside.sum(0)
        n_out = (~inside).sum(0)
        fixed = self.fixed_variance if self.fixed_variance is not None else \
            bool(min(n_in.min(), n_out.min()) < MIN_SHADOWS_PER_RECORD_VARIANCE)

        def moments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            counts = mask.sum(0)
            total = np.where(mask, conf, 0.0).sum(0)
            global_mean = float(conf[mask].mean()) if mask.any() else float(conf.mean())
            mean = np.where(counts > 0, total / np.maximum(counts, 1), global_mean)
            resid = np.where(mask, conf - mean[None, :], 0.0)
            if fixed:
                std = np.full(mean.shape, np.sqrt((resid ** 2).sum() / max(1, mask.sum() - 1)))
            else:
                std = np.sqrt((resid ** 2).sum(0) / np.maximum(counts - 1, 1))
            return mean, np.maximum(std, 1e-6)

        mu_out, sd_out = moments(~inside)
        if not self.online:
            return torch.from_numpy(stats.norm.logcdf(phi, mu_out, sd_out))
        mu_in, sd_in = moments(inside)
        ratio = stats.norm.logpdf(phi, mu_in, sd_in) - stats.norm.logpdf(phi, mu_out, sd_out)
        return torch.from_numpy(ratio)

    def notes(self) -> list[str]:
        return [*super().notes(), "variance: " + ("one per record" if self.fixed_variance is False else
                                                  "global when few shadows per record (Carlini et al.)")]


class ShadowAttack(_ShadowBased):
    """Shokri et al.: an attack classifier learns IN vs OUT from shadow models' outputs.

    Features per record: logit-scaled confidence of the true class (the most informative single
    feature, per Carlini et al.), one-hot of the label (class-specific behaviour, Shokri's per-class
    attack models folded into one).
    """

    name = "shadow models (Shokri)"

    def _features(self, phi: np.ndarray, y: Tensor, classes: int) -> np.ndarray:
        onehot = np.eye(classes)[y.numpy().clip(0, classes - 1)]
        return np.c_[phi, onehot]

    def score(self, model: Model, x: Tensor, y: Tensor) -> Tensor:
        from sklearn.ensemble import HistGradientBoostingClassifier

        pool = self.pool_
        if pool is None:
            raise InputError("ShadowAttack", "no shadow models", "run() (or prepare()) before score()")
        classes = int(y.max()) + 1
        if not hasattr(self, "classifier_"):
            inside = pool.membership(x)
            conf = pool.confidences(x, y)
            feats = np.concatenate([self._features(conf[i], y, classes) for i in range(len(pool.models))])
            target = inside.reshape(-1)
            self.classifier_ = HistGradientBoostingClassifier(max_iter=100, random_state=self.seed)
            self.classifier_.fit(feats, target)
            self.classes_ = classes
        phi = model_logit_confidence(model, x, y).numpy()
        proba = self.classifier_.predict_proba(self._features(phi, y, self.classes_))[:, 1]
        return torch.from_numpy(proba)

    def run(self, model: Any, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor]) -> MembershipResult:
        # the attack classifier is fitted on the shadows' view of the whole population, once
        if hasattr(self, "classifier_"):
            del self.classifier_
        xm, ym = _check_xy(*members, name="members")
        xn, yn = _check_xy(*non_members, name="non_members")
        target = wrap(model)
        self.prepare(target, (xm, ym), (xn, yn))
        before = target.queries
        scores = self.score(target, torch.cat([xm, xn]), torch.cat([ym, yn]))
        return membership_metrics(self.name, scores[:len(xm)], scores[len(xm):],
                                  queries=target.queries - before, notes=self.notes())


class LabelOnlyAttack(MembershipAttack):
    """Choquette-Choo et al.: robustness to random noise as a membership signal, from labels alone.

    Score = fraction of ``draws`` Gaussian perturbations at each scale in ``sigmas`` whose predicted label
    is still the true label (0 when the clean record is already misclassified). Costs
    ``1 + draws * len(sigmas)`` queries per record.
    """

    name = "label-only (noise robustness)"

    def __init__(self, sigmas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3), draws: int = 16, seed: int = 0) -> None:
        if not sigmas or any(s <= 0 for s in sigmas):
            raise InputError("sigmas", sigmas, "one or more positive noise scales (in input units)")
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise InputError("draws", draws, "an integer >= 1")
        self.sigmas = tuple(sigmas)
        self.draws = draws
        self.seed = seed

    def score(self, model: Model, x: Tensor, y: Tensor) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        lo, hi = model.bounds
        span = hi - lo
        correct = (predicted_labels(model, x) == y).double()
        survived = torch.zeros(x.shape[0], dtype=torch.float64)
        for sigma in self.sigmas:
            for _ in range(self.draws):
                noisy = (x + sigma * span * torch.randn(x.shape, generator=gen)).clamp(lo, hi)
                survived += (predicted_labels(model, noisy) == y).double()
        return correct * (1.0 + survived) / (1.0 + self.draws * len(self.sigmas))


__all__ = ["ConfidenceThreshold", "LabelOnlyAttack", "LiRA", "LossThreshold", "MembershipAttack", "ShadowAttack"]

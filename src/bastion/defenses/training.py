"""Adversarial training: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019) and fast FGSM with a
random start (Wong et al. 2020), as a per-batch hook for your own loop and as a turnkey trainer.

Your own loop (Opacus-style: Bastion turns the batch adversarial, you keep the optimiser)::

    hook = AdversarialBatch(model, norm="linf", eps=0.2, steps=7, method="pgd")
    for xb, yb in loader:
        loss = hook.loss(xb, yb)          # PGD-AT: CE at the adversarial point; TRADES: the full objective
        opt.zero_grad(); loss.backward(); opt.step()

Turnkey (scikit-learn style)::

    trainer = AdversarialTrainer(method="pgd", eps=0.2, epochs=15).fit(model, x, y)
    trainer.model_, trainer.history_, trainer.best_epoch_

Model mode. The inner maximisation runs with the model in **eval** mode and the training step in the
mode the caller had (train, in the trainer). In train mode every one of the ``k`` attack passes would
fold the statistics of a half-perturbed batch into batch-norm's running averages (``k`` extra momentum
updates per step, none of them on the data the step trains on) and resample dropout, so the attack would
chase a different network at every step. Eval mode makes the attack a fixed function of the input, as
in the TRADES reference code; the training step alone updates batch-norm statistics, on the adversarial
batch it learns from.

Cost. Per batch: ``k`` forward+backward passes to the input only (no parameter gradients), then one
forward+backward+step; no host synchronisation inside the loop (the loss is summed on the device and
read once per epoch). FGSM-RS is ``k = 1``; TRADES needs one more clean forward by construction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.evasion.base import PRECISIONS, autocast
from bastion.core.adapters import TorchModel
from bastion.core.threat import check_epsilons, get_norm
from bastion.core.validation import check_bounds, check_inputs, check_labels
from bastion.defenses.inner import default_step_size, maximize, robust_accuracy
from bastion.defenses.trades import DEFAULT_BETA, trades_loss
from bastion.errors import InputError

METHODS = ("pgd", "trades", "fgsm-rs")
SCHEDULES = ("cyclic", "constant")
OPTIMIZERS = ("adam", "sgd")
#: Wong et al.'s FGSM-RS step: 1.25 eps from a uniform start (larger steps cause catastrophic overfitting)
FGSM_RS_STEP_FACTOR = 1.25
#: the one-cycle schedule peaks this far into training (Wong et al.'s triangle: 0 -> lr -> 0)
CYCLE_PEAK = 0.4
#: default learning rates per optimiser when ``lr`` is not given
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}
SGD_MOMENTUM = 0.9


def _resolve(model: nn.Module | TorchModel, bounds: Any) -> tuple[nn.Module, Callable[[Tensor], Tensor],
                                                                  tuple[float, float]]:
    """The module to train, the function from inputs to logits (preprocessing included) and the bounds."""
    if isinstance(model, TorchModel):
        return model.module, model.scores, (model.bounds if bounds is None else check_bounds(bounds))
    if isinstance(model, nn.Module):
        return model, model, check_bounds((0.0, 1.0) if bounds is None else bounds)
    raise InputError("model", type(model).__name__, "a torch.nn.Module or a bastion TorchModel")


class AdversarialBatch:
    """Turn a batch adversarial for your own training loop.

    ``perturb(x, y)`` returns the adversarial batch (inside the ``eps`` ball and the bounds);
    ``loss(x, y)`` returns the training loss to back-propagate: cross-entropy at the adversarial point for
    ``"pgd"`` and ``"fgsm-rs"``, the full TRADES objective for ``"trades"``. The model's parameters must be
    on the device of ``x``; the batch is not checked for NaN here (that would cost a host sync per batch;
    :class:`AdversarialTrainer` checks the whole data set once).
    """

    def __init__(self, model: nn.Module | TorchModel, *, norm: str = "linf", eps: float = 0.3, steps: int = 7,
                 step_size: float | None = None, method: str = "pgd", beta: float = DEFAULT_BETA,
                 bounds: tuple[float, float] | None = None, precision: str = "fp32") -> None:
        self.module, self.forward, self.bounds = _resolve(model, bounds)
        self.norm = get_norm(norm)
        self.eps = check_epsilons(eps, "eps")[0]
        if method not in METHODS:
            raise InputError("method", method, f"one of {METHODS}")
        if not isinstance(steps, int) or steps < 1:
            raise InputError("steps", steps, "an integer >= 1")
        if step_size is not None and not step_size > 0:
            raise InputError("step_size", step_size, "a positive number or None")
        if not beta >= 0:
            raise InputError("beta", beta, "a number >= 0")
        if precision not in PRECISIONS:
            raise InputError("precision", precision, f"one of {PRECISIONS}")
        self.method = method
        self.steps = 1 if method == "fgsm-rs" else steps
        if step_size is None:
            step_size = (FGSM_RS_STEP_FACTOR * self.eps if method == "fgsm-rs"
                         else default_step_size(self.eps, self.steps))
        self.step_size = step_size
        self.beta = beta
        self.precision = precision

    def _check(self, x: Tensor, y: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise InputError("x", type(x).__name__ if not isinstance(x, Tensor) else f"shape {tuple(x.shape)}",
                             "a tensor batch of shape (N, ...)")
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
            raise InputError("y", f"shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__,
                             f"a tensor of {x.shape[0]} class indices")

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """The adversarial version of the batch; the model's mode is restored afterwards."""
        self._check(x, y)
        was_training = self.module.training
        self.module.eval()
        try:
            if self.method == "trades":
                with torch.no_grad(), autocast(x.device, self.precision):
                    clean = F.softmax(self.forward(x).float(), dim=1)
                return maximize(self.forward, x, y, norm=self.norm, eps=self.eps, steps=self.steps,
                                step_size=self.step_size, loss="kl", start="small", bounds=self.bounds,
                                precision=self.precision, clean_probs=clean)
            return maximize(self.forward, x, y, norm=self.norm, eps=self.eps, steps=self.steps,
                            step_size=self.step_size, loss="ce", start="uniform", bounds=self.bounds,
                            precision=self.precision)
        finally:
            self.module.train(was_training)

    def loss(self, x: Tensor, y: Tensor, x_adv: Tensor | None = None) -> Tensor:
        """The training loss on this batch (pass ``x_adv`` to reuse a perturbation already computed)."""
        self._check(x, y)
        if x_adv is None:
            x_adv = self.perturb(x, y)
        with autocast(x.device, self.precision):
            if self.method == "trades":
                # Two forwards, not one of the concatenation: batch-norm must not mix clean and
                # adversarial statistics (the reference implementation keeps them apart too).
                return trades_loss(self.forward(x), self.forward(x_adv), y, self.beta)
            return F.cross_entropy(self.forward(x_adv).float(), y)


class AdversarialTrainer:
    """Turnkey adversarial training that keeps the checkpoint with the best robust validation accuracy.

    ``fit(model, x, y)`` holds out ``val_fraction`` of the data, trains for ``epochs`` with ``method``
    ("pgd", "trades" or "fgsm-rs"), measures clean and PGD-``val_steps`` robust accuracy on the held-out
    part after each epoch and finally loads the best epoch's weights (robust overfitting: the last epoch
    is often not the most robust). With ``val_fraction=0`` the last epoch is kept.

    Learned state: ``model_`` (the trained module, eval mode), ``history_`` (one dict per epoch: epoch,
    loss, clean_val_acc, robust_val_acc, lr, time_s of training, val_time_s), ``best_epoch_``,
    ``val_index_`` (the held-out rows). ``schedule="cyclic"`` is a one-cycle triangle peaking at ``lr``;
    ``precision`` "bf16"/"fp16" runs forwards under autocast (fp16 with a gradient scaler).
    Deterministic under ``seed`` on CPU. The data set is moved to the model's device once, so it must
    fit there (use :class:`AdversarialBatch` in your own loop for data that streams from a loader).
    """

    def __init__(self, method: str = "pgd", *, norm: str = "linf", eps: float = 0.3, steps: int = 7,
                 step_size: float | None = None, beta: float = DEFAULT_BETA, epochs: int = 10,
                 lr: float | None = None, batch_size: int = 128, optimizer: str = "adam", weight_decay: float = 0.0,
                 schedule: str = "cyclic", precision: str = "fp32", val_fraction: float = 0.1, val_steps: int = 10,
                 bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.method = method
        self.norm = norm
        self.eps = eps
        self.steps = steps
        self.step_size = step_size
        self.beta = beta
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.precision = precision
        self.val_fraction = val_fraction
        self.val_steps = val_steps
        self.bounds = bounds
        self.seed = seed
        self.progress = progress

    def _validate(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise InputError("epochs", self.epochs, "an integer >= 1")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError("batch_size", self.batch_size, "an integer >= 1")
        if self.lr is not None and not self.lr > 0:
            raise InputError("lr", self.lr, "a positive number or None")
        if self.schedule not in SCHEDULES:
            raise InputError("schedule", self.schedule, f"one of {SCHEDULES}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError("optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError("val_fraction", self.val_fraction, "a fraction in [0, 1)")
        if not isinstance(self.val_steps, int) or self.val_steps < 1:
            raise InputError("val_steps", self.val_steps, "an integer >= 1")

    def _lr_factor(self, total: int) -> Callable[[int], float]:
        if self.schedule == "constant":
            return lambda t: 1.0
        peak = max(1, int(CYCLE_PEAK * total))

        def triangle(t: int) -> float:
            # Start just above zero so the first step is not wasted.
            return (t + 1) / peak if t < peak else max(0.0, (total - t) / max(1, total - peak))

        return triangle

    def fit(self, model: nn.Module | TorchModel, x: Any, y: Any) -> AdversarialTrainer:
        self._validate()
        hook = AdversarialBatch(model, norm=self.norm, eps=self.eps, steps=self.steps, step_size=self.step_size,
                                method=self.method, beta=self.beta, bounds=self.bounds, precision=self.precision)
        module, forward = hook.module, hook.forward
        p0 = next(iter(module.parameters()), None)
        if p0 is None:
            raise InputError("model", "a module without parameters", "a trainable torch.nn.Module")
        device = p0.device
        xt = check_inputs(x, hook.bounds, argument="x", device=device)
        yt = check_labels(y, xt.shape[0], argument="y", device=device)
        n = xt.shape[0]
        n_val = round(self.val_fraction * n) if self.val_fraction > 0 else 0
        if (self.val_fraction > 0 and n_val < 1) or n - n_val < 1:
            raise InputError("val_fraction", self.val_fraction, f"a split leaving examples on both sides of {n}")

        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n, generator=gen)
        self.val_index_ = order[:n_val]
        tr_idx = order[n_val:].to(device)
        x_tr, y_tr = xt[tr_idx], yt[tr_idx]
        x_val, y_val = xt[self.val_index_.to(device)], yt[self.val_index_.to(device)]

        lr = self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]
        opt: torch.optim.Optimizer
        if self.optimizer == "adam":
            opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=SGD_MOMENTUM, weight_decay=self.weight_decay)
        batches = math.ceil(x_tr.shape[0] / self.batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor(self.epochs * batches))
        scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None

        self.history_: list[dict[str, Any]] = []
        best_acc, best_state = -1.0, None
        self.best_epoch_ = self.epochs - 1
        for epoch in range(self.epochs):
            t0 = time.perf_counter()
            module.train()
            perm = torch.randperm(x_tr.shape[0], generator=gen).to(device)
            total = torch.zeros((), device=device)
            for i in range(0, x_tr.shape[0], self.batch_size):
                idx = perm[i:i + self.batch_size]
                xb, yb = x_tr[idx], y_tr[idx]
                x_adv = hook.perturb(xb, yb)
                loss = hook.loss(xb, yb, x_adv)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sched.step()
                total += loss.detach() * idx.shape[0]
            mean_loss = float(total) / x_tr.shape[0]  # the epoch's one host sync
            train_time = time.perf_counter() - t0
            module.eval()
            t1 = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, "loss": mean_loss, "lr": opt.param_groups[0]["lr"],
                                      "time_s": train_time, "clean_val_acc": None, "robust_val_acc": None}
            if n_val:
                record["clean_val_acc"] = robust_accuracy(forward, x_val, y_val, norm=hook.norm, eps=0.0,
                                                          bounds=hook.bounds)
                record["robust_val_acc"] = robust_accuracy(forward, x_val, y_val, norm=hook.norm, eps=hook.eps,
                                                           steps=self.val_steps, bounds=hook.bounds, seed=self.seed)
                if record["robust_val_acc"] > best_acc:
                    best_acc, self.best_epoch_ = record["robust_val_acc"], epoch
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            record["val_time_s"] = time.perf_counter() - t1
            self.history_.append(record)
            if self.progress is not None:
                self.progress(record)
        if best_state is not None:
            module.load_state_dict(best_state)
        self.model_ = module.eval()
        return self

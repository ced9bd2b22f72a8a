"""Interval bound propagation: soundness on sampled inputs, known answers, certified training, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bastion as bn
from bastion.certify import IntervalNetwork, ibp_bounds, ibp_certify, ibp_train
from bastion.errors import InputError


def _bn(layer: nn.BatchNorm1d | nn.BatchNorm2d, gen: torch.Generator) -> nn.Module:
    """Batch norm with non-trivial statistics and some negative scales, in eval mode."""
    c = layer.num_features
    with torch.no_grad():
        layer.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
        layer.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        layer.weight.copy_(torch.randn(c, generator=gen))
        layer.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    return layer


def _architectures() -> dict[str, nn.Module]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    conv_bn = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), _bn(nn.BatchNorm2d(6), gen), nn.ReLU(),
        nn.Sequential(nn.Conv2d(6, 8, 3, stride=2), nn.LeakyReLU(0.1), nn.AvgPool2d(2, ceil_mode=True)),
        nn.Flatten(), nn.Linear(32, 16), _bn(nn.BatchNorm1d(16), gen), nn.Tanh(), nn.Dropout(0.5),
        nn.Linear(16, 10),
    )
    pooled = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Sigmoid(),
                           nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    return {"mlp": bn.zoo.MLP(64, 10, hidden=(32, 16)), "smallcnn": bn.zoo.SmallCNN(1, 10, 8, width=4),
            "conv_bn": conv_bn, "pooled": pooled}


@pytest.mark.parametrize("arch", ["mlp", "smallcnn", "conv_bn", "pooled"])
def test_bounds_contain_outputs_inside_the_box(arch: str) -> None:
    model = _architectures()[arch].eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 8, 8, generator=gen)
    eps = 0.05
    lower, upper = ibp_bounds(model, x, eps)
    assert (lower <= upper).all()
    with torch.no_grad():
        for _ in range(50):
            # random points, half of them corners of the box where linear regions are extreme
            u = torch.rand(x.shape, generator=gen) * 2 - 1
            if _ % 2:
                u = u.sign()
            out = model((x + eps * u).clamp(0, 1))
            assert (out >= lower - 1e-5).all() and (out <= upper + 1e-5).all()
        # zero radius: the bounds collapse onto the output itself
        lo0, hi0 = ibp_bounds(model, x, 0.0)
        torch.testing.assert_close(lo0, model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hi0, model(x), atol=1e-5, rtol=1e-5)


def test_known_answer_for_a_small_network() -> None:
    lin1 = nn.Linear(2, 2)
    lin2 = nn.Linear(2, 1)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.5]]))
        lin1.bias.copy_(torch.tensor([0.5, -0.2]))
        lin2.weight.copy_(torch.tensor([[1.0, -1.0]]))
        lin2.bias.zero_()
    model = nn.Sequential(lin1, nn.ReLU(), lin2)
    lower, upper = ibp_bounds(model, torch.tensor([[0.5, 0.5]]), 0.1)
    # layer 1: centres (0, 0.3), radii (0.3, 0.1) -> [-0.3, 0.3] and [0.2, 0.4]; ReLU -> [0, 0.3], [0.2, 0.4]
    # layer 2: h1 - h2 lies in [0 - 0.4, 0.3 - 0.2] = [-0.4, 0.1]
    torch.testing.assert_close(lower, torch.tensor([[-0.4]]))
    torch.testing.assert_close(upper, torch.tensor([[0.1]]))


def test_input_bounds_clip_the_box() -> None:
    model = nn.Sequential(nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    lower, upper = ibp_bounds(model, torch.tensor([[0.95]]), 0.1)
    torch.testing.assert_close(torch.cat([lower, upper]), torch.tensor([[0.85], [1.0]]))


def test_torchscript_and_eager_give_the_same_bounds() -> None:
    model = bn.zoo.SmallCNN(1, 10, 8, width=4).eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    eager = ibp_bounds(model, x, 0.03)
    scripted = ibp_bounds(torch.jit.script(model), x, 0.03)
    torch.testing.assert_close(eager, scripted)


def test_elided_margins_are_sound_and_no_looser() -> None:
    model = _architectures()["mlp"].eval()
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.arange(8) % 10
    net = IntervalNetwork(model, x)
    lo_in, hi_in = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
    with torch.no_grad():
        margins = net.margins(lo_in, hi_in, y)
        lo, hi = net.bounds(lo_in, hi_in)
        naive = hi - lo.gather(1, y.unsqueeze(1))
        assert (margins <= naive.scatter(1, y.unsqueeze(1), 0.0) + 1e-5).all()
        assert (margins.gather(1, y.unsqueeze(1)) == 0).all()
        for _ in range(30):
            out = model(lo_in + (hi_in - lo_in) * torch.rand(x.shape))
            diff = out - out.gather(1, y.unsqueeze(1))
            assert (diff <= margins + 1e-5).all()


class _Doubling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * self.fc(x)


def test_unsupported_layers_are_refused_by_name() -> None:
    x = torch.rand(2, 4)
    with pytest.raises(InputError, match=r"layer '1' \(GELU"):
        ibp_bounds(nn.Sequential(nn.Linear(4, 3), nn.GELU()), x, 0.1)
    with pytest.raises(InputError, match="not its children applied in order"):
        ibp_bounds(_Doubling(), x, 0.1)
    with pytest.raises(InputError, match="negative_slope"):
        ibp_bounds(nn.Sequential(nn.Linear(4, 3), nn.LeakyReLU(-0.5)), x, 0.1)
    with pytest.raises(InputError, match="eps"):
        ibp_bounds(nn.Sequential(nn.Linear(4, 3)), x, -0.1)
    with pytest.raises(InputError, match="model"):
        ibp_bounds(lambda t: t, x, 0.1)


def _pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 30,
              restarts: int = 2) -> torch.Tensor:
    """Mask of examples some PGD restart misclassifies inside the eps-box (and the [0, 1] bounds)."""
    broken = torch.zeros(x.shape[0], dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    for _ in range(restarts):
        delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).requires_grad_(True)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model((x + delta).clamp(0, 1)), y)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta += (eps / 4) * grad.sign()
                delta.clamp_(-eps, eps)
        with torch.no_grad():
            broken |= model((x + delta).clamp(0, 1)).argmax(1) != y
    return broken


@pytest.fixture(scope="module")
def ibp_mlp(digits: bn.datasets.Dataset) -> nn.Module:
    torch.manual_seed(0)
    model = bn.zoo.MLP(64, 10, hidden=(64,))
    return ibp_train(model, digits.x_train, digits.y_train, 0.1, train_eps=0.15, epochs=20, warmup_epochs=2,
                     ramp_epochs=10, lr=3e-3, batch_size=128, seed=0)


def test_ibp_training_certifies_digits(ibp_mlp: nn.Module, digits: bn.datasets.Dataset) -> None:
    x, y = digits.x_test, digits.y_test
    torch.manual_seed(0)
    plain = bn.zoo.train(bn.zoo.MLP(64, 10, hidden=(64,)), digits.x_train, digits.y_train, epochs=10, lr=3e-3,
                         batch_size=128, seed=0)
    trained = ibp_certify(ibp_mlp, x, y, 0.1).float().mean().item()
    standard = ibp_certify(plain, x, y, 0.1).float().mean().item()
    assert trained > 0.4
    assert trained > standard + 0.3
    assert bn.zoo.accuracy(ibp_mlp, x, y) > 0.85


def test_certified_examples_resist_pgd(ibp_mlp: nn.Module, digits: bn.datasets.Dataset) -> None:
    x, y = digits.x_test[:200], digits.y_test[:200]
    certified = ibp_certify(ibp_mlp, x, y, 0.1)
    assert certified.sum() > 50
    broken = _pgd_linf(ibp_mlp, x, y, 0.1)
    _, _, pgd_success = bn.attacks.PGD("linf", steps=40, restarts=2, loss="margin")(ibp_mlp, x, y, epsilons=0.1)
    broken |= pgd_success.cpu()
    assert not (certified & broken).any(), "PGD broke an example IBP certified"
    # The attack is real: uncertified examples do get broken at a larger radius.
    assert _pgd_linf(ibp_mlp, x, y, 0.3, restarts=1).sum() > 0


def test_certify_respects_a_wrapped_models_normalisation() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    wrapped = bn.wrap(module, preprocessing=(0.5, 0.25))
    x = torch.rand(5, 4)
    lower, upper = ibp_bounds(wrapped, x, 0.02)
    with torch.no_grad():
        out = wrapped.scores(x)
    assert (lower <= out + 1e-6).all() and (out <= upper + 1e-6).all()
    lo0, hi0 = ibp_bounds(wrapped, x, 0.0)
    torch.testing.assert_close(lo0, out)
    torch.testing.assert_close(hi0, out)


def test_margins_without_a_final_linear_layer_subtract_logit_bounds() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval()
    x = torch.rand(5, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    net = IntervalNetwork(model, x)
    with torch.no_grad():
        lo, hi = net.bounds(x - 0.1, x + 0.1)
        margins = net.margins(x - 0.1, x + 0.1, y)
    expected = (hi - lo.gather(1, y.unsqueeze(1))).scatter(1, y.unsqueeze(1), 0.0)
    torch.testing.assert_close(margins, expected)

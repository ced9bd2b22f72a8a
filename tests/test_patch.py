"""Adversarial patch: one universal sticker, learned on some digits, fooling the CNN on others."""

from __future__ import annotations

import pytest
import torch
from sklearn.dummy import DummyClassifier

import bastion as bn
from bastion.attacks.evasion import AdversarialPatch
from bastion.attacks.evasion.patch import PatchResult
from bastion.errors import CapabilityError, InputError


def _flip_rate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, target: int | None = None) -> float:
    with torch.no_grad():
        pred = model(images).argmax(dim=1)
    return float((pred == target).float().mean()) if target is not None else float((pred != labels).float().mean())


@pytest.fixture(scope="module")
def learned(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> tuple[AdversarialPatch, PatchResult]:
    attack = AdversarialPatch(patch_size=0.25, steps=100, lr=0.05, batch_size=128, seed=0)
    result = attack.fit(digits_cnn, digits.x_train[:600], digits.y_train[:600],
                        x_eval=digits.x_test[:200], y_eval=digits.y_test[:200])
    return attack, result


def test_patch_fools_held_out_digits(learned: tuple[AdversarialPatch, PatchResult], digits: bn.datasets.Dataset,
                                     digits_cnn: torch.nn.Module) -> None:
    attack, result = learned
    assert result.patch.shape == (1, 4, 4)  # a quarter of the 8x8 area
    assert result.n_eval == 200 and result.clean_accuracy > 0.9
    assert result.success_rate > 0.5  # most held-out digits the CNN got right are now wrong
    # Not just occlusion: random noise of the same size at the same kind of placements does far less.
    x, y = digits.x_test[:200], digits.y_test[:200]
    correct = digits_cnn(x).argmax(dim=1) == y
    torch.manual_seed(1)
    noise = torch.rand(1, 4, 4)
    noise_rate = _flip_rate(digits_cnn, attack.apply(x[correct], noise), y[correct])
    learned_rate = _flip_rate(digits_cnn, attack.apply(x[correct], result.patch), y[correct])
    assert learned_rate > noise_rate + 0.2
    assert result.losses[-1] < result.losses[0]


def test_patch_is_printable(learned: tuple[AdversarialPatch, PatchResult]) -> None:
    _, result = learned
    assert float(result.patch.min()) >= 0.0 and float(result.patch.max()) <= 1.0
    assert not result.patch.requires_grad


def test_apply_touches_only_the_patch_area(digits: bn.datasets.Dataset) -> None:
    attack = AdversarialPatch(patch_size=(3, 2))
    x = digits.x_test[:5]
    patch = torch.full((1, 3, 2), 0.5)
    locations = torch.tensor([[0, 0], [5, 6], [2, 3], [1, 0], [4, 1]])
    out = attack.apply(x, patch, locations)
    for i, (r, c) in enumerate(locations.tolist()):
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[r:r + 3, c:c + 2] = True
        assert torch.equal(out[i, 0][inside], torch.full((6,), 0.5))
        assert torch.equal(out[i, 0][~inside], x[i, 0][~inside])
    # Random placements keep the whole patch inside the image: exactly h*w pixels change to its values.
    torch.manual_seed(0)
    out = attack.apply(torch.zeros(20, 1, 8, 8), torch.ones(1, 3, 2))
    assert torch.equal(out.flatten(1).sum(dim=1), torch.full((20,), 6.0))


def test_targeted_patch_pushes_towards_the_target(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> None:
    target = 3
    result = AdversarialPatch(patch_size=(5, 5), steps=60, lr=0.05, batch_size=128, target=target, seed=0).fit(
        digits_cnn, digits.x_train[:400], digits.y_train[:400])
    assert result.target == target and result.n_eval == 80  # 20 % held out by default
    x, y = digits.x_test[:200], digits.y_test[:200]
    others = y != target
    base = _flip_rate(digits_cnn, x[others], y[others], target)
    assert result.success_rate > base + 0.2


def test_patch_validation(digits: bn.datasets.Dataset) -> None:
    for bad in ((0, 3), 1.5, (2, 2, 2)):
        with pytest.raises(InputError):
            AdversarialPatch(patch_size=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        AdversarialPatch(steps=0)
    flat = bn.datasets.digits(flatten=True)
    mlp = bn.zoo.MLP(64, 10, hidden=(8,))
    with pytest.raises(InputError, match="images"):
        AdversarialPatch(steps=1).fit(mlp, flat.x_train[:10], flat.y_train[:10])
    with pytest.raises(InputError, match="patch_size"):
        AdversarialPatch(patch_size=(9, 9), steps=1).fit(bn.zoo.SmallCNN(1, 10, 8, width=4),
                                                          digits.x_train[:10], digits.y_train[:10])
    with pytest.raises(InputError, match="locations"):
        AdversarialPatch().apply(digits.x_test[:2], torch.ones(1, 3, 3), [[6, 0], [0, 0]])
    scores_only = DummyClassifier().fit(flat.x_train.numpy(), flat.y_train.numpy())
    with pytest.raises(CapabilityError):
        AdversarialPatch(steps=1).fit(scores_only, digits.x_train[:10], digits.y_train[:10])


def test_printability_penalties_make_a_smoother_palette_patch(digits: bn.datasets.Dataset,
                                                               digits_cnn: torch.nn.Module) -> None:
    from bastion.attacks.evasion.patch import non_printability, snap, total_variation

    palette = torch.tensor([[0.2], [0.5], [0.8]])  # a printer with three grey levels, no pure black or white
    kw = {"patch_size": 0.25, "steps": 100, "lr": 0.05, "batch_size": 128, "seed": 0}
    x, y, xe, ye = digits.x_train[:600], digits.y_train[:600], digits.x_test[:200], digits.y_test[:200]
    plain = AdversarialPatch(**kw).fit(digits_cnn, x, y, x_eval=xe, y_eval=ye)
    printable = AdversarialPatch(**kw, tv_weight=1.0, palette=palette, nps_weight=1.0, snap_to_palette=True).fit(
        digits_cnn, x, y, x_eval=xe, y_eval=ye)
    # The reported measures are the patch's own, recomputed here.
    assert printable.total_variation == pytest.approx(float(total_variation(printable.patch)))
    assert printable.non_printability == pytest.approx(0.0, abs=1e-6)  # snapped: every pixel a palette colour
    assert set(printable.patch.flatten().tolist()) <= set(palette.flatten().tolist())
    assert plain.non_printability is None
    assert float(non_printability(plain.patch, palette)) > 0.1  # the unconstrained patch is black and white
    assert printable.total_variation <= plain.total_variation
    assert printable.success_rate > 0.3  # still an attack after the penalties and the rounding
    # snap picks the nearest colour
    assert torch.equal(snap(torch.tensor([[[0.1, 0.3], [0.9, 0.74]]]), palette).flatten(), palette[[0, 0, 2, 2], 0])


@pytest.mark.parametrize("kwargs", [{"tv_weight": -1.0}, {"nps_weight": float("nan")}, {"nps_weight": 1.0},
                                    {"snap_to_palette": True}, {"palette": [[0.1, 0.2, 0.3]], "nps_weight": 1.0},
                                    {"palette": [1.0, 2.0]}])
def test_printability_arguments_are_checked(kwargs: dict, digits: bn.datasets.Dataset,
                                            digits_cnn: torch.nn.Module) -> None:
    with pytest.raises(InputError):
        AdversarialPatch(steps=1, **kwargs).fit(digits_cnn, digits.x_train[:20], digits.y_train[:20])


def test_palette_outside_the_bounds_is_refused(digits: bn.datasets.Dataset, digits_cnn: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="bounds"):
        AdversarialPatch(steps=1, palette=[[2.0]], snap_to_palette=True).fit(digits_cnn, digits.x_train[:20],
                                                                            digits.y_train[:20])

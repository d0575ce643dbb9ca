"""Training augmentation: random similarity warps and per-image Gaussian blur; the straightening term."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stn_gtsrb import create_model
from stn_gtsrb.augment import CALM_CEILING, EpochJitter, blur_radius, gaussian_blur, random_thetas
from stn_gtsrb.consistency import straightening_loss
from stn_gtsrb.geometry import FRAME_CORNERS, homogeneous, matrix_points, tilt_thetas, warp


def test_random_thetas_stay_within_the_asked_ranges_and_repeat_with_the_seed():
    thetas = random_thetas(2000, 10, 0.1, 0.1, torch.Generator().manual_seed(3))
    assert thetas.shape == (2000, 2, 3)
    linear = thetas[:, :, :2]
    scale = linear.det().sqrt()
    angle = torch.atan2(linear[:, 1, 0], linear[:, 0, 0]) * 180 / math.pi
    assert scale.min() >= 0.9 - 1e-6 and scale.max() <= 1.1 + 1e-6 and scale.max() - scale.min() > 0.15
    assert angle.abs().max() <= 10 + 1e-4 and angle.abs().max() > 9
    assert thetas[:, :, 2].abs().max() <= 0.2 + 1e-6 and thetas[:, :, 2].abs().max() > 0.18
    assert torch.equal(thetas, random_thetas(2000, 10, 0.1, 0.1, torch.Generator().manual_seed(3)))
    assert torch.equal(random_thetas(5, 0, 0, 0), torch.eye(2, 3).expand(5, 2, 3))


def reference_blur(image: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """One ``(C, H, W)`` image blurred by a full 2-D Gaussian kernel, edges replicated."""
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = torch.outer(g, g) / g.sum() ** 2
    padded = F.pad(image[None].double(), (radius,) * 4, mode="replicate")
    channels = image.shape[0]
    return F.conv2d(padded, kernel.expand(channels, 1, -1, -1), groups=channels)[0].float()


def test_each_image_gets_its_own_blur_and_zero_leaves_it_unchanged():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 12, 10)
    sigma = torch.tensor([0.0, 0.7, 1.5])
    out = gaussian_blur(x, sigma, blur_radius(1.5))
    assert out.shape == x.shape
    assert torch.allclose(out[0], x[0])
    for b in (1, 2):
        assert torch.allclose(out[b], reference_blur(x[b], float(sigma[b]), blur_radius(1.5)), atol=1e-5)
    assert out[2].std() < out[1].std() < x[1].std()  # wider blur, smoother image


def test_blur_keeps_a_constant_image_and_checks_shapes():
    x = torch.full((2, 3, 8, 8), 0.25)
    assert torch.allclose(gaussian_blur(x, torch.tensor([1.0, 2.0]), blur_radius(2.0)), x)
    assert torch.equal(gaussian_blur(x, torch.zeros(2), 0), x)
    with pytest.raises(ValueError, match=r"sigma must have shape \(2,\), got \(3,\)"):
        gaussian_blur(x, torch.ones(3), 3)


def test_an_epochs_draw_holds_only_the_asked_augmentations_and_repeats_with_the_seed():
    def draw(*ranges):
        return EpochJitter.draw(100, *ranges, generator=torch.Generator().manual_seed(5), device="cpu")

    none, warp_only = draw(0, 0, 0, 0), draw(10, 0.1, 0.1, 0)
    blur_only, both = draw(0, 0, 0, 1.2), draw(10, 0.1, 0.1, 1.2)
    assert none.thetas is None and none.sigmas is None
    assert warp_only.sigmas is None and blur_only.thetas is None and blur_only.radius == 4
    assert 0 <= float(blur_only.sigmas.min()) and float(blur_only.sigmas.max()) <= 1.2
    assert torch.equal(both.thetas, warp_only.thetas)  # adding blur leaves the warps' draws as they were
    x = torch.randn(100, 3, 8, 8)
    assert torch.equal(none.apply(x[:10], slice(0, 10)), x[:10])
    assert not torch.allclose(blur_only.apply(x[10:20], slice(10, 20)), x[10:20])
    assert torch.equal(both.apply(x[:10], slice(0, 10)), draw(10, 0.1, 0.1, 1.2).apply(x[:10], slice(0, 10)))


def test_tilt_jitter_is_drawn_last_and_applied_with_the_similarity_in_one_resampling():
    def draw(tilt):
        return EpochJitter.draw(50, 30, 0.2, 0.1, 0.5, generator=torch.Generator().manual_seed(7), device="cpu",
                                tilt_deg=tilt)

    plain, tilted = draw(0), draw(60)
    assert plain.tilts is None and tilted.tilts.shape == (50, 3, 3)
    assert torch.equal(plain.thetas, tilted.thetas) and torch.equal(plain.sigmas, tilted.sigmas)  # drawn first
    lean = tilted.tilts[:, 2, :2].abs().max(dim=1).values  # sin(angle) / distance, about one axis or the other
    assert 0 < lean.max() <= math.sin(math.radians(60)) / 3 + 1e-6 and (tilted.tilts[:, 2, :2] == 0).any(dim=1).all()
    x = torch.randn(50, 3, 16, 16)
    expected = gaussian_blur(warp(x[:8], homogeneous(tilted.thetas[:8]) @ tilted.tilts[:8]), tilted.sigmas[:8],
                             tilted.radius)
    assert torch.allclose(tilted.apply(x[:8], slice(0, 8)), expected)
    only_tilt = EpochJitter.draw(50, 0, 0, 0, 0, generator=torch.Generator().manual_seed(7), device="cpu",
                                 tilt_deg=60)
    angle_axis = torch.Generator().manual_seed(7)
    angles = (torch.rand(50, generator=angle_axis) * 2 - 1) * 60
    assert torch.equal(only_tilt.tilts, tilt_thetas(angles, torch.randint(0, 2, (50,), generator=angle_axis)))
    assert torch.equal(only_tilt.apply(x[:4], slice(0, 4)), warp(x[:4], only_tilt.tilts[:4]))


def test_content_scale_draws_the_content_s_size_factor():
    generator = torch.Generator().manual_seed(0)
    sampler = random_thetas(4000, 0.0, 0.4, 0.0, generator)[:, 0, 0]
    content = 1 / random_thetas(4000, 0.0, 0.4, 0.0, torch.Generator().manual_seed(0), content_scale=True)[:, 0, 0]
    assert torch.allclose(content, sampler)  # the same draw: the factor is the content's, the sampler's its inverse
    assert 0.6 <= content.min() < 0.61 and 1.39 < content.max() <= 1.4


def test_graded_jitter_scales_each_images_draws_by_one_magnitude():
    full = EpochJitter.draw(4000, 45, 0.4, 0.25, 0, torch.Generator().manual_seed(3), "cpu", tilt_deg=60,
                            content_scale=True)
    graded = EpochJitter.draw(4000, 45, 0.4, 0.25, 0, torch.Generator().manual_seed(3), "cpu", tilt_deg=60,
                              content_scale=True, graded=True)
    replay = torch.Generator().manual_seed(3)
    magnitude = torch.rand(4000, generator=replay)
    assert torch.equal(graded.thetas, random_thetas(4000, 45, 0.4, 0.25, replay, True, magnitude))
    angles = (torch.rand(4000, generator=replay) * 2 - 1) * 60 * magnitude
    assert torch.equal(graded.tilts, tilt_thetas(angles, torch.randint(0, 2, (4000,), generator=replay)))

    def turn(jitter):  # degrees of each image's rotation
        return torch.rad2deg(torch.atan2(jitter.thetas[:, 1, 0], jitter.thetas[:, 0, 0])).abs()
    assert turn(graded).max() > 40 and turn(full).max() > 44  # both reach the range's end
    assert (turn(graded) < 10).float().mean() > 0.45 > (turn(full) < 10).float().mean()  # mild ones common
    assert torch.equal(random_thetas(8, 45, 0.4, 0.25, magnitude=torch.zeros(8)), torch.eye(2, 3).expand(8, 2, 3))


def test_a_calm_epoch_caps_each_images_magnitude():
    calm = EpochJitter.draw(4000, 45, 0.4, 0.25, 0, torch.Generator().manual_seed(3), "cpu", tilt_deg=60,
                            content_scale=True, graded=True, ceiling=CALM_CEILING)
    replay = torch.Generator().manual_seed(3)
    magnitude = torch.rand(4000, generator=replay) * CALM_CEILING
    assert torch.equal(calm.thetas, random_thetas(4000, 45, 0.4, 0.25, replay, True, magnitude))
    turn = torch.rad2deg(torch.atan2(calm.thetas[:, 1, 0], calm.thetas[:, 0, 0])).abs()
    assert 14 < turn.max() <= 15 + 1e-4  # ±45° becomes ±15°


def test_the_straightening_term_is_zero_for_a_transformer_that_undoes_the_jitter():
    torch.manual_seed(0)
    model = create_model("lecun", cnn="4,4,8", transformers={2: "4,4,4"}, batchnorm=True).train()
    clean = torch.randn(3, 3, 32, 32)
    moved = homogeneous(random_thetas(3, 40.0, 0.3, 0.2, torch.Generator().manual_seed(1))) @ tilt_thetas(
        torch.tensor([30.0, -20.0, 0.0]), torch.tensor([0, 1, 0]))
    running = model.blocks[0][1].running_mean.clone()
    undone = torch.linalg.inv(moved)  # the clean region is the whole frame: on the jittered image, M⁻¹ of it
    assert straightening_loss(model, clean, {2: undone}, moved).item() == pytest.approx(0, abs=1e-10)
    identity = torch.eye(3).expand(3, 3, 3)
    corners = FRAME_CORNERS.expand(3, 4, 2)
    expected = (corners - matrix_points(undone, corners)).square().sum(-1).mean()
    assert straightening_loss(model, clean, {2: identity}, moved).item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(model.blocks[0][1].running_mean, running) and model.training  # a side view

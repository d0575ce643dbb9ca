"""Contrastive normalisation against a literal float64 transcription of Torch7's module graph."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stn_gtsrb.normalization import STD_FLOOR, contrastive_normalize, gaussian_1d, make_kernel


def torch7_estimator(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Torch7's mean/std estimator: SpatialZeroPadding -> SpatialConvolutionMap(oneToOne) -> Sum(1) -> Replicate.

    A 2-D kernel is divided by ``sum · C`` and convolved once; a 1-D kernel is divided by
    ``sum · sqrt(C)`` and convolved twice, along rows then columns, as the module does.
    """
    channels = x.shape[1]
    if kernel.dim() == 2:
        pad_h, pad_w = kernel.shape[0] // 2, kernel.shape[1] // 2
        weights = [(kernel / (kernel.sum() * channels))[None, None]]
    else:
        pad_h = pad_w = kernel.shape[0] // 2
        k = kernel / (kernel.sum() * channels ** 0.5)
        weights = [k.view(1, 1, 1, -1), k.view(1, 1, -1, 1)]
    y = F.pad(x, (pad_w, pad_w, pad_h, pad_h))  # zeros
    for weight in weights:
        y = F.conv2d(y, weight.expand(channels, 1, *weight.shape[2:]), groups=channels)  # one map per plane
    return y.sum(1, keepdim=True).expand_as(x)


def torch7_contrastive(x: torch.Tensor, kernel: torch.Tensor, threshold: float = 1e-4) -> torch.Tensor:
    """SpatialSubtractiveNormalization then SpatialDivisiveNormalization, step by step."""
    coef = torch7_estimator(torch.ones_like(x), kernel)
    centred = x - torch7_estimator(x, kernel) / coef
    stds = torch.sqrt(torch7_estimator(centred.square(), kernel)) / coef  # Square, ..., Sqrt, then ÷ coef
    thresholded = torch.where(stds > threshold, stds, torch.full_like(stds, threshold))  # nn.Threshold
    return centred / thresholded


KERNELS = {"uniform9": torch.ones(9, 9, dtype=torch.float64),
           "gaussian7": gaussian_1d(7).double()}  # the original passes image.gaussian1D(7): the 1-D path


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("size", [32, 15, 6, 4, 2, 1])
@pytest.mark.parametrize("channels", [1, 3, 7])
def test_equals_torch7_on_every_size_and_channel_count(name, size, channels):
    x = torch.randn(2, channels, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    expected = torch7_contrastive(x, KERNELS[name])
    assert torch.allclose(contrastive_normalize(x, name), expected, rtol=1e-10, atol=1e-10)
    assert torch.allclose(contrastive_normalize(x, make_kernel(name)), expected, rtol=1e-10, atol=1e-10)


def test_the_square_root_comes_before_the_border_division():
    """On a 4×4 map every pixel is a border pixel: s = sqrt(E[c²]) / coef, not sqrt(E[c²] / coef)."""
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    coef = torch7_estimator(torch.ones_like(x), KERNELS["uniform9"])
    centred = x - torch7_estimator(x, KERNELS["uniform9"]) / coef
    windowed_std = torch.sqrt(torch7_estimator(centred.square(), KERNELS["uniform9"]) / coef)
    ratio = windowed_std * contrastive_normalize(x, "uniform9") / centred  # = windowed std / std used
    assert torch.allclose(ratio, coef.sqrt(), rtol=1e-9)
    assert coef.max() < 0.5  # so the two formulas differ by more than a factor 1.4 here


def test_flat_regions_use_the_threshold_and_keep_finite_gradients():
    x = torch.zeros(1, 2, 8, 8, requires_grad=True)
    y = contrastive_normalize(x, "uniform9")
    y.sum().backward()
    assert torch.equal(y, torch.zeros_like(y)) and torch.isfinite(x.grad).all()
    assert STD_FLOOR == 1e-4

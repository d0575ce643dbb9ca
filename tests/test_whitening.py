"""Patch-whitening initialisation: the first conv's outputs start decorrelated, with unit variance."""

from __future__ import annotations

import torch
from torch import nn

from stn_gtsrb.whitening import EPS, whiten


def test_whitened_filters_decorrelate_the_patches_they_see():
    generator = torch.Generator().manual_seed(0)
    smooth = nn.functional.avg_pool2d(torch.randn(600, 3, 20, 20, generator=generator), 3, 1, 1)  # correlated pixels
    images = smooth * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1)
    conv = nn.Conv2d(3, 8, 3, padding=0)
    whiten(conv, images, generator)
    out = conv(images).detach().transpose(0, 1).reshape(8, -1).double()
    top = out[:4]  # the eigen-directions; the other 4 filters are their negatives
    covariance = torch.cov(top)
    assert torch.allclose(covariance, torch.eye(4, dtype=torch.float64), atol=0.05), covariance
    assert torch.allclose(out[4:], -top, atol=1e-5) and torch.equal(conv.bias, torch.zeros(8))
    assert EPS < 0.01

"""Patch-whitening initialisation of the first convolution, as airbench's first layer.

The first conv's k×k×C patches of the training images (normalised, as the network sees them) have a
covariance ``Σ = V·diag(λ)·Vᵀ``. Its filters become the eigenvectors of the largest eigenvalues, each
divided by ``√(λ + EPS)``, and their negatives (so that a ReLU keeps both signs of each direction):
the conv's outputs start as decorrelated, unit-variance projections of the patches on their main
directions. The filters stay trainable, and a bias, if the conv has one, starts at zero. Patches are
taken from ``PATCH_IMAGES`` training images drawn with the run's seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PATCH_IMAGES = 1000  # training images whose patches give the covariance
CHUNK = 250  # images unfolded at a time (bounds memory)
EPS = 5e-4  # added to each eigenvalue before the square root


@torch.no_grad()
def patch_covariance(images: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The covariance ``(C·k·k, C·k·k)`` (float64) of every ``conv``-sized patch of ``images`` ``(N, C, H, W)``."""
    total, outer, count = 0.0, 0.0, 0
    for start in range(0, len(images), CHUNK):
        patches = F.unfold(images[start:start + CHUNK].float(), conv.kernel_size, padding=conv.padding,
                           stride=conv.stride)  # (n, C·k·k, positions)
        patches = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
        total, outer, count = total + patches.sum(0), outer + patches.T @ patches, count + len(patches)
    mean = total / count
    return outer / count - torch.outer(mean, mean)


@torch.no_grad()
def whiten(conv: nn.Conv2d, images: torch.Tensor, generator: torch.Generator) -> None:
    """Set ``conv``'s filters from the patch covariance of ``PATCH_IMAGES`` of ``images`` (module docstring)."""
    pick = torch.randperm(len(images), generator=generator)[:PATCH_IMAGES].to(images.device)
    eigenvalues, eigenvectors = torch.linalg.eigh(patch_covariance(images[pick], conv))  # ascending
    count = min(math.ceil(conv.out_channels / 2), len(eigenvalues))
    top = eigenvectors[:, -count:].flip(1) / (eigenvalues[-count:].flip(0).clamp(min=0) + EPS).sqrt()
    filters = torch.cat([top, -top], dim=1).T[:conv.out_channels]  # (filters, C·k·k)
    conv.weight[:len(filters)] = filters.view(-1, *conv.weight.shape[1:]).to(conv.weight)
    if conv.bias is not None:
        conv.bias.zero_()

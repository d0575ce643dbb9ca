"""Contrast normalisation, as Torch7's ``nn.SpatialContrastiveNormalization``.

Used twice: once on the input images (7-tap Gaussian neighbourhood, in the data
pipeline) and after every conv block of the networks (in the original code a
typo made that kernel Torch's default, a 9×9 uniform one; that stays the
default here).

Like Torch7, the neighbourhood statistics are pooled over *all* channels: the
local mean is the kernel-weighted mean over the window and over channels, and
the same mean/std map is applied to every channel. Because the kernel is the
same for every channel, this equals a single-channel convolution of the
channel mean, which is what is computed here (C times cheaper than a C-channel
convolution). Borders use zero padding corrected by the kernel mass inside
the image, as Torch7 does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KERNELS = ("uniform9", "gaussian7")
STD_FLOOR = 1e-4  # Torch7's divisive-normalisation threshold


def gaussian_1d(size: int) -> torch.Tensor:
    """Torch7 ``image.gaussian1D(size)``: sigma = 0.25·size, centred, peak 1."""
    centre = 0.5 * size + 0.5
    positions = torch.arange(1, size + 1, dtype=torch.float64)
    return torch.exp(-0.5 * ((positions - centre) / (0.25 * size)) ** 2).float()


def make_kernel(name: str) -> torch.Tensor:
    """A 2-D neighbourhood kernel by name: ``uniform9`` or ``gaussian7``."""
    if name == "uniform9":
        return torch.ones(9, 9)
    if name == "gaussian7":
        g = gaussian_1d(7)
        return torch.outer(g, g)
    raise ValueError(f"unknown normalisation kernel {name!r}; valid: {', '.join(KERNELS)}")


def contrastive_normalize(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Subtractive then divisive local normalisation.

    Args:
        x: ``(N, C, H, W)`` float tensor.
        kernel: ``(k, k)`` non-negative weights, k odd; normalised here.
    Returns:
        ``(N, C, H, W)``: ``(x - m) / max(s, 1e-4)`` with m, s the local mean
        and standard deviation over the window and all channels.
    """
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
    k = kernel.shape[-1]
    if kernel.dim() != 2 or kernel.shape[0] != k or k % 2 == 0:
        raise ValueError(f"kernel must be square with an odd side, got shape {tuple(kernel.shape)}")
    weight = (kernel / kernel.sum()).to(x)[None, None]
    coverage = F.conv2d(x.new_ones(1, 1, *x.shape[-2:]), weight, padding=k // 2)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t.mean(1, keepdim=True), weight, padding=k // 2) / coverage

    centred = x - local_mean(x)
    std = torch.sqrt(local_mean(centred * centred).clamp_min(STD_FLOOR**2))
    return centred / std


class ContrastiveNorm(nn.Module):
    """:func:`contrastive_normalize` as a layer (no parameters)."""

    def __init__(self, kernel: str = "uniform9"):
        super().__init__()
        self.kernel_name = kernel
        self.register_buffer("kernel", make_kernel(kernel), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return contrastive_normalize(x, self.kernel)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel_name}"



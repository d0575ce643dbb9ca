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
convolution); for the uniform 9×9 kernel that convolution is a window mean,
computed as ``avg_pool2d`` (the same sums, cheaper). Borders use zero padding corrected by the kernel mass inside
the image (``coef``) exactly as Torch7 does, square root first (see
:func:`contrastive_normalize`).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

KERNELS = ("uniform9", "gaussian7")
BOX_KERNELS = ("uniform9",)  # uniform weights: E[t] is a window mean (avg_pool2d)
STD_FLOOR = 1e-4  # Torch7's divisive-normalisation threshold


def gaussian_1d(size: int) -> torch.Tensor:
    """Torch7 ``image.gaussian1D(size)``: sigma = 0.25·size, centred, peak 1."""
    centre = 0.5 * size + 0.5
    positions = torch.arange(1, size + 1, dtype=torch.float64)
    return torch.exp(-0.5 * ((positions - centre) / (0.25 * size)) ** 2).float()


def make_kernel(name: str) -> torch.Tensor:
    """A 2-D neighbourhood kernel by name, in float64: ``uniform9`` or ``gaussian7`` (the outer product of
    Torch7's ``image.gaussian1D(7)``, which the original applies as a separable 1-D kernel: the same thing)."""
    if name == "uniform9":
        return torch.ones(9, 9, dtype=torch.float64)
    if name == "gaussian7":
        g = gaussian_1d(7).double()
        return torch.outer(g, g)
    raise ValueError(f"unknown normalisation kernel {name!r}; valid: {', '.join(KERNELS)}")


def contrastive_normalize(x: torch.Tensor, kernel: torch.Tensor | str, legacy: bool = False) -> torch.Tensor:
    """Subtractive then divisive local normalisation, exactly as Torch7 computes it.

    Args:
        x: ``(N, C, H, W)`` float tensor.
        kernel: ``(k, k)`` non-negative weights, k odd, normalised here; or the name of
            one of ``KERNELS``, whose constants are then computed once per map size,
            device and dtype (the fast path the layers use).
    Returns:
        ``(N, C, H, W)``: ``(x - m) / max(s, 1e-4)`` where, with ``E[t]`` the
        zero-padded convolution of ``t`` summed over channels with ``kernel /
        (sum · C)`` and ``coef = E[1]`` (the kernel mass inside the image),
        ``m = E[x] / coef`` and ``s = sqrt(E[(x - m)²]) / coef``: Torch7 takes the
        square root *before* dividing by ``coef``, so near the borders (and
        everywhere on maps smaller than the kernel) ``s`` is ``1 / sqrt(coef)``
        times the windowed standard deviation. ``legacy=True`` computes
        ``s = sqrt(E[(x - m)²] / coef)`` instead, as stn-gtsrb 0.1 did, so that
        models trained with it keep their accuracy.
    """
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
    if isinstance(kernel, str):
        weight, coef = _named_constants(kernel, x.shape[-2], x.shape[-1], x.device, x.dtype)
    else:
        weight, coef = _constants(kernel, x.shape[-2], x.shape[-1], x.device, x.dtype)
    k = weight.shape[-1]
    box = isinstance(kernel, str) and kernel in BOX_KERNELS

    def estimate(t: torch.Tensor) -> torch.Tensor:  # E[t]: the same kernel on every channel, summed
        mean = t.mean(1, keepdim=True)
        if box:  # the same zero-padded window mean as the convolution, and cheaper (its backward above all)
            return F.avg_pool2d(mean, k, stride=1, padding=k // 2, count_include_pad=True)
        return F.conv2d(mean, weight, padding=k // 2)

    centred = x - estimate(x) / coef
    if legacy:
        return centred / torch.sqrt((estimate(centred * centred) / coef).clamp_min(STD_FLOOR**2))
    # sqrt(max(E, (1e-4·coef)²)) / coef == max(sqrt(E) / coef, 1e-4), with a finite gradient where E = 0
    std = torch.sqrt(torch.maximum(estimate(centred * centred), (STD_FLOOR * coef) ** 2)) / coef
    return centred / std


def _constants(kernel: torch.Tensor, height: int, width: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised ``(1, 1, k, k)`` kernel and Torch7's border coefficient ``coef`` ``(1, 1, H, W)``."""
    k = kernel.shape[-1]
    if kernel.dim() != 2 or kernel.shape[0] != k or k % 2 == 0:
        raise ValueError(f"kernel must be square with an odd side, got shape {tuple(kernel.shape)}")
    kernel = kernel.detach().double()
    weight = (kernel / kernel.sum()).to(device=device, dtype=dtype)[None, None]
    return weight, F.conv2d(torch.ones(1, 1, height, width, device=device, dtype=dtype), weight, padding=k // 2)


@functools.lru_cache(maxsize=256)
def _named_constants(name: str, height: int, width: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return _constants(make_kernel(name), height, width, device, dtype)


class ContrastiveNorm(nn.Module):
    """:func:`contrastive_normalize` as a layer (no parameters)."""

    def __init__(self, kernel: str = "uniform9", legacy: bool = False):
        super().__init__()
        make_kernel(kernel)  # an unknown name fails here, not in the first forward pass
        self.kernel_name, self.legacy = kernel, legacy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return contrastive_normalize(x, self.kernel_name, self.legacy)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel_name}" + (", legacy" if self.legacy else "")



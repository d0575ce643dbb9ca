"""Training augmentation on the device: one random draw per image and epoch, applied batch by batch.

Geometric: a random similarity transform per image (:func:`random_thetas`) and, with a tilt range,
a random view off-axis (geometry.py's tilt), applied together with the transformer's bilinear
sampler. Photometric: a Gaussian blur of random width per image (:func:`gaussian_blur`). There is
no brightness or contrast jitter: the inputs' local contrast normalisation (data.py) divides such
changes out before the network sees them. No flips either: traffic signs are not mirror-symmetric.

Both act on the normalised images the trainer keeps on the device (device_data.py). A graded jitter
draws one magnitude per image that scales its geometric draws; in a run's calm epochs, the last ones,
that magnitude stays below ``CALM_CEILING``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .geometry import homogeneous, similarity_thetas, tilt_thetas, warp

CALM_CEILING = 1 / 3  # the graded magnitude's ceiling in calm epochs (±45° becomes ±15°, tilt 60° 20°, ...)


def random_thetas(n: int, rotation_deg: float, scale: float, shift: float,
                  generator: torch.Generator | None = None, content_scale: bool = False,
                  magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` random similarity thetas ``(n, 2, 3)`` (geometry.py's affine theta).

    Angle uniform in ``±rotation_deg`` degrees, the sampler's scale factor uniform in
    ``[1 - scale, 1 + scale]`` (with ``content_scale``, the content's size factor instead, the
    sampler's being its inverse), shift of each axis uniform in ``±shift`` of the
    image side (``2·shift`` in normalised coordinates). All zero: identities. ``magnitude``
    ``(n,)`` in [0, 1] scales each image's draws (the ranges become ``±magnitude·range``).
    """
    u = torch.rand(n, 4, generator=generator) * 2 - 1  # uniform in [-1, 1)
    if magnitude is not None:
        u = u * magnitude[:, None]
    factor = 1 + u[:, 1] * scale
    params = torch.stack([u[:, 0] * rotation_deg * torch.pi / 180, 1 / factor if content_scale else factor,
                          u[:, 2] * 2 * shift, u[:, 3] * 2 * shift], dim=1)
    return similarity_thetas(*params.unbind(1))


def blur_radius(max_sigma: float) -> int:
    """Half-width in pixels of a kernel wide enough for Gaussians up to ``max_sigma``: 3 stds."""
    return math.ceil(3 * max_sigma)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each image of ``x`` ``(B, C, H, W)`` with its own Gaussian, std ``sigma[b]`` pixels ``(B,)``.

    Separable kernels of half-width ``radius`` (``blur_radius(sigma.max())``; passed in, so that no
    step waits for the device), edges replicated; ``sigma = 0`` leaves an image unchanged. Same
    shape and dtype out.
    """
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must have shape ({x.shape[0]},), got {tuple(sigma.shape)}")
    if radius == 0:
        return x
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    weights = torch.exp(-0.5 * (taps / sigma.float().clamp_min(1e-6)[:, None]) ** 2)  # (B, 2r+1)
    weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(x.shape[1], 0).to(x.dtype)
    b, c, h, w = x.shape
    flat = x.reshape(1, b * c, h, w)  # one group per image channel
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), weights[:, None, None, :], groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), weights[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


@dataclass
class EpochJitter:
    """One epoch's random draws for every training image; :meth:`apply` augments a batch by its indices."""

    thetas: torch.Tensor | None  # (N, 2, 3) similarity per image, or None: no similarity jitter
    sigmas: torch.Tensor | None  # (N,) blur std in pixels per image, or None: no blur
    radius: int = 0  # blur kernel half-width, enough for the largest possible std
    tilts: torch.Tensor | None = None  # (N, 3, 3) tilt homography per image, or None: no tilt

    @classmethod
    def draw(cls, n: int, rotation_deg: float, scale: float, shift: float, blur: float,
             generator: torch.Generator, device: torch.device | str, tilt_deg: float = 0.0,
             content_scale: bool = False, graded: bool = False, ceiling: float = 1.0) -> "EpochJitter":
        """Thetas (if any similarity range is non-zero; ``content_scale``: see :func:`random_thetas`), blur
        stds uniform in ``[0, blur]`` (if ``blur > 0``), then tilts of angle uniform in ``±tilt_deg`` about
        an axis drawn per image (if ``tilt_deg > 0``), from ``generator`` in that order. ``graded``: first
        one magnitude per image, uniform in [0, ``ceiling``], that scales its similarity and tilt draws, so
        that mild distortions are common and the full ranges still occur (at a ``ceiling`` of 1)."""
        magnitude = torch.rand(n, generator=generator) * ceiling if graded else None
        thetas = None
        if rotation_deg or scale or shift:
            thetas = random_thetas(n, rotation_deg, scale, shift, generator, content_scale, magnitude)
        sigmas = torch.rand(n, generator=generator) * blur if blur else None
        tilts = None
        if tilt_deg:
            angles = (torch.rand(n, generator=generator) * 2 - 1) * tilt_deg
            if magnitude is not None:
                angles = angles * magnitude
            tilts = tilt_thetas(angles, torch.randint(0, 2, (n,), generator=generator))
        return cls(*(t.to(device) if t is not None else None for t in (thetas, sigmas)), blur_radius(blur),
                   tilts.to(device) if tilts is not None else None)

    def matrices(self, index: slice) -> torch.Tensor | None:
        """The sampling maps ``(B, 3, 3)`` of the images ``index``: the similarity, then the tilt (the
        content moved, then seen off-axis); None without a geometric jitter."""
        if self.tilts is None:
            return None if self.thetas is None else homogeneous(self.thetas[index])
        return self.tilts[index] if self.thetas is None else homogeneous(self.thetas[index]) @ self.tilts[index]

    def apply(self, x: torch.Tensor, index: slice) -> torch.Tensor:
        """The batch ``x`` ``(B, C, H, W)`` holding the images ``index`` of the epoch's draw, augmented."""
        if self.tilts is not None:  # one homography, one resampling
            x = warp(x, self.matrices(index))
        elif self.thetas is not None:
            x = warp(x, self.thetas[index])
        if self.sigmas is not None:
            x = gaussian_blur(x, self.sigmas[index], self.radius)
        return x

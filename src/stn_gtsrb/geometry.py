"""Maps that move an image's content: a similarity (turn, scale, shift) and a tilt (the image seen
off-axis, a homography). Both are sampling maps in transformer.py's convention (output -> input
coordinates, the image spanning [-1, 1]), so :func:`transformer.warp` applies them.

The robustness report distorts test images with them, the serve page and test-time augmentation
build their views with them, and training jitter draws tilts with them.
"""

from __future__ import annotations

import math

import torch

TILT_DISTANCE = 3.0  # the tilt's camera distance in half-sides of the image: a 37° view of the upright image


def content_thetas(angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                   direction: torch.Tensor) -> torch.Tensor:
    """Sampling thetas ``(N, 2, 3)`` (transformer.py's convention: output -> input coordinates) that show
    each image's content turned by ``angle`` degrees, scaled by ``scale`` and moved by ``shift`` of the
    side towards ``direction``.

    The content moves as ``p -> k·R(a)·p + d``; sampling inverts that: ``q -> R(-a)·(q - d) / k``,
    with ``d`` in normalised coordinates (the side is 2 long).
    """
    radians = angle * math.pi / 180
    cos, sin = torch.cos(radians), torch.sin(radians)
    inverse = torch.stack([cos, sin, -sin, cos], dim=1).view(-1, 2, 2) / scale.view(-1, 1, 1)
    moved = torch.stack([torch.cos(direction), torch.sin(direction)], dim=1) * 2 * shift.view(-1, 1)
    return torch.cat([inverse, -(inverse @ moved.unsqueeze(2))], dim=2)


def tilt_thetas(angle: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Sampling homographies ``(N, 3, 3)`` (transformer.py's projective convention: output -> input) that
    show each image turned by ``angle`` degrees about its vertical (``axis`` 0) or horizontal (1) axis
    through its centre, seen by a pinhole camera ``TILT_DISTANCE`` (``d``) half-sides away.

    Turned about the vertical axis, the image point ``(u, v)`` is seen at
    ``(u·cos a, v) / (1 - u·sin a / d)`` (a positive angle brings the right edge nearer); sampling
    inverts that: ``(x, y) -> (x, y·cos a) / (cos a + x·sin a / d)``. About the horizontal axis, x
    and y swap roles (a positive angle brings the bottom edge nearer). Zero degrees: the identity.
    """
    radians = angle * math.pi / 180
    cos, lean = torch.cos(radians), torch.sin(radians) / TILT_DISTANCE
    zero, one, vertical = torch.zeros_like(cos), torch.ones_like(cos), axis == 0
    rows = [torch.where(vertical, one, cos), zero, zero,
            zero, torch.where(vertical, cos, one), zero,
            torch.where(vertical, lean, zero), torch.where(vertical, zero, lean), cos]
    return torch.stack(rows, dim=1).view(-1, 3, 3)


def homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """Affine ``(B, 2, 3)`` -> ``(B, 3, 3)`` with last row ``[0, 0, 1]``; a projective ``(B, 3, 3)`` as it is."""
    if theta.shape[1] == 3:
        return theta
    bottom = theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)
    return torch.cat([theta, bottom], dim=1)

"""Sampling geometry: the coordinate convention, points, grids and the bilinear sampler, and the
maps that move an image's content.

Conventions (the transformers' and every distortion's):

* A map sends *output* coordinates to *input* coordinates, both normalised to ``[-1, 1]`` (x to the
  right, y down), as ``F.grid_sample`` reads them: the output pixel at ``p`` shows the input at ``T(p)``.
* ``align_corners=False`` everywhere: -1 and 1 are the outer *edges* of the border pixels, so the
  identity reproduces the input exactly and the identity's sampled region is the whole image.
* A *matrix* map is an affine ``(B, 2, 3)`` theta, ``[x_in, y_in]^T = theta[:, :, :2] @ [x_out, y_out]^T
  + theta[:, :, 2]`` (as ``F.affine_grid``), or a homography ``(B, 3, 3)``, ``[u, v, w]^T = theta @
  [x_out, y_out, 1]^T``, ``(x_in, y_in) = (u, v) / w``, with ``w`` kept above ``W_MIN`` (a frame folding
  behind the viewer samples far outside the input instead of dividing by zero).

The maps that move content: a similarity (turn, scale, shift) and a tilt (the image seen off-axis, a
homography). The robustness report distorts test images with them, the serve page and test-time
augmentation build their views with them, and training jitter draws tilts with them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALIGN_CORNERS = False
W_MIN = 1e-3  # the least homogeneous w of a projective map (see the module docstring)
FRAME_CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])  # top-left, clockwise on screen
OUTLINE_SAMPLES = 16  # points per side of the outline a curved region is measured and drawn on

TILT_DISTANCE = 3.0  # the tilt's camera distance in half-sides of the image: a 37° view of the upright image


def similarity_thetas(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Affine thetas ``(N, 2, 3)`` ``[[s·cos a, -s·sin a, tx], [s·sin a, s·cos a, ty]]`` of angles ``a``
    (radians), scales ``s`` and translations, each ``(N,)``."""
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    return torch.stack([cos, -sin, tx, sin, cos, ty], dim=1).view(-1, 2, 3)


def content_thetas(angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                   direction: torch.Tensor) -> torch.Tensor:
    """Sampling thetas ``(N, 2, 3)`` (the convention above) that show each image's content turned by
    ``angle`` degrees, scaled by ``scale`` and moved by ``shift`` of the side towards ``direction``
    (radians): :func:`moved_content_thetas` with the move ``2·shift·(cos, sin)(direction)``."""
    moved = torch.stack([torch.cos(direction), torch.sin(direction)], dim=1) * 2 * shift.view(-1, 1)
    return moved_content_thetas(angle, scale, moved)


def moved_content_thetas(angle: torch.Tensor, scale: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """Sampling thetas ``(N, 2, 3)`` that show each image's content turned by ``angle`` degrees (clockwise on
    screen), scaled by ``scale`` and moved by ``moved`` ``(N, 2)`` (x right, y down) in normalised
    coordinates (the side is 2 long: twice the fraction of the side).

    The content moves as ``p -> k·R(a)·p + d``; sampling inverts that: ``q -> R(-a)·(q - d) / k``.
    """
    radians = angle * math.pi / 180
    cos, sin = torch.cos(radians), torch.sin(radians)
    inverse = torch.stack([cos, sin, -sin, cos], dim=1).view(-1, 2, 2) / scale.view(-1, 1, 1)
    return torch.cat([inverse, -(inverse @ moved.unsqueeze(2))], dim=2)


def tilt_thetas(angle: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Sampling homographies ``(N, 3, 3)`` (a homography in the convention above) that
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


# ---------------------------------------------------------------- points, grids and the sampler

def pixel_centres(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The normalised (x, y) of every pixel centre of an ``H×W`` image, row-major: ``(H·W, 2)``."""
    xs = (torch.arange(width, dtype=dtype, device=device) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=dtype, device=device) * 2 + 1) / height - 1
    return torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)], dim=-1).reshape(-1, 2)


def matrix_points(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Output points ``(B, N, 2)`` (or ``(N, 2)``, shared) mapped by an affine ``(B, 2, 3)`` or projective
    ``(B, 3, 3)`` theta to input points ``(B, N, 2)``."""
    mapped = points @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]
    if theta.shape[1] == 2:
        return mapped
    return mapped[..., :2] / mapped[..., 2:].clamp(min=W_MIN)


def matrix_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The sampling grid ``(B, H, W, 2)`` of an affine or projective theta (see :func:`matrix_points`):
    ``F.affine_grid`` for an affine theta, else (and while exporting to ONNX, whose AffineGrid needs
    opset 20) the points mapped by a matrix product, the same numbers to 1e-6."""
    if theta.shape[1:] == (2, 3) and not torch.onnx.is_in_onnx_export():
        return F.affine_grid(theta, [theta.shape[0], 1, height, width], align_corners=ALIGN_CORNERS)
    return matrix_points(theta, pixel_centres(height, width, theta.dtype, theta.device)).view(-1, height, width, 2)


def sample(x: torch.Tensor, grid: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Bilinear samples of ``x`` ``(B, C, H, W)`` at ``grid`` ``(B, H', W', 2)``: ``(B, C, H', W')``."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding, align_corners=ALIGN_CORNERS)


def warp(x: torch.Tensor, theta: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Bilinear resampling of ``x`` ``(B, C, H, W)`` by an affine ``(B, 2, 3)`` or projective ``(B, 3, 3)``
    theta; same size out.

    ``padding``: what samples outside ``x`` read, ``"zeros"`` (the transformer's) or ``"border"``
    (the nearest edge pixel, for test-time distortions).
    """
    if theta.shape not in ((x.shape[0], 2, 3), (x.shape[0], 3, 3)):
        raise ValueError(f"theta must have shape ({x.shape[0]}, 2, 3) or ({x.shape[0]}, 3, 3), "
                         f"got {tuple(theta.shape)}")
    return sample(x, matrix_grid(theta.to(x.dtype), x.shape[2], x.shape[3]), padding)


# ---------------------------------------------------------------- a sampled region's outline

def outline(samples: int) -> torch.Tensor:
    """The output frame's border, ``samples`` points per side from each corner on: ``(4·samples, 2)``."""
    steps = torch.arange(samples, dtype=torch.float32)[:, None] / samples
    ends = FRAME_CORNERS.roll(-1, 0)
    return torch.cat([start + steps * (end - start) for start, end in zip(FRAME_CORNERS, ends, strict=True)])


def polygon_centre_scale(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid ``(B, 2)`` and ``sqrt(|area| / 4)`` ``(B,)`` of closed polygons ``(B, N, 2)`` (shoelace)."""
    x, y = points.unbind(-1)
    nx, ny = x.roll(-1, 1), y.roll(-1, 1)
    cross = x * ny - nx * y
    area = cross.sum(1) / 2
    centre = torch.stack([((x + nx) * cross).sum(1), ((y + ny) * cross).sum(1)], dim=1) / (6 * area[:, None])
    return centre, (area.abs() / 4).sqrt()

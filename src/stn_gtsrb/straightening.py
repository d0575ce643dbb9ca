"""Straightening: how far each transformer's sampled region turns with the sign.

The images are turned by known angles α (their content, as ``robustness`` turns it, edge pixels
replicated). A transformer that straightens samples a region turned with the content, so that what it
passes on stays upright. Per transformer and image, the region's turn at α is the angle of its frame's
horizontal axis (the mean of its top and bottom edges, from the corners in input coordinates) at α minus
the same image's at 0°; the content's own turn is measured the same way on the content's frame, so
both share one sign convention. Pooled over images and angles, the region's turn is regressed on the
content's through the origin:

    slope     1 for an ideal straightener, 0 for a region that does not turn
    scatter   the root-mean-square residual of that fit, in degrees

``mean_turn`` gives the region's mean turn at each angle, for the picture.
"""

from __future__ import annotations

import torch

from .data import Normalizer
from .geometry import FRAME_CORNERS, content_thetas, homogeneous, matrix_points
from .models import ConvNet
from .robustness import resample
from .visualize import image_regions

ANGLES = tuple(float(angle) for angle in range(-45, 46, 5))  # degrees, both ways
IMAGES = 1000  # how many of the scored images are turned (the first of the report's subset)


def axis_angle(corners: torch.Tensor) -> torch.Tensor:
    """Degrees ``(B,)`` of the horizontal axis of frames given by their corners ``(B, 4, 2)`` (top-left,
    top-right, bottom-right, bottom-left, normalised input coordinates, y down)."""
    axis = (corners[:, 1] - corners[:, 0]) + (corners[:, 2] - corners[:, 3])
    return torch.rad2deg(torch.atan2(axis[:, 1], axis[:, 0]))


def wrapped(degrees: torch.Tensor) -> torch.Tensor:
    """Angles folded into [-180, 180)."""
    return (degrees + 180) % 360 - 180


def turn_thetas(angle: float, n: int) -> torch.Tensor:
    """Sampling thetas ``(n, 2, 3)`` that turn the content by ``angle`` degrees."""
    one = torch.ones(n)
    return content_thetas(one * angle, one, one * 0, one * 0)


def content_turn(angle: float) -> float:
    """The content's own turn at ``angle``, measured as a region's: the axis of the content's frame (the
    inverse of its sampling map applied to the frame's corners)."""
    frame = torch.linalg.inv(homogeneous(turn_thetas(angle, 1)))
    return float(axis_angle(matrix_points(frame, FRAME_CORNERS)))


@torch.no_grad()
def region_turns(model: ConvNet, normalizer: Normalizer, images: torch.Tensor,
                 angles: tuple[float, ...] = ANGLES) -> dict[int, torch.Tensor]:
    """Per transformer position, its region's turn ``(A, N)`` in degrees for uint8 ``images`` ``(N, 3, S, S)``
    turned by each of ``angles``, relative to the unturned images."""
    model.eval()
    device = next(model.parameters()).device

    def axes(turned: torch.Tensor) -> dict[int, torch.Tensor]:
        _, thetas, _ = model.trace(normalizer(turned.to(device)))
        regions = image_regions(model, {p: theta.float().cpu() for p, theta in thetas.items()})
        return {position: axis_angle(region.points(FRAME_CORNERS)) for position, region in regions.items()}

    upright = axes(images)
    turned = [axes(resample(images, turn_thetas(angle, len(images)))) for angle in angles]
    return {position: torch.stack([wrapped(t[position] - upright[position]) for t in turned]) for position in upright}


def fit(content: torch.Tensor, turns: torch.Tensor) -> dict[str, float]:
    """The slope through the origin of ``turns`` ``(A, N)`` on ``content`` ``(A,)``, and its scatter (degrees)."""
    x = content[:, None].expand_as(turns)
    slope = float((x * turns).sum() / (x * x).sum())
    return {"slope": slope, "scatter": float((turns - slope * x).pow(2).mean().sqrt())}


def straightening(model: ConvNet, normalizer: Normalizer, images: torch.Tensor,
                  angles: tuple[float, ...] = ANGLES) -> dict[int, dict]:
    """Per transformer position: ``slope``, ``scatter`` and ``mean_turn`` (one per angle) for ``images``."""
    content = torch.tensor([content_turn(angle) for angle in angles])
    return {position: {**fit(content, turns), "mean_turn": turns.mean(1).tolist()}
            for position, turns in region_turns(model, normalizer, images, angles).items()}

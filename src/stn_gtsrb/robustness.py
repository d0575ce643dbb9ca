"""Geometric robustness: accuracy of trained models under controlled rotation, scale, shift and tilt.

``stn-gtsrb robustness`` distorts raw images (uint8, before each model's own
normalisation; the test images, or a validation split) and scores every model
on the same distorted images. A distortion moves each image's content about the image centre;
samples falling outside the image read its nearest edge pixel (no black
corners), and the result is rounded back to uint8, a picture like any other:

    rotation a   the content turned by a degrees, one way or the other (drawn per image)
    scale k      the content drawn at k times its size (k < 1: zoomed out)
    shift s      the content moved by s of the image side, in a direction drawn per image
    combined t   all three at fraction t of the default ranges: turned by 45·t degrees,
                 scaled by 1 ± 0.4·t (zoom in or out, drawn per image), moved by 0.25·t
    tilt a       the sign seen a degrees off-axis: turned about its vertical or its horizontal
                 axis (drawn per image), one way or the other (the turn's draw), and viewed
                 by a pinhole camera ``geometry.TILT_DISTANCE`` half-sides away that keeps its centre in
                 the middle: a perspective warp (a homography), the near side larger

The draws (turn direction, shift direction, zoom in or out, tilt axis) are made once per
image from the seed, so every level and every model sees the same images
moved the same way, and a result is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from .classes import MIRROR_PAIRS, NUM_CLASSES
from .errors import StnError
from .geometry import content_thetas, tilt_thetas, warp

TRANSFORMS = ("rotation", "scale", "shift", "combined", "tilt")
DEFAULT_LEVELS = {"rotation": (0, 5, 10, 15, 20, 25, 30, 35, 40, 45),  # degrees, either way
                  "scale": (0.6, 0.7, 0.75, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4),  # content size factor
                  "shift": (0, 0.05, 0.1, 0.15, 0.2, 0.25),  # fraction of the side
                  "combined": (0, 0.2, 0.4, 0.6, 0.8, 1.0),  # fraction of the ranges above
                  "tilt": (0, 10, 20, 30, 40, 50, 60)}  # degrees off-axis
LIMITS = {"rotation": (0, 180), "scale": (0.25, 4), "shift": (0, 0.5), "combined": (0, 1),
          "tilt": (0, 70)}  # allowed levels (a tilt of 71.6° would bring the horizon into the view)
UNITS = {"rotation": "degrees, either way", "scale": "content size factor", "shift": "fraction of the side",
         "combined": "fraction of ±45°, 1 ± 0.4 and 0.25", "tilt": "degrees off-axis, either way, about either axis"}
UNDISTORTED = {"rotation": 0.0, "scale": 1.0, "shift": 0.0, "combined": 0.0, "tilt": 0.0}  # the image left as is


def check_levels(levels: dict[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
    """``levels`` if every transform is known and every level lies in its ``LIMITS``; else StnError."""
    for name, values in levels.items():
        if name not in LIMITS:
            raise StnError(f"unknown distortion {name!r}; valid: {', '.join(TRANSFORMS)}")
        low, high = LIMITS[name]
        bad = [value for value in values if not low <= value <= high]  # NaN fails both comparisons
        if not values or bad:
            raise StnError(f"--{name} levels must lie in [{low:g}, {high:g}], got {bad[0] if bad else 'none'}")
    return levels


@dataclass
class Draws:
    """The per-image random choices ``(N,)``: turn (±1), shift direction (radians; 0 = right, y down),
    zoom (+1: in, −1: out, for ``combined``), tilt axis (0: vertical, 1: horizontal)."""

    turn: torch.Tensor
    direction: torch.Tensor
    zoom: torch.Tensor
    axis: torch.Tensor

    @classmethod
    def make(cls, n: int, seed: int) -> "Draws":
        generator = torch.Generator().manual_seed(seed)
        turn = torch.randint(0, 2, (n,), generator=generator) * 2.0 - 1
        direction = torch.rand(n, generator=generator) * 2 * math.pi
        zoom = torch.randint(0, 2, (n,), generator=generator) * 2.0 - 1
        axis = torch.randint(0, 2, (n,), generator=generator)  # drawn last: the others stay as they were
        return cls(turn, direction, zoom, axis)


def distortion(transform: str, level: float, draws: Draws) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (angle in degrees, scale factor, shift as a fraction of the side), each ``(N,)``."""
    zero, one = torch.zeros_like(draws.turn), torch.ones_like(draws.turn)
    if transform == "rotation":
        return draws.turn * level, one, zero
    if transform == "scale":
        return zero, one * level, zero
    if transform == "shift":
        return zero, one, one * level
    return draws.turn * 45 * level, 1 + draws.zoom * 0.4 * level, one * 0.25 * level


def resample(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """uint8 ``images`` ``(N, C, S, S)`` resampled by an affine ``(N, 2, 3)`` or projective ``(N, 3, 3)``
    theta, edge pixels replicated (uint8)."""
    warped = warp(images.float(), theta.to(images.device), padding="border")
    return warped.round().clamp(0, 255).to(torch.uint8)


def distort(images: torch.Tensor, transform: str, level: float, draws: Draws) -> torch.Tensor:
    """uint8 ``images`` ``(N, C, S, S)`` distorted by ``transform`` at ``level`` (uint8, same shape)."""
    if transform == "tilt":
        return resample(images, tilt_thetas(draws.turn * level, draws.axis))
    return resample(images, content_thetas(*distortion(transform, level, draws), draws.direction))


Classifier = Callable[[torch.Tensor], torch.Tensor]  # uint8 images (N, 3, S, S) -> predicted class ids (N,)


def robustness_rows(classifiers: dict[str, Classifier], images: torch.Tensor, labels: torch.Tensor,
                    levels: dict[str, tuple[float, ...]], seed: int, progress: bool = False) -> list[dict]:
    """Accuracy of every classifier at every level of every distortion, as rows
    ``{"transform", "level", "model", "accuracy", "correct", "total", "mirror_errors"}`` (the last:
    :func:`mirror_errors`).

    ``images``: the uint8 images ``(N, 3, S, S)`` all classifiers take; ``labels`` ``(N,)``.
    """
    draws = Draws.make(len(labels), seed)
    steps = [(transform, level) for transform in TRANSFORMS if transform in levels for level in levels[transform]]
    rows = []
    for transform, level in tqdm(steps, desc="robustness", unit="level", disable=not progress):
        distorted = distort(images, transform, level, draws)
        for name, classify in classifiers.items():
            predicted = classify(distorted).cpu()
            correct = int((predicted == labels.cpu()).sum())
            rows.append({"transform": transform, "level": level, "model": name,
                         "accuracy": 100.0 * correct / len(labels), "correct": correct, "total": len(labels),
                         "mirror_errors": mirror_errors(predicted, labels.cpu())})
    return rows


def mirror_errors(predicted: torch.Tensor, labels: torch.Tensor) -> int:
    """How many images of a class in ``MIRROR_PAIRS`` were taken for their mirror image (keep right for keep
    left, ...)."""
    partner = torch.arange(NUM_CLASSES)
    for a, b in MIRROR_PAIRS:
        partner[a], partner[b] = b, a
    paired = partner[labels] != labels
    return int((paired & (predicted == partner[labels])).sum())

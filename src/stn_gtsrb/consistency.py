"""The straightening term: a transformer should undo the training jitter, not only survive it.

Each training image ``x`` is seen jittered, ``x_J(p) = x(M·p)`` with ``M`` the jitter's sampling map
(augment.py). If the first transformer samples the region ``R`` of the clean image, a transformer
that straightens samples, on the jittered image, the same content: ``R`` carried into the jittered
image's frame, ``M⁻¹·R``. The term is the mean squared distance (in normalised coordinates, the side
being 2 long) between the four corners of the region it samples on ``x_J`` and those of ``M⁻¹·R``.
The clean region is a target, found without gradients, with BatchNorm on its running statistics
(ConvNet.lead_theta), so the term teaches the transformer to move with the content rather than
the clean view to move with the jitter.
"""

from __future__ import annotations

import torch

from .geometry import FRAME_CORNERS, matrix_points
from .models import ConvNet


def straightening_loss(model: ConvNet, clean: torch.Tensor, thetas: dict[int, torch.Tensor],
                       moved: torch.Tensor) -> torch.Tensor:
    """The term for a batch: ``clean`` images ``(B, C, S, S)``, the thetas the model found on their
    jittered views (``model(x_J, return_thetas=True)``) and the jitter's sampling maps ``moved`` ``(B, 3, 3)``."""
    position, clean_theta = model.lead_theta(clean)
    transformer = model.transformers[str(position)]
    corners = FRAME_CORNERS.to(clean.device)
    seen = transformer.map_points(thetas[position].float(), corners)
    carried = matrix_points(torch.linalg.inv(moved.float()), transformer.map_points(clean_theta.float(), corners))
    return (seen - carried).square().sum(-1).mean()

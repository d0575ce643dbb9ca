"""The spatial transformer (Jaderberg et al., 2015): a localisation net, a grid generator and a sampler.

    x --LocalisationNet--> params --family.theta--> theta --family.grid--> grid (B, S, S, 2)
      --F.grid_sample (bilinear)--> warped x

Coordinates follow geometry.py's convention; what the loc-net predicts and how it becomes a grid is the
transform family's (families.py: affine and its restrictions, projective, thin-plate spline). Samples
outside the input read zeros (``padding_mode="zeros"``), like the original Torch sampler, and the output
has the input's spatial size.

With ``passes=K > 1`` the transformer is applied K times, as in inverse-compositional spatial
transformers (Lin and Lucey, 2017): pass k's loc-net (the same one each time) looks at the input
sampled through the maps composed so far and predicts a correction, composed on the output side,
``T <- T ∘ ΔT``; the input is sampled once, through the final map, so no pass blurs it. Only families
whose maps compose (affine, projective) can do this.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import StnError
from .families import TPS_GRID, Family, check_passes, create_family
from .geometry import sample

LEAKY_SLOPE = 0.1  # the negative slope of the "leaky" loc-net activation
# --locnet-act: name -> a new activation layer. ReLU is the original's; a LeakyReLU unit that is off still
# passes a gradient, so it cannot die.
LOCNET_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky": lambda: nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
}


def _pool_if_possible(side: int) -> nn.Module:
    """Max-pool 2 where the map is at least 2 pixels wide (tiny feature maps stay 1×1)."""
    return nn.MaxPool2d(2) if side >= 2 else nn.Identity()


def activation(name: str) -> nn.Module:
    """The loc-net's activation ``name`` (one of ``LOCNET_ACTIVATIONS``)."""
    if name not in LOCNET_ACTIVATIONS:
        raise StnError(f"loc-net activation must be one of {', '.join(LOCNET_ACTIVATIONS)}, got {name!r}")
    return LOCNET_ACTIVATIONS[name]()


class LocalisationNet(nn.Module):
    """Predicts transform parameters from a ``(B, C, S, S)`` map.

    As in the original: max-pool 2, then twice [conv 5×5 (padding 2) → ReLU →
    max-pool 2], fully connected → ReLU, and a final linear layer with zero
    weights and the identity as bias, so training starts from the identity.
    Pools are skipped on 1-pixel maps; the flatten size is derived. ``act="leaky"`` puts a LeakyReLU
    where the original has a ReLU: a ReLU unit that is off for every image passes no gradient, and a
    layer of them leaves the transformer giving every image the same map.

    Args:
        in_channels, in_size: the input map's channels and side.
        widths: ``(conv1, conv2, fc)`` channel/unit counts, e.g. ``(200, 300, 200)``.
        identity: the identity transform's parameters ``(P,)`` (the family's ``identity``).
        act: the activation, one of ``LOCNET_ACTIVATIONS``.
    """

    def __init__(self, in_channels: int, in_size: int, widths: tuple[int, int, int], identity: torch.Tensor,
                 act: str = "relu"):
        super().__init__()
        if len(widths) != 3 or min(widths) <= 0:
            raise StnError(f"loc-net widths must be 3 positive integers, got {widths}")
        c1, c2, hidden = widths
        layers, side = [], in_size
        for conv in (None, nn.Conv2d(in_channels, c1, 5, padding=2), nn.Conv2d(c1, c2, 5, padding=2)):
            if conv is not None:
                layers += [conv, activation(act)]
            layers.append(_pool_if_possible(side))
            side = side // 2 if side >= 2 else side
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(c2 * side * side, hidden), activation(act))
        self.head = nn.Linear(hidden, len(identity))
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))

    def activations(self) -> list[nn.Module]:
        """Its activation layers, in order (conv1, conv2, fc)."""
        kinds = tuple(type(make()) for make in LOCNET_ACTIVATIONS.values())
        return [module for module in self.modules() if isinstance(module, kinds)]


class SpatialTransformer(nn.Module):
    """Localisation net + grid generator + bilinear sampler.

    ``forward(x)`` takes ``(B, C, S, S)`` and returns ``(warped, theta)``: warped ``(B, C, S, S)`` and the
    family's theta. ``map_points`` applies a theta to any output points; ``region`` gives its sampled
    region's centre and scale (both the family's).
    """

    def __init__(self, in_channels: int, in_size: int, widths: tuple[int, int, int], transform: str = "affine",
                 tps_grid: int = TPS_GRID, passes: int = 1, act: str = "relu"):
        super().__init__()
        self.family: Family = create_family(transform, in_size, tps_grid)
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
            raise StnError(f"--passes must be a positive integer, got {passes!r}")
        check_passes(self.family, passes)
        self.in_channels, self.in_size, self.passes = in_channels, in_size, passes
        self.loc = LocalisationNet(in_channels, in_size, widths, torch.tensor(self.family.identity), act)

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The family's theta for the input ``x``, after every pass."""
        theta = self.family.theta(self.loc(x))
        for _ in range(self.passes - 1):
            correction = self.family.theta(self.loc(sample(x, self.grid(theta.to(x.dtype)))))
            theta = self.family.from_matrix(self.family.matrix(theta) @ self.family.matrix(correction))
        return theta

    def grid(self, theta: torch.Tensor) -> torch.Tensor:
        """The sampling grid ``(B, S, S, 2)`` of ``theta`` (in ONNX's operations while being exported)."""
        return self.family.onnx_grid(theta) if torch.onnx.is_in_onnx_export() else self.family.grid(theta)

    def map_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Output points ``(B, N, 2)`` or ``(N, 2)`` -> the input points ``(B, N, 2)`` that they sample."""
        return self.family.map_points(theta, points)

    def region(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampled region's centre ``(B, 2)`` (normalised input coordinates) and scale ``(B,)``."""
        return self.family.region(theta)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != (self.in_size,) * 2:
            raise ValueError(f"expected input (B, {self.in_channels}, {self.in_size}, {self.in_size}), "
                             f"got {tuple(x.shape)}")
        theta = self.theta(x)
        return sample(x, self.grid(theta.to(x.dtype))), theta

    def extra_repr(self) -> str:
        return f"passes={self.passes}" if self.passes > 1 else ""

"""The spatial transformer (Jaderberg et al., 2015).

    x --LocalisationNet--> params --theta_from_params--> theta (B, 2, 3)
      --F.affine_grid--> grid (B, H, W, 2) --F.grid_sample (bilinear)--> warped x

Conventions:

* ``theta`` maps *output* coordinates to *input* coordinates, both normalised
  to ``[-1, 1]`` (x to the right, y down), as ``F.affine_grid`` expects:
  ``[x_in, y_in]^T = theta[:, :, :2] @ [x_out, y_out]^T + theta[:, :, 2]``.
* ``align_corners=False`` everywhere: -1 and 1 are the outer *edges* of the
  border pixels, so the identity theta reproduces the input exactly and the
  sampled region of the identity is the whole image.
* Samples outside the input read zeros (``padding_mode="zeros"``), like the
  original Torch sampler.
* The output has the input's spatial size.

Transform families (``transform`` argument): ``"affine"`` (6 free parameters)
or a ``+``-joined subset of ``rotation`` (angle, radians), ``scale`` (one
isotropic factor) and ``translation`` (x, y), giving
``theta = [[s·cos a, -s·sin a, tx], [s·sin a, s·cos a, ty]]``.
Every family starts at the identity: angle 0, scale 1, shift 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import StnError

FAMILIES = ("rotation", "scale", "translation")
ALIGN_CORNERS = False


def parse_transform(spec: str) -> tuple[str, ...]:
    """``"affine"`` -> ``()``; ``"rotation+scale"`` -> ``("rotation", "scale")`` (canonical order)."""
    if spec == "affine":
        return ()
    parts = spec.split("+")
    unknown = [p for p in parts if p not in FAMILIES]
    if not spec or unknown or len(set(parts)) != len(parts):
        raise StnError(f"bad transform {spec!r}: use 'affine' or a '+'-joined subset of {', '.join(FAMILIES)}")
    return tuple(f for f in FAMILIES if f in parts)


def transform_name(families: tuple[str, ...]) -> str:
    return "+".join(families) if families else "affine"


# Each family's parameters at the identity transform; the full affine family is theta's 6 numbers.
IDENTITY_VALUES = {"rotation": (0.0,), "scale": (1.0,), "translation": (0.0, 0.0)}
AFFINE_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def identity_values(families: tuple[str, ...]) -> tuple[float, ...]:
    """The parameters of the identity transform for a family, as plain numbers (``P`` of them)."""
    if not families:
        return AFFINE_IDENTITY
    return tuple(v for f in families for v in IDENTITY_VALUES[f])


def identity_params(families: tuple[str, ...]) -> torch.Tensor:
    """The parameter vector ``(P,)`` of the identity transform for a family."""
    return torch.tensor(identity_values(families))


def theta_from_params(params: torch.Tensor, families: tuple[str, ...]) -> torch.Tensor:
    """``(B, P)`` parameters -> ``(B, 2, 3)`` theta (see the module docstring)."""
    n_params = len(identity_values(families))
    if params.dim() != 2 or params.shape[1] != n_params:
        raise ValueError(f"expected params of shape (B, {n_params}) for {transform_name(families)}, "
                         f"got {tuple(params.shape)}")
    if not families:
        return params.view(-1, 2, 3)
    columns = iter(params.unbind(1))
    zero, one = params.new_zeros(params.shape[0]), params.new_ones(params.shape[0])
    angle = next(columns) if "rotation" in families else zero
    scale = next(columns) if "scale" in families else one
    tx, ty = (next(columns), next(columns)) if "translation" in families else (zero, zero)
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    return torch.stack([cos, -sin, tx, sin, cos, ty], dim=1).view(-1, 2, 3)


def portable_affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, H, W), align_corners=False)`` as a matrix product: ``(B, H, W, 2)``.

    The same numbers, from operations every ONNX opset has (ONNX's AffineGrid needs opset 20).
    """
    xs = (torch.arange(width, dtype=theta.dtype, device=theta.device) * 2 + 1) / width - 1  # pixel centres
    ys = (torch.arange(height, dtype=theta.dtype, device=theta.device) * 2 + 1) / height - 1
    base = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                        torch.ones(height, width, dtype=theta.dtype, device=theta.device)], dim=-1)
    return (base.reshape(1, height * width, 3) @ theta.transpose(1, 2)).reshape(-1, height, width, 2)


def warp(x: torch.Tensor, theta: torch.Tensor, portable: bool = False, padding: str = "zeros") -> torch.Tensor:
    """Bilinear resampling of ``x`` ``(B, C, H, W)`` by ``theta`` ``(B, 2, 3)``; same size out.

    ``portable=True`` builds the grid with :func:`portable_affine_grid` (for ONNX export).
    ``padding``: what samples outside ``x`` read, ``"zeros"`` (the transformer's) or ``"border"``
    (the nearest edge pixel, for test-time distortions).
    """
    if theta.shape != (x.shape[0], 2, 3):
        raise ValueError(f"theta must have shape ({x.shape[0]}, 2, 3), got {tuple(theta.shape)}")
    if portable:
        grid = portable_affine_grid(theta.to(x.dtype), x.shape[2], x.shape[3])
    else:
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=ALIGN_CORNERS)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=ALIGN_CORNERS)


def _pool_if_possible(side: int) -> nn.Module:
    """Max-pool 2 where the map is at least 2 pixels wide (tiny feature maps stay 1×1)."""
    return nn.MaxPool2d(2) if side >= 2 else nn.Identity()


class LocalisationNet(nn.Module):
    """Predicts transform parameters from a ``(B, C, S, S)`` map.

    As in the original: max-pool 2, then twice [conv 5×5 (padding 2) → ReLU →
    max-pool 2], fully connected → ReLU, and a final linear layer with zero
    weights and the identity as bias, so training starts from the identity.
    Pools are skipped on 1-pixel maps; the flatten size is derived.

    Args:
        in_channels, in_size: the input map's channels and side.
        widths: ``(conv1, conv2, fc)`` channel/unit counts, e.g. ``(200, 300, 200)``.
        families: transform family (see :func:`parse_transform`).
    """

    def __init__(self, in_channels: int, in_size: int, widths: tuple[int, int, int], families: tuple[str, ...]):
        super().__init__()
        if len(widths) != 3 or min(widths) <= 0:
            raise StnError(f"loc-net widths must be 3 positive integers, got {widths}")
        c1, c2, hidden = widths
        layers, side = [], in_size
        for conv in (None, nn.Conv2d(in_channels, c1, 5, padding=2), nn.Conv2d(c1, c2, 5, padding=2)):
            if conv is not None:
                layers += [conv, nn.ReLU(inplace=True)]
            layers.append(_pool_if_possible(side))
            side = side // 2 if side >= 2 else side
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(c2 * side * side, hidden), nn.ReLU(inplace=True))
        identity = identity_params(families)
        self.head = nn.Linear(hidden, len(identity))
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))


class SpatialTransformer(nn.Module):
    """Localisation net + grid generator + bilinear sampler.

    ``forward(x)`` takes ``(B, C, S, S)`` and returns ``(warped, theta)``:
    warped ``(B, C, S, S)`` and theta ``(B, 2, 3)``.
    """

    def __init__(self, in_channels: int, in_size: int, widths: tuple[int, int, int], transform: str = "affine"):
        super().__init__()
        self.families = parse_transform(transform)
        self.in_channels, self.in_size = in_channels, in_size
        self.portable = False  # build the sampling grid by matrix product (set by the ONNX export)
        self.loc = LocalisationNet(in_channels, in_size, widths, self.families)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != (self.in_size,) * 2:
            raise ValueError(f"expected input (B, {self.in_channels}, {self.in_size}, {self.in_size}), "
                             f"got {tuple(x.shape)}")
        theta = theta_from_params(self.loc(x), self.families)
        return warp(x, theta, self.portable), theta

    def extra_repr(self) -> str:
        return f"transform={transform_name(self.families)}"

"""The spatial transformer (Jaderberg et al., 2015): affine, projective and thin-plate-spline.

    x --LocalisationNet--> params --SpatialTransformer.theta--> theta
      --SpatialTransformer.grid--> grid (B, H, W, 2) --F.grid_sample (bilinear)--> warped x

Conventions:

* A transform maps *output* coordinates to *input* coordinates, both
  normalised to ``[-1, 1]`` (x to the right, y down), as ``F.grid_sample``
  reads them: the output pixel at ``p`` shows the input at ``T(p)``.
* ``align_corners=False`` everywhere: -1 and 1 are the outer *edges* of the
  border pixels, so the identity reproduces the input exactly and the sampled
  region of the identity is the whole image.
* Samples outside the input read zeros (``padding_mode="zeros"``), like the
  original Torch sampler.
* The output has the input's spatial size.

Transform families (``transform`` argument), each starting at the identity
(the loc-net's last layer has zero weights and the identity's parameters as
bias), and the ``theta`` each returns:

* ``"affine"``: 6 parameters, ``theta`` ``(B, 2, 3)``,
  ``[x_in, y_in]^T = theta[:, :, :2] @ [x_out, y_out]^T + theta[:, :, 2]``
  (as ``F.affine_grid``).
* a ``+``-joined subset of ``rotation`` (angle, radians), ``scale`` (one
  isotropic factor) and ``translation`` (x, y): the affine
  ``theta = [[s·cos a, -s·sin a, tx], [s·sin a, s·cos a, ty]]``.
* ``"projective"``: a homography, 8 parameters (its 3×3 matrix row-major
  with ``h33 = 1``), ``theta`` ``(B, 3, 3)``:
  ``[u, v, w]^T = theta @ [x_out, y_out, 1]^T``, ``(x_in, y_in) = (u, v) / w``
  (``w`` is kept above ``W_MIN``: a frame folding behind the viewer samples
  far outside the input instead of dividing by zero).
* ``"tps"``: a thin-plate spline through ``K×K`` control points on a regular
  grid of the output frame (``tps_grid=K``, corners at ±1; K from 2). The
  loc-net predicts each control point's offset (``2·K²`` parameters, zero at
  the identity); ``theta`` ``(B, K², 2)`` is where each control point samples
  the input (row-major, x fastest). Between control points the map is the
  spline of least bending energy, ``f(p) = a + A·p + Σ_i w_i·U(|p - c_i|)``
  with ``U(r) = r² log r``; as it is linear in ``theta``, every point's weights
  on the control points are solved in closed form once per K and output size
  (:func:`tps_weights`) and stored as a buffer: a grid is one matrix product.
  It is applied to the offsets, ``p + weights(p) @ (theta - c)`` (the spline
  reproduces affine maps, so this is the same map), which makes the identity exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import StnError

FAMILIES = ("rotation", "scale", "translation")  # the restrictions of the affine family
PROJECTIVE, TPS = "projective", "tps"
TPS_GRID = 4  # control points per side of the default thin-plate spline
ALIGN_CORNERS = False
W_MIN = 1e-3  # the least homogeneous w of a projective map (see the module docstring)


def parse_transform(spec: str) -> tuple[str, ...]:
    """``"affine"`` -> ``()``; ``"rotation+scale"`` -> ``("rotation", "scale")`` (canonical order);
    ``"projective"`` -> ``("projective",)``; ``"tps"`` -> ``("tps",)``."""
    if spec == "affine":
        return ()
    if spec in (PROJECTIVE, TPS):
        return (spec,)
    parts = spec.split("+")
    unknown = [p for p in parts if p not in FAMILIES]
    if not spec or unknown or len(set(parts)) != len(parts):
        raise StnError(f"bad transform {spec!r}: use 'affine', '{PROJECTIVE}', '{TPS}' or a '+'-joined subset of "
                       f"{', '.join(FAMILIES)}")
    return tuple(f for f in FAMILIES if f in parts)


def transform_name(families: tuple[str, ...]) -> str:
    return "+".join(families) if families else "affine"


def check_tps_grid(grid: int) -> int:
    """``grid`` if it is a usable number of control points per side (2 or more); else StnError."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise StnError(f"--tps-grid must be an integer of at least 2 (control points per side), got {grid!r}")
    return grid


# Each affine family's parameters at the identity transform; the full affine family is theta's 6 numbers.
IDENTITY_VALUES = {"rotation": (0.0,), "scale": (1.0,), "translation": (0.0, 0.0)}
AFFINE_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
PROJECTIVE_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)


def identity_values(families: tuple[str, ...], tps_grid: int = TPS_GRID) -> tuple[float, ...]:
    """The parameters of the identity transform for a family, as plain numbers (``P`` of them)."""
    if not families:
        return AFFINE_IDENTITY
    if families == (PROJECTIVE,):
        return PROJECTIVE_IDENTITY
    if families == (TPS,):
        return (0.0,) * (2 * tps_grid * tps_grid)
    return tuple(v for f in families for v in IDENTITY_VALUES[f])


def identity_params(families: tuple[str, ...], tps_grid: int = TPS_GRID) -> torch.Tensor:
    """The parameter vector ``(P,)`` of the identity transform for a family."""
    return torch.tensor(identity_values(families, tps_grid))


def theta_from_params(params: torch.Tensor, families: tuple[str, ...]) -> torch.Tensor:
    """``(B, P)`` parameters of an affine or projective family -> theta ``(B, 2, 3)`` or ``(B, 3, 3)``
    (see the module docstring; the spline's theta needs its control points: SpatialTransformer.theta)."""
    if families == (TPS,):
        raise ValueError("a spline's theta needs its control points: use SpatialTransformer.theta")
    n_params = len(identity_values(families))
    if params.dim() != 2 or params.shape[1] != n_params:
        raise ValueError(f"expected params of shape (B, {n_params}) for {transform_name(families)}, "
                         f"got {tuple(params.shape)}")
    if not families:
        return params.view(-1, 2, 3)
    if families == (PROJECTIVE,):
        return F.pad(params, (0, 1), value=1.0).view(-1, 3, 3)  # h33 = 1
    columns = iter(params.unbind(1))
    zero, one = params.new_zeros(params.shape[0]), params.new_ones(params.shape[0])
    angle = next(columns) if "rotation" in families else zero
    scale = next(columns) if "scale" in families else one
    tx, ty = (next(columns), next(columns)) if "translation" in families else (zero, zero)
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    return torch.stack([cos, -sin, tx, sin, cos, ty], dim=1).view(-1, 2, 3)


# ---------------------------------------------------------------- points and grids

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


def portable_affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, H, W), align_corners=False)`` as a matrix product: ``(B, H, W, 2)``.

    The same numbers, from operations every ONNX opset has (ONNX's AffineGrid needs opset 20).
    """
    base = F.pad(pixel_centres(height, width, theta.dtype, theta.device), (0, 1), value=1.0)
    return (base.reshape(1, height * width, 3) @ theta.transpose(1, 2)).reshape(-1, height, width, 2)


def matrix_grid(theta: torch.Tensor, height: int, width: int, portable: bool = False) -> torch.Tensor:
    """The sampling grid ``(B, H, W, 2)`` of an affine or projective theta (see :func:`matrix_points`).

    ``portable=True``: the affine grid by :func:`portable_affine_grid` (for ONNX export); the
    projective grid is always a matrix product.
    """
    if theta.shape[1:] == (3, 3):
        return matrix_points(theta, pixel_centres(height, width, theta.dtype, theta.device)).view(-1, height, width, 2)
    if portable:
        return portable_affine_grid(theta, height, width)
    return F.affine_grid(theta, [theta.shape[0], 1, height, width], align_corners=ALIGN_CORNERS)


def sample(x: torch.Tensor, grid: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Bilinear samples of ``x`` ``(B, C, H, W)`` at ``grid`` ``(B, H', W', 2)``: ``(B, C, H', W')``."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding, align_corners=ALIGN_CORNERS)


def warp(x: torch.Tensor, theta: torch.Tensor, portable: bool = False, padding: str = "zeros") -> torch.Tensor:
    """Bilinear resampling of ``x`` ``(B, C, H, W)`` by an affine ``(B, 2, 3)`` or projective ``(B, 3, 3)``
    theta; same size out.

    ``portable=True`` builds an affine grid with :func:`portable_affine_grid` (for ONNX export).
    ``padding``: what samples outside ``x`` read, ``"zeros"`` (the transformer's) or ``"border"``
    (the nearest edge pixel, for test-time distortions).
    """
    if theta.shape not in ((x.shape[0], 2, 3), (x.shape[0], 3, 3)):
        raise ValueError(f"theta must have shape ({x.shape[0]}, 2, 3) or ({x.shape[0]}, 3, 3), "
                         f"got {tuple(theta.shape)}")
    return sample(x, matrix_grid(theta.to(x.dtype), x.shape[2], x.shape[3], portable), padding)


def control_points(grid: int, dtype=torch.float32) -> torch.Tensor:
    """The spline's ``K×K`` control points on the output frame, row-major (x fastest): ``(K², 2)``."""
    ticks = torch.linspace(-1, 1, grid, dtype=dtype)
    return torch.stack([ticks.repeat(grid), ticks.repeat_interleave(grid)], dim=1)


def _tps_kernel(points: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """``U(|p - c|) = r² log r`` for each point ``(M, 2)`` and control point ``(N, 2)``: ``(M, N)``."""
    squared = (points[:, None, :] - control[None, :, :]).square().sum(-1)
    return 0.5 * squared * squared.clamp(min=1e-30).log()  # r² log r = ½ r² log r², 0 at r = 0


def tps_weights(points: torch.Tensor, grid: int) -> torch.Tensor:
    """Each point's weights on the ``K²`` control points' positions: ``(M, K²)`` for points ``(M, 2)``.

    The spline through control points ``c`` with values ``v`` ``(K², 2)`` is, at the points,
    ``tps_weights(points, K) @ v``, from the closed-form solution of the interpolation system
    ``[[U(c, c), P], [P^T, 0]] [w; a] = [v; 0]``, ``P = [1, x, y]`` of ``c`` (solved in float64).
    """
    control = control_points(grid, torch.float64)
    n = len(control)
    lifted = F.pad(control, (1, 0), value=1.0)
    system = torch.zeros(n + 3, n + 3, dtype=torch.float64)
    system[:n, :n], system[:n, n:], system[n:, :n] = _tps_kernel(control, control), lifted, lifted.T
    at = points.to(torch.float64)
    rows = torch.cat([_tps_kernel(at, control), F.pad(at, (1, 0), value=1.0)], dim=1)
    return (rows @ torch.linalg.inv(system)[:, :n]).to(points.dtype)


# ---------------------------------------------------------------- the sampled region's outline

FRAME_CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])  # top-left, clockwise on screen
OUTLINE_SAMPLES = 16  # points per side of the outline a spline's region is measured on


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


# ---------------------------------------------------------------- modules

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
        identity: the identity transform's parameters ``(P,)`` (see :func:`identity_params`).
    """

    def __init__(self, in_channels: int, in_size: int, widths: tuple[int, int, int], identity: torch.Tensor):
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
        self.head = nn.Linear(hidden, len(identity))
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))


class SpatialTransformer(nn.Module):
    """Localisation net + grid generator + bilinear sampler.

    ``forward(x)`` takes ``(B, C, S, S)`` and returns ``(warped, theta)``: warped
    ``(B, C, S, S)`` and the family's theta (module docstring). ``map_points``
    applies a theta to any output points; ``region`` gives its sampled region's
    centre and scale.
    """

    def __init__(self, in_channels: int, in_size: int, widths: tuple[int, int, int], transform: str = "affine",
                 tps_grid: int = TPS_GRID):
        super().__init__()
        self.families = parse_transform(transform)
        self.in_channels, self.in_size = in_channels, in_size
        self.tps_grid = check_tps_grid(tps_grid) if self.families == (TPS,) else None
        self.portable = False  # build an affine sampling grid by matrix product (set by the ONNX export)
        self.loc = LocalisationNet(in_channels, in_size, widths, identity_params(self.families, tps_grid))
        if self.tps_grid:  # derived, not saved: rebuilt from K and S
            self.register_buffer("control", control_points(self.tps_grid), persistent=False)
            self.register_buffer("grid_base", pixel_centres(in_size, in_size), persistent=False)
            self.register_buffer("grid_weights", tps_weights(self.grid_base, self.tps_grid), persistent=False)

    def theta(self, params: torch.Tensor) -> torch.Tensor:
        """The loc-net's ``(B, P)`` output -> the family's theta."""
        if self.tps_grid:
            return self.control + params.view(params.shape[0], -1, 2)
        return theta_from_params(params, self.families)

    def grid(self, theta: torch.Tensor) -> torch.Tensor:
        """The sampling grid ``(B, S, S, 2)`` of ``theta`` over this transformer's output."""
        if self.tps_grid:
            return (self.grid_base + self.grid_weights @ (theta - self.control)).view(-1, self.in_size, self.in_size, 2)
        return matrix_grid(theta, self.in_size, self.in_size, self.portable)

    def map_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Output points ``(B, N, 2)`` or ``(N, 2)`` -> the input points ``(B, N, 2)`` that they sample."""
        if self.tps_grid:
            points, offsets = points.to(theta), theta - self.control.to(theta)
            if points.dim() == 2:
                return points + tps_weights(points, self.tps_grid) @ offsets
            pairs = zip(points, offsets, strict=True)
            return torch.stack([p + tps_weights(p, self.tps_grid) @ o for p, o in pairs])
        return matrix_points(theta, points.to(theta))

    def region(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampled region's centre ``(B, 2)`` (normalised input coordinates) and scale ``(B,)``
        (square root of its area over the whole frame's, 4).

        Affine: exactly the image of the frame's centre and ``sqrt|det A|``; projective and spline:
        from the warped outline (polygon centroid and area, shoelace), which agree with those for an affine.
        """
        theta = theta.float()
        if theta.shape[1:] == (2, 3):
            return theta[:, :, 2], theta[:, :, :2].det().abs().sqrt()
        return polygon_centre_scale(self.map_points(theta, outline(OUTLINE_SAMPLES).to(theta)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != (self.in_size,) * 2:
            raise ValueError(f"expected input (B, {self.in_channels}, {self.in_size}, {self.in_size}), "
                             f"got {tuple(x.shape)}")
        theta = self.theta(self.loc(x))
        return sample(x, self.grid(theta.to(x.dtype))), theta

    def extra_repr(self) -> str:
        return f"transform={transform_name(self.families)}" + (f", tps_grid={self.tps_grid}" if self.tps_grid else "")

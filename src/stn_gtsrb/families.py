"""Transform families: what a spatial transformer's loc-net predicts, and the sampling map it makes.

A family is an object made by ``create_family(spec, size, tps_grid=...)`` for a transformer whose
output is ``size×size``. It is an ``nn.Module`` only so that its precomputed tensors follow the
model's device; it has no parameters and saves nothing. A new family is one class registered with
``@register_family(name)``, and tests/test_families.py runs every family through the same contract:

================== =======================================================================
``n_params``       how many numbers the loc-net predicts
``identity``       those numbers at the identity map (the loc-net's initial bias)
``theta(params)``  ``(B, P)`` -> the family's theta (its shape is the family's own)
``grid(theta)``    the sampling grid ``(B, S, S, 2)`` over the transformer's output
``onnx_grid``      the same grid from operations ONNX opset 17 has (what the export traces)
``map_points``     output points ``(N, 2)`` or ``(B, N, 2)`` -> the input points ``(B, N, 2)`` they sample
``region(theta)``  the sampled region's centre ``(B, 2)`` and scale ``(B,)`` (the square root of
                   its area over the whole frame's)
``composes``       whether two maps compose into one map of the family, by their matrices:
``matrix(theta)``  the ``(B, 3, 3)`` homogeneous matrix, and ``from_matrix`` its inverse
``is_affine``      lines stay parallel: the region is exactly the polygon of its corners
``marks()``        output-frame points and polylines that a drawing marks the region with
================== =======================================================================

Coordinates follow geometry.py's convention. The families, each starting at the identity:

* ``"affine"``: 6 parameters, theta ``(B, 2, 3)`` (geometry.py's affine theta, row-major).
  A ``+``-joined subset of ``rotation`` (angle, radians), ``scale`` (one isotropic factor) and
  ``translation`` (x, y) restricts it: theta ``[[s·cos a, -s·sin a, tx], [s·sin a, s·cos a, ty]]``.
* ``"projective"``: a homography, 8 parameters (its 3×3 matrix row-major with ``h33 = 1``), theta
  ``(B, 3, 3)``.
* ``"tps"``: a thin-plate spline through ``K×K`` control points on a regular grid of the output frame
  (``tps_grid=K``, corners at ±1; K from 2). The loc-net predicts each control point's offset
  (``2·K²`` parameters, zero at the identity); theta ``(B, K², 2)`` is where each control point
  samples the input (row-major, x fastest). Between control points the map is the spline of least
  bending energy, ``f(p) = a + A·p + Σ_i w_i·U(|p - c_i|)`` with ``U(r) = r² log r``; as it is linear
  in theta, every point's weights on the control points are solved in closed form once per K and
  output size (:func:`tps_weights`): a grid is one matrix product. It is applied to the offsets,
  ``p + weights(p) @ (theta - c)`` (the spline reproduces affine maps, so this is the same map),
  which makes the identity exact. Two splines do not compose into one.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import StnError
from .geometry import (
    FRAME_CORNERS,
    OUTLINE_SAMPLES,
    homogeneous,
    matrix_grid,
    matrix_points,
    outline,
    pixel_centres,
    polygon_centre_scale,
    similarity_thetas,
)

RESTRICTIONS = ("rotation", "scale", "translation")  # the parts an affine family may be restricted to
TPS_GRID = 4  # control points per side of the default thin-plate spline
FAMILIES: dict[str, Callable[..., "Family"]] = {}  # name -> class, filled by @register_family


def register_family(name: str):
    """Class decorator: make a :class:`Family` available as ``create_family(name, ...)``."""
    def register(cls):
        FAMILIES[name] = cls
        return cls
    return register


def check_tps_grid(grid: int) -> int:
    """``grid`` if it is a usable number of control points per side (2 or more); else StnError."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise StnError(f"--tps-grid must be an integer of at least 2 (control points per side), got {grid!r}")
    return grid


def check_passes(family: "Family", passes: int) -> int:
    """``passes`` if a transformer of ``family`` can be applied that many times (more than once needs maps
    that compose); else StnError."""
    if passes > 1 and not family.composes:
        raise StnError(f"--passes {passes} composes maps, which the {family.name} family cannot; "
                       f"use affine (or a restriction of it) or projective")
    return passes


def parse_restriction(spec: str) -> tuple[str, ...]:
    """``"scale+rotation"`` -> ``("rotation", "scale")`` (canonical order); StnError for any other name."""
    parts = spec.split("+")
    if not spec or any(p not in RESTRICTIONS for p in parts) or len(set(parts)) != len(parts):
        raise StnError(f"bad transform {spec!r}: use {', '.join(repr(name) for name in FAMILIES)} or a "
                       f"'+'-joined subset of {', '.join(RESTRICTIONS)}")
    return tuple(p for p in RESTRICTIONS if p in parts)


def create_family(spec: str, size: int, tps_grid: int = TPS_GRID) -> "Family":
    """The family named ``spec`` (a registered name or an affine restriction) for a ``size×size`` output;
    ``tps_grid`` is used by the spline alone."""
    if spec in FAMILIES:
        return FAMILIES[spec](size, tps_grid=tps_grid)
    return Affine(size, restrict=parse_restriction(spec))


class Family(nn.Module):
    """The contract (module docstring). Subclasses set ``name`` and the identity, and define :meth:`theta`,
    :meth:`grid` and :meth:`map_points`; the rest has defaults."""

    name: str
    identity: tuple[float, ...]
    composes = False
    is_affine = False

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    @property
    def n_params(self) -> int:
        return len(self.identity)

    def theta(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grid(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def onnx_grid(self, theta: torch.Tensor) -> torch.Tensor:
        """The grid as the export traces it: :meth:`grid` by default (geometry.matrix_grid, which the affine
        and projective families use, builds it by a matrix product while exporting)."""
        return self.grid(theta)

    def map_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def region(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the warped outline (polygon centroid and area, shoelace)."""
        theta = theta.float()
        return polygon_centre_scale(self.map_points(theta, outline(OUTLINE_SAMPLES).to(theta)))

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        raise StnError(f"a {self.name} map has no matrix: it does not compose")

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        raise StnError(f"a {self.name} map has no matrix: it does not compose")

    def marks(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The frame's corners, and its closed outline."""
        return FRAME_CORNERS, [torch.cat([outline(OUTLINE_SAMPLES), FRAME_CORNERS[:1]])]

    def check_params(self, params: torch.Tensor) -> None:
        if params.dim() != 2 or params.shape[1] != self.n_params:
            raise ValueError(f"expected params of shape (B, {self.n_params}) for {self.name}, "
                             f"got {tuple(params.shape)}")

    def extra_repr(self) -> str:
        return f"{self.name}, size={self.size}"


@register_family("affine")
class Affine(Family):
    """The affine family, or its restriction to a subset of rotation, scale and translation."""

    composes = is_affine = True
    IDENTITY = {"rotation": (0.0,), "scale": (1.0,), "translation": (0.0, 0.0)}  # each restriction's identity

    def __init__(self, size: int, restrict: tuple[str, ...] = (), **_unused):
        super().__init__(size)
        self.restrict = restrict
        self.name = "+".join(restrict) or "affine"
        self.identity = tuple(v for part in restrict for v in self.IDENTITY[part]) or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

    def theta(self, params: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        if not self.restrict:
            return params.view(-1, 2, 3)
        columns = iter(params.unbind(1))
        zero, one = params.new_zeros(params.shape[0]), params.new_ones(params.shape[0])
        angle = next(columns) if "rotation" in self.restrict else zero
        scale = next(columns) if "scale" in self.restrict else one
        tx, ty = (next(columns), next(columns)) if "translation" in self.restrict else (zero, zero)
        return similarity_thetas(angle, scale, tx, ty)

    def grid(self, theta: torch.Tensor) -> torch.Tensor:
        return matrix_grid(theta, self.size, self.size)

    def map_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return matrix_points(theta, points.to(theta))

    def region(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exactly the image of the frame's centre and ``sqrt|det A|``."""
        theta = theta.float()
        return theta[:, :, 2], theta[:, :, :2].det().abs().sqrt()

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        return homogeneous(theta)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix[:, :2]


@register_family("projective")
class Projective(Family):
    """A homography with ``h33 = 1``."""

    name, composes = "projective", True
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)

    def __init__(self, size: int, **_unused):
        super().__init__(size)

    def theta(self, params: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        return F.pad(params, (0, 1), value=1.0).view(-1, 3, 3)

    def grid(self, theta: torch.Tensor) -> torch.Tensor:
        return matrix_grid(theta, self.size, self.size)

    def map_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return matrix_points(theta, points.to(theta))

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        return theta

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix


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


@register_family("tps")
class Spline(Family):
    """A thin-plate spline through ``tps_grid×tps_grid`` control points."""

    name = "tps"

    def __init__(self, size: int, tps_grid: int = TPS_GRID, **_unused):
        super().__init__(size)
        self.tps_grid = check_tps_grid(tps_grid)
        self.identity = (0.0,) * (2 * tps_grid * tps_grid)
        # derived, not saved: rebuilt from K and S
        self.register_buffer("control", control_points(tps_grid), persistent=False)
        self.register_buffer("grid_base", pixel_centres(size, size), persistent=False)
        self.register_buffer("grid_weights", tps_weights(self.grid_base, tps_grid), persistent=False)

    def theta(self, params: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        return self.control + params.view(params.shape[0], -1, 2)

    def grid(self, theta: torch.Tensor) -> torch.Tensor:
        return (self.grid_base + self.grid_weights @ (theta - self.control)).view(-1, self.size, self.size, 2)

    def map_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        points, offsets = points.to(theta), theta - self.control.to(theta)
        if points.dim() == 2:
            return points + tps_weights(points, self.tps_grid) @ offsets
        pairs = zip(points, offsets, strict=True)
        return torch.stack([p + tps_weights(p, self.tps_grid) @ o for p, o in pairs])

    def marks(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The control points, and the control grid's rows and columns."""
        ticks = self.control[:self.tps_grid, 0].cpu()
        along = torch.linspace(-1, 1, OUTLINE_SAMPLES * (self.tps_grid - 1) + 1)
        rows = [torch.stack([along, tick.expand_as(along)], 1) for tick in ticks]
        return self.control.cpu(), rows + [line.flip(1) for line in rows]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tps_grid={self.tps_grid}"

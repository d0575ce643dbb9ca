"""The spatial transformer: identity start, transform families (affine, projective, thin-plate spline), gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from stn_gtsrb.errors import StnError
from stn_gtsrb.evaluation import silent_units
from stn_gtsrb.families import control_points, create_family
from stn_gtsrb.geometry import matrix_points, outline, pixel_centres, polygon_centre_scale, sample, warp
from stn_gtsrb.models import ConvNet, NetOptions
from stn_gtsrb.transformer import SpatialTransformer

FAMILIES = ["affine", "rotation", "scale", "translation", "rotation+scale", "rotation+translation",
            "scale+translation", "rotation+scale+translation", "projective", "tps"]


@pytest.mark.parametrize("transform", FAMILIES)
@pytest.mark.parametrize("channels,size", [(3, 32), (16, 15), (200, 8)])
def test_identity_initialised_transformer_returns_its_input(transform, channels, size):
    torch.manual_seed(0)
    st_module = SpatialTransformer(channels, size, (8, 8, 8), transform)
    x = torch.randn(4, channels, size, size)
    warped, theta = st_module(x)
    assert (warped - x).abs().max() <= 1e-5
    points = torch.rand(7, 2) * 2 - 1
    assert torch.allclose(st_module.map_points(theta, points), points.expand(4, 7, 2), atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(angle=st.floats(-math.pi, math.pi), scale=st.floats(0.1, 3), tx=st.floats(-1, 1), ty=st.floats(-1, 1))
def test_restricted_families_build_rotation_times_scale_plus_shift(angle, scale, tx, ty):
    theta = create_family("translation+scale+rotation", 8).theta(
        torch.tensor([[angle, scale, tx, ty]], dtype=torch.float64))[0]
    linear = theta[:, :2]
    assert torch.allclose(linear @ linear.T, scale**2 * torch.eye(2, dtype=torch.float64), atol=1e-9)
    assert torch.isclose(torch.det(linear), torch.tensor(scale**2, dtype=torch.float64))
    assert torch.allclose(theta[:, 2], torch.tensor([tx, ty], dtype=torch.float64))
    rotation_only = create_family("rotation", 8).theta(torch.tensor([[angle]], dtype=torch.float64))[0]
    assert torch.allclose(rotation_only, torch.tensor([[math.cos(angle), -math.sin(angle), 0],
                                                       [math.sin(angle), math.cos(angle), 0]],
                                                      dtype=torch.float64))
    scale_only = create_family("scale", 8).theta(torch.tensor([[scale]], dtype=torch.float64))[0]
    assert torch.allclose(scale_only, torch.tensor([[scale, 0, 0], [0, scale, 0]], dtype=torch.float64))


def test_affine_params_are_the_matrix_row_major():
    params = torch.arange(6.0).view(1, 6)
    assert torch.equal(create_family("affine", 8).theta(params), params.view(1, 2, 3))


@pytest.mark.parametrize("transform", FAMILIES)
def test_identity_params_give_identity_theta(transform):
    expected = {"projective": torch.eye(3), "tps": control_points(4)}.get(transform, torch.eye(2, 3))
    module = SpatialTransformer(3, 8, (2, 2, 2), transform)
    family = module.family
    assert torch.equal(family.theta(torch.tensor(family.identity)[None])[0], expected)
    assert torch.equal(family.theta(module.loc.head.bias[None].detach())[0], expected)  # the loc-net starts there


def test_projective_params_are_the_matrix_row_major_with_h33_one():
    params = torch.arange(1.0, 9.0).view(1, 8)
    assert create_family("projective", 8).theta(params).tolist() == [[[1, 2, 3], [4, 5, 6], [7, 8, 1]]]


def test_translation_moves_the_image_by_the_documented_convention():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2, 5] = 1.0
    theta = torch.tensor([[[1.0, 0.0, 0.25], [0.0, 1.0, 0.0]]])  # output x samples input x + 0.25 (1 px)
    out = warp(x, theta)
    assert out[0, 0, 2, 4] == pytest.approx(1.0)


@pytest.mark.parametrize("spec", ["", "shear", "rotation+rotation", "scale+", "projective+scale", "tps+tps"])
def test_bad_transform_names_are_refused(spec):
    with pytest.raises(StnError, match="bad transform"):
        create_family(spec, 8)


@pytest.mark.parametrize("transform", FAMILIES)
def test_gradients_reach_the_localisation_net(transform):
    torch.manual_seed(0)
    st_module = SpatialTransformer(3, 16, (4, 4, 4), transform)
    warped, _ = st_module(torch.randn(2, 3, 16, 16))
    warped.square().sum().backward()
    assert st_module.loc.head.bias.grad.abs().sum() > 0
    assert st_module.loc.head.weight.grad.abs().sum() > 0


def test_wrong_input_shape_is_reported():
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 16, 16\), got \(2, 3, 8, 8\)"):
        SpatialTransformer(3, 16, (4, 4, 4))(torch.randn(2, 3, 8, 8))


def random_homography(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = (torch.rand(3, 3, generator=generator, dtype=torch.float64) - 0.5) * torch.tensor(
        [[0.4, 0.4, 0.4], [0.4, 0.4, 0.4], [0.3, 0.3, 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + noise  # h33 = 1, w stays near 1 over the frame


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_homography_samples_where_the_3x3_matrix_sends_each_pixel_centre(seed):
    matrix = random_homography(seed)
    module = SpatialTransformer(1, 6, (2, 2, 2), "projective").double()
    theta = module.family.theta(matrix.flatten()[:8].view(1, 8))
    grid = module.grid(theta)[0]
    h = matrix.tolist()
    for row in range(6):
        for col in range(6):
            x, y = (2 * col + 1) / 6 - 1, (2 * row + 1) / 6 - 1  # pixel centres, align_corners=False
            u, v, w = (h[i][0] * x + h[i][1] * y + h[i][2] for i in range(3))
            assert grid[row, col].tolist() == pytest.approx([u / w, v / w], abs=1e-12)
    image = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    expected = F.grid_sample(image, grid[None], align_corners=False)
    assert torch.allclose(warp(image, theta), expected, atol=1e-12)


def test_a_homography_with_last_row_0_0_1_is_the_affine_map():
    theta = torch.tensor([[[0.8, 0.1, 0.2], [-0.2, 0.9, -0.1]]])
    projective = torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]])], dim=1)
    image = torch.rand(2, 3, 9, 9)
    assert torch.allclose(warp(image, projective.expand(2, 3, 3)), warp(image, theta.expand(2, 2, 3)), atol=1e-6)


def direct_tps(control: np.ndarray, targets: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The thin-plate spline through ``control -> targets`` at ``points``, solved and evaluated directly:
    f(p) = a0 + a1 x + a2 y + sum_i w_i U(|p - c_i|), U(r) = r^2 log r^2, sum w = sum w x = sum w y = 0."""
    def kernel(a, b):
        r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(r2 > 0, r2 * np.log(r2), 0.0)

    n = len(control)
    p = np.hstack([np.ones((n, 1)), control])
    system = np.block([[kernel(control, control), p], [p.T, np.zeros((3, 3))]])
    solution = np.linalg.solve(system, np.vstack([targets, np.zeros((3, 2))]))
    return kernel(points, control) @ solution[:n] + np.hstack([np.ones((len(points), 1)), points]) @ solution[n:]


@pytest.mark.parametrize("grid", [2, 3, 4, 5])
def test_a_spline_with_known_control_offsets_matches_a_direct_evaluation(grid):
    generator = torch.Generator().manual_seed(grid)
    module = SpatialTransformer(1, 7, (2, 2, 2), "tps", tps_grid=grid).double()
    offsets = (torch.rand(1, 2 * grid * grid, generator=generator, dtype=torch.float64) - 0.5) * 0.4
    theta = module.family.theta(offsets)
    control = np.array([[x, y] for y in np.linspace(-1, 1, grid) for x in np.linspace(-1, 1, grid)])
    assert np.allclose(theta[0].numpy(), control + offsets.view(-1, 2).numpy())  # row-major, x fastest
    centres = pixel_centres(7, 7, torch.float64)
    expected = direct_tps(control, theta[0].numpy(), centres.numpy())
    assert np.allclose(module.grid(theta)[0].reshape(-1, 2).numpy(), expected, atol=1e-6)  # float32 weights
    points = np.random.default_rng(grid).uniform(-1.2, 1.2, (20, 2))
    mapped = module.map_points(theta, torch.from_numpy(points))[0].numpy()
    assert np.allclose(mapped, direct_tps(control, theta[0].numpy(), points), atol=1e-9)
    at_control = module.map_points(theta, torch.from_numpy(control))[0]
    assert torch.allclose(at_control, theta[0], atol=1e-9)  # the spline passes through its control points


def test_a_spline_of_an_affine_motion_is_that_affine_map():
    affine = torch.tensor([[[0.7, -0.2, 0.1], [0.15, 0.8, -0.3]]], dtype=torch.float64)
    module = SpatialTransformer(1, 8, (2, 2, 2), "tps", tps_grid=3).double()
    theta = matrix_points(affine, module.family.control)
    grid = module.grid(theta)
    assert torch.allclose(grid, F.affine_grid(affine, [1, 1, 8, 8], align_corners=False), atol=1e-6)


def test_the_spline_grid_must_have_two_points_a_side():
    with pytest.raises(StnError, match="--tps-grid must be an integer of at least 2"):
        SpatialTransformer(3, 8, (2, 2, 2), "tps", tps_grid=1)
    assert SpatialTransformer(3, 8, (2, 2, 2), "affine", tps_grid=1).family.name == "affine"  # used by tps alone


def test_region_centre_and_scale_agree_across_families():
    affine = torch.tensor([[[0.5, 0.1, 0.2], [-0.1, 0.3, -0.4]], [[1.0, 0, 0], [0, 1, 0]]], dtype=torch.float64)
    centre, scale = SpatialTransformer(1, 8, (2, 2, 2)).region(affine)
    assert torch.allclose(centre, torch.tensor([[0.2, -0.4], [0, 0]], dtype=torch.float32))
    assert torch.allclose(scale, torch.tensor([0.16, 1.0]).sqrt())
    outline_centre, outline_scale = polygon_centre_scale(matrix_points(affine, outline(5).double()))
    assert torch.allclose(outline_centre.float(), centre) and torch.allclose(outline_scale.float(), scale)
    projective = SpatialTransformer(1, 8, (2, 2, 2), "projective")
    as_homography = torch.cat([affine, torch.tensor([[[0.0, 0, 1]]]).expand(2, 1, 3)], dim=1)
    for got, want in zip(projective.region(as_homography), (centre, scale), strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    tps = SpatialTransformer(1, 8, (2, 2, 2), "tps", tps_grid=3)
    for got, want in zip(tps.region(matrix_points(affine.float(), tps.family.control)), (centre, scale), strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    # a keystone: the top edge squeezed to half its width, the bottom kept: a trapezoid of area 3
    keystone = torch.tensor([[[-0.5, -1], [0.5, -1], [1, 1], [-1, 1]]])
    corners_centre, corners_scale = polygon_centre_scale(keystone)
    assert corners_scale.item() == pytest.approx((3 / 4) ** 0.5)
    assert corners_centre[0].tolist() == pytest.approx([0, 1 / 9])  # centroid of a trapezoid, towards its long side


def fixed_map(module: SpatialTransformer, params: list[float]) -> None:
    """Make the loc-net predict ``params`` whatever it sees."""
    with torch.no_grad():
        module.loc.head.weight.zero_()
        module.loc.head.bias.copy_(torch.tensor(params))


@pytest.mark.parametrize("transform", ["affine", "rotation+scale", "projective"])
def test_each_pass_composes_its_correction_with_the_map_so_far(transform):
    torch.manual_seed(0)
    once = SpatialTransformer(3, 12, (4, 4, 4), transform).double()
    thrice = SpatialTransformer(3, 12, (4, 4, 4), transform, passes=3).double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    assert torch.allclose(thrice(x)[0], x, atol=1e-6)  # still the identity at the start
    family = once.family
    step = {"affine": [0.9, -0.1, 0.1, 0.1, 0.9, -0.05], "rotation+scale": [0.2, 0.9],
            "projective": [0.9, -0.1, 0.1, 0.1, 0.9, -0.05, 0.05, -0.02]}[transform]
    fixed_map(once, step)
    fixed_map(thrice, step)
    matrix = family.matrix(once(x)[1])
    expected = family.from_matrix(matrix @ matrix @ matrix)  # the same correction, three times
    warped, theta = thrice(x)
    assert torch.allclose(theta, expected, atol=1e-12)
    assert torch.allclose(warped, sample(x, family.grid(expected)), atol=1e-12)  # sampled once, through the whole map
    warped.square().sum().backward()
    assert thrice.loc.head.bias.grad.abs().sum() > 0


def test_passes_need_a_family_that_composes():
    with pytest.raises(StnError, match="--passes 2 composes maps, which the tps family cannot"):
        SpatialTransformer(3, 8, (2, 2, 2), "tps", passes=2)
    with pytest.raises(StnError, match="--passes must be a positive integer"):
        SpatialTransformer(3, 8, (2, 2, 2), passes=0)


@pytest.mark.parametrize("act", ["relu", "leaky"])
def test_a_leaky_loc_net_keeps_a_gradient_through_units_that_are_off(act):
    torch.manual_seed(0)
    module = SpatialTransformer(3, 12, (4, 4, 6), act=act)
    x = torch.randn(5, 3, 12, 12)
    assert torch.allclose(module(x)[0], x, atol=1e-6)  # still the identity at the start
    net = ConvNet([(6, 3), (8, 3)], 10, NetOptions(image_size=12, transformers={1: "4,4,6"}, locnet_act=act))
    with torch.no_grad():
        for m in (module, net.transformers["1"]):
            m.loc.fc[0].bias.fill_(-100.0)  # every unit of the fc layer off, for every image
            m.loc.head.weight.normal_(std=1e-4)
    silent = silent_units(net, x)["1"]  # per activation layer: conv1, conv2, fc
    assert len(silent) == 3 and silent[2] == 1.0 and max(silent[:2]) < 1
    module(x)[0].square().sum().backward()
    reached = module.loc.fc[0].weight.grad.abs().sum()
    assert (reached > 0) == (act == "leaky")  # a dead ReLU layer passes nothing back; a leaky one does


def test_the_loc_net_activation_is_checked():
    with pytest.raises(StnError, match="loc-net activation must be one of relu, leaky, got 'tanh'"):
        SpatialTransformer(3, 8, (2, 2, 2), act="tanh")

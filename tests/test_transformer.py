"""The spatial transformer: identity start, transform families, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stn_gtsrb.errors import StnError
from stn_gtsrb.transformer import (
    SpatialTransformer,
    identity_params,
    parse_transform,
    theta_from_params,
    warp,
)

FAMILIES = ["affine", "rotation", "scale", "translation", "rotation+scale", "rotation+translation",
            "scale+translation", "rotation+scale+translation"]


@pytest.mark.parametrize("transform", FAMILIES)
@pytest.mark.parametrize("channels,size", [(3, 32), (16, 15), (200, 8)])
def test_identity_initialised_transformer_returns_its_input(transform, channels, size):
    torch.manual_seed(0)
    st_module = SpatialTransformer(channels, size, (8, 8, 8), transform)
    x = torch.randn(4, channels, size, size)
    warped, theta = st_module(x)
    assert (warped - x).abs().max() <= 1e-5
    assert torch.allclose(theta, torch.eye(2, 3).expand(4, 2, 3))


@settings(max_examples=60, deadline=None)
@given(angle=st.floats(-math.pi, math.pi), scale=st.floats(0.1, 3), tx=st.floats(-1, 1), ty=st.floats(-1, 1))
def test_restricted_families_build_rotation_times_scale_plus_shift(angle, scale, tx, ty):
    theta = theta_from_params(torch.tensor([[angle, scale, tx, ty]], dtype=torch.float64),
                              parse_transform("rotation+scale+translation"))[0]
    linear = theta[:, :2]
    assert torch.allclose(linear @ linear.T, scale**2 * torch.eye(2, dtype=torch.float64), atol=1e-9)
    assert torch.isclose(torch.det(linear), torch.tensor(scale**2, dtype=torch.float64))
    assert torch.allclose(theta[:, 2], torch.tensor([tx, ty], dtype=torch.float64))
    rotation_only = theta_from_params(torch.tensor([[angle]], dtype=torch.float64), ("rotation",))[0]
    assert torch.allclose(rotation_only, torch.tensor([[math.cos(angle), -math.sin(angle), 0],
                                                       [math.sin(angle), math.cos(angle), 0]],
                                                      dtype=torch.float64))
    scale_only = theta_from_params(torch.tensor([[scale]], dtype=torch.float64), ("scale",))[0]
    assert torch.allclose(scale_only, torch.tensor([[scale, 0, 0], [0, scale, 0]], dtype=torch.float64))


def test_affine_params_are_the_matrix_row_major():
    params = torch.arange(6.0).view(1, 6)
    assert torch.equal(theta_from_params(params, ()), params.view(1, 2, 3))


@pytest.mark.parametrize("transform", FAMILIES)
def test_identity_params_give_identity_theta(transform):
    families = parse_transform(transform)
    assert torch.equal(theta_from_params(identity_params(families)[None], families)[0], torch.eye(2, 3))


def test_translation_moves_the_image_by_the_documented_convention():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2, 5] = 1.0
    theta = torch.tensor([[[1.0, 0.0, 0.25], [0.0, 1.0, 0.0]]])  # output x samples input x + 0.25 (1 px)
    out = warp(x, theta)
    assert out[0, 0, 2, 4] == pytest.approx(1.0)


@pytest.mark.parametrize("spec", ["", "shear", "rotation+rotation", "scale+"])
def test_bad_transform_names_are_refused(spec):
    with pytest.raises(StnError, match="bad transform"):
        parse_transform(spec)


def test_gradients_reach_the_localisation_net():
    torch.manual_seed(0)
    st_module = SpatialTransformer(3, 16, (4, 4, 4), "affine")
    warped, _ = st_module(torch.randn(2, 3, 16, 16))
    warped.square().sum().backward()
    assert st_module.loc.head.bias.grad.abs().sum() > 0
    assert st_module.loc.head.weight.grad.abs().sum() > 0


def test_wrong_input_shape_is_reported():
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 16, 16\), got \(2, 3, 8, 8\)"):
        SpatialTransformer(3, 16, (4, 4, 4))(torch.randn(2, 3, 8, 8))

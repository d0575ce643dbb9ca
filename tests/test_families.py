"""Every transform family through one contract (families.py's table): a new registered family runs here."""

from __future__ import annotations

import warnings

import onnxruntime
import pytest
import torch

from stn_gtsrb.errors import StnError
from stn_gtsrb.families import FAMILIES, create_family
from stn_gtsrb.geometry import OUTLINE_SAMPLES, outline, pixel_centres, polygon_centre_scale, sample
from stn_gtsrb.transformer import SpatialTransformer

SIZE = 9
SPECS = [*FAMILIES, "rotation+scale", "translation"]  # every registered family, and two restrictions
POINTS = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.3, -0.7], [0.0, 0.0], [-0.9, 0.4]], dtype=torch.float64)


def family_of(spec: str):
    return create_family(spec, SIZE, tps_grid=3).double()


def perturbed(family, seed: int, batch: int = 2) -> torch.Tensor:
    """A theta near the identity, different per image."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, family.n_params, generator=generator, dtype=torch.float64) * 0.08
    return family.theta(torch.tensor(family.identity, dtype=torch.float64) + noise)


@pytest.mark.parametrize("spec", SPECS)
def test_the_identity_samples_every_point_where_it_is(spec):
    family = family_of(spec)
    identity = family.theta(torch.tensor(family.identity, dtype=torch.float64)[None])
    assert family.n_params == len(family.identity)
    assert torch.allclose(family.map_points(identity, POINTS), POINTS[None], atol=1e-12)
    assert torch.allclose(family.grid(identity)[0].reshape(-1, 2), pixel_centres(SIZE, SIZE, torch.float64), atol=1e-6)
    centre, scale = family.region(identity)
    assert torch.allclose(centre, torch.zeros(1, 2), atol=1e-6) and torch.allclose(scale, torch.ones(1), atol=1e-6)


@pytest.mark.parametrize("spec", SPECS)
def test_grid_points_region_and_onnx_form_agree(spec):
    family = family_of(spec)
    theta = perturbed(family, 1)
    grid = family.grid(theta)
    assert grid.shape == (2, SIZE, SIZE, 2)
    assert torch.allclose(grid.reshape(2, -1, 2), family.map_points(theta, pixel_centres(SIZE, SIZE, torch.float64)),
                          atol=1e-6)
    assert torch.allclose(family.onnx_grid(theta), grid, atol=1e-6)
    by_outline = polygon_centre_scale(family.map_points(theta, outline(OUTLINE_SAMPLES).double()).float())
    for got, want in zip(family.region(theta), by_outline, strict=True):
        assert torch.allclose(got, want, atol=1e-3)  # exact for straight edges; a spline's edges bend a little


@pytest.mark.parametrize("spec", SPECS)
def test_maps_that_compose_compose_by_their_matrices(spec):
    family = family_of(spec)
    outer, inner = perturbed(family, 2), perturbed(family, 3)
    if not family.composes:
        with pytest.raises(StnError, match="does not compose"):
            family.matrix(outer)
        return
    assert torch.equal(family.from_matrix(family.matrix(outer)), outer)
    both = family.from_matrix(family.matrix(outer) @ family.matrix(inner))
    one_then_other = family.map_points(outer, family.map_points(inner, POINTS))
    assert torch.allclose(family.map_points(both, POINTS), one_then_other, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS)
def test_a_family_saves_nothing_marks_its_region_and_checks_its_input(spec):
    family = family_of(spec)
    assert family.state_dict() == {} and not list(family.parameters())
    dots, lines = family.marks()
    assert dots.dim() == 2 and dots.shape[1] == 2 and lines and all(line.shape[1] == 2 for line in lines)
    with pytest.raises(ValueError, match=f"expected params of shape \\(B, {family.n_params}\\)"):
        family.theta(torch.zeros(2, family.n_params + 1))


@pytest.mark.parametrize("spec", SPECS)
def test_a_transformer_of_each_family_exports_to_onnx_and_samples_alike(spec, tmp_path):
    torch.manual_seed(0)
    module = SpatialTransformer(3, SIZE, (2, 2, 2), spec, tps_grid=3).eval()
    with torch.no_grad():
        module.loc.head.weight.normal_(0, 0.05)  # away from the identity, differently per image
    x = torch.randn(4, 3, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), tmp_path / "st.onnx", dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["warped", "theta"], dynamic_axes={"x": {0: "batch"}})
    runner = onnxruntime.InferenceSession(tmp_path / "st.onnx", providers=["CPUExecutionProvider"])
    warped, theta = runner.run(None, {"x": x.numpy()})
    expected_warped, expected_theta = module(x)
    assert torch.allclose(torch.from_numpy(theta), expected_theta.detach(), atol=1e-6)
    assert torch.allclose(torch.from_numpy(warped), expected_warped.detach(), atol=1e-4)
    assert torch.allclose(sample(x, module.grid(expected_theta)), expected_warped, atol=1e-6)


def test_unknown_families_are_one_line_errors():
    for spec in ("", "shear", "rotation+rotation", "tps+scale"):
        with pytest.raises(StnError, match="bad transform"):
            create_family(spec, SIZE)

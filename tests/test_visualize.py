"""Corner geometry, pictures, animations and reports on a tiny trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import run_cli
from stn_gtsrb import TrainConfig, device_data, train
from stn_gtsrb.classes import CLASS_NAMES
from stn_gtsrb.geometry import matrix_points
from stn_gtsrb.report import confusion_matrix, most_confused
from stn_gtsrb.transformer import SpatialTransformer
from stn_gtsrb.visualize import (
    CAPTION_HEIGHT,
    MARGIN,
    RECORDED_IMAGES,
    Region,
    TrainingRecorder,
    compose,
    corners,
    panel_row,
)
from synthetic_gtsrb import CLASSES, FRAMES, TRACKS

SIZE, SCALE = 32, 4


def theta(*rows) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float64).view(1, 2, 3)


def test_identity_corners_are_the_image_corners():
    assert corners(theta(1, 0, 0, 0, 1, 0), SIZE)[0].tolist() == [[0, 0], [32, 0], [32, 32], [0, 32]]


def test_known_rotation_scale_and_shift():
    quarter_turn = theta(0, -1, 0, 1, 0, 0)  # output top-left samples the input's top-right
    assert corners(quarter_turn, SIZE)[0].tolist() == [[32, 0], [32, 32], [0, 32], [0, 0]]
    zoom_right = theta(0.5, 0, 0.5, 0, 0.5, 0)  # half size, shifted right by a quarter of the image
    assert corners(zoom_right, SIZE)[0].tolist() == [[16, 8], [32, 8], [32, 24], [16, 24]]


def test_composition_of_two_transforms():
    outer, inner = theta(0.5, 0, 0.5, 0, 0.5, 0), theta(0.5, 0, 0, 0, 0.5, -0.5)
    # inner's region inside outer's output frame, mapped through outer onto the image
    affine = SpatialTransformer(3, SIZE, (2, 2, 2)).double()
    composed = compose([(affine, outer), (affine, inner)])
    assert corners(composed, SIZE)[0].tolist() == [[20, 8], [28, 8], [28, 16], [20, 16]]
    assert torch.allclose(compose([(affine, theta(1, 0, 0, 0, 1, 0)), (affine, inner)]), inner)


def test_a_region_through_a_spline_maps_points_one_transformer_at_a_time():
    outer, inner = theta(0.5, 0, 0.5, 0, 0.5, 0), theta(0.5, 0, 0, 0, 0.5, -0.5)
    spline = SpatialTransformer(3, SIZE, (2, 2, 2), "tps", tps_grid=3).double()
    affine = SpatialTransformer(3, SIZE, (2, 2, 2)).double()
    as_spline = matrix_points(outer, spline.family.control)  # a spline through the outer affine's control points
    region = Region([(spline, as_spline), (affine, inner)])
    assert region.matrix is None
    # the same corners as the composed affine matrices
    pixels = (region.points(torch.tensor([[-1.0, -1], [1, -1], [1, 1], [-1, 1]])) + 1) * SIZE / 2
    assert pixels[0].flatten().tolist() == pytest.approx([20, 8, 28, 8, 28, 16, 20, 16], abs=1e-6)
    projective = SpatialTransformer(3, SIZE, (2, 2, 2), "projective").double()
    keystone = torch.tensor([[[0.5, 0, 0], [0, 0.5, 0], [0, 0.25, 1]]], dtype=torch.float64)
    both = Region([(projective, keystone), (affine, inner)])
    assert torch.allclose(both.matrix, keystone @ torch.cat([inner, torch.tensor([[[0.0, 0, 1]]])], 1))


def square_marks(transform: str, matrix: torch.Tensor) -> torch.Tensor:
    """The grey source panel of a black image with the marks of one transformer of ``transform``,
    sampling the input by ``matrix`` (3×3): ``(S·SCALE, S·SCALE)``."""
    module = SpatialTransformer(3, SIZE, (2, 2, 2), transform, tps_grid=3).double()
    if transform == "tps":
        region_theta = matrix_points(matrix, module.family.control)
    else:
        region_theta = matrix if transform == "projective" else matrix[:, :2]
    row = panel_row(torch.zeros(3, SIZE, SIZE, dtype=torch.uint8), {1: Region([(module, region_theta)])}, SCALE, "")
    return gray(row)[CAPTION_HEIGHT:CAPTION_HEIGHT + SIZE * SCALE, MARGIN:MARGIN + SIZE * SCALE]


def lit_near(panel: torch.Tensor, x: float, y: float) -> bool:
    """Whether a pixel within 1 of (x, y) (enlarged pixels) is drawn."""
    return bool(panel[round(y) - 1:round(y) + 2, round(x) - 1:round(x) + 2].max() > 200)


def test_the_outline_of_a_projective_region_and_the_control_grid_of_a_spline_are_drawn():
    half = torch.tensor([[[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1]]], dtype=torch.float64)  # the middle half
    affine, grid = square_marks("affine", half), square_marks("tps", half)
    assert lit_near(affine, 32, 32) and not lit_near(affine, 64, 32)  # affine: corner dots alone
    assert lit_near(grid, 64, 32) and lit_near(grid, 48, 64) and lit_near(grid, 64, 80)  # the 3×3 grid's lines
    assert not lit_near(grid, 48, 48)  # between them
    keystone = torch.tensor([[[0.5, 0, 0], [0, 0.5, 0], [0, 0.25, 1]]], dtype=torch.float64)
    panel = square_marks("projective", keystone)
    top_left, top_right, bottom_right, _ = (corners(keystone, SIZE)[0] * SCALE).tolist()
    for start, end in ((top_left, top_right), (top_right, bottom_right)):
        middle = [(a + b) / 2 for a, b in zip(start, end, strict=True)]
        assert lit_near(panel, *middle)
    assert not lit_near(panel, 64, 64)


@pytest.mark.parametrize("family", ["projective", "tps"])
def test_plot_animate_and_the_recorder_draw_every_family(family_runs, data_env, tmp_path, family):
    run = family_runs / family
    result = run_cli("plot", str(run), "-o", str(tmp_path / "p.png"), "--count", "2", "--split", "val")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "p.png").size == (panel_width(3), CAPTION_HEIGHT + 2 * (CAPTION_HEIGHT + 128 + 4))
    result = run_cli("animate", str(run), "--class", "3", "-o", str(tmp_path / "t.gif"))
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "t.gif").n_frames == FRAMES
    assert Image.open(run / "st_epoch1.gif").n_frames == len(list((run / "st_frames").glob("step_*.png"))) == 4


def test_confusion_and_most_confused_pairs():
    labels, predicted = torch.tensor([0, 0, 1, 1, 1, 2]), torch.tensor([0, 1, 1, 2, 2, 2])
    matrix = confusion_matrix(labels, predicted, classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 2], [0, 0, 1]]
    assert most_confused(matrix) == [(1, 2, 2), (0, 1, 1)]


def test_class_names():
    assert len(CLASS_NAMES) == 43 and len(set(CLASS_NAMES)) == 43
    assert CLASS_NAMES[14] == "stop" and CLASS_NAMES[0] == "speed limit 20"


def gray(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(picture.convert("L"), dtype=np.float32))


def panel_width(panels: int) -> int:
    return MARGIN + panels * (SIZE * SCALE + MARGIN)


def test_plot_writes_a_grid_of_the_right_size(tiny_runs, data_env, tmp_path):
    result = run_cli("plot", str(tiny_runs / "st"), "-o", str(tmp_path / "p.png"), "--count", "5")
    assert result.returncode == 0, result.stderr
    picture = Image.open(tmp_path / "p.png")
    assert picture.size == (panel_width(3), CAPTION_HEIGHT + 5 * (CAPTION_HEIGHT + SIZE * SCALE + MARGIN))


def test_plot_without_transformers_says_so_and_plots_inputs(tiny_runs, data_env, tmp_path):
    result = run_cli("plot", str(tiny_runs / "plain"), "-o", str(tmp_path / "p.png"), "--indices", "0,7")
    assert result.returncode == 0 and "no spatial transformer" in result.stderr
    assert Image.open(tmp_path / "p.png").size == (panel_width(1), CAPTION_HEIGHT + 2 * (CAPTION_HEIGHT + 128 + 4))


def test_track_animation_has_one_frame_per_image_of_the_track(tiny_runs, data_env, tmp_path):
    result = run_cli("animate", str(tiny_runs / "st"), "--class", "14", "-o", str(tmp_path / "t.gif"))
    assert result.returncode == 0, result.stderr
    gif = Image.open(tmp_path / "t.gif")
    assert gif.n_frames == FRAMES and gif.size == (panel_width(3), CAPTION_HEIGHT + SIZE * SCALE + MARGIN)


def test_training_animation_frames_are_in_step_order(tiny_runs):
    pngs = sorted((tiny_runs / "st" / "st_frames").glob("step_*.png"))
    steps = [int(p.stem.split("_")[1]) for p in pngs]
    assert steps == [0, 4, 8, 10]  # 10 steps of 50 images: every 4th, plus the last
    gif = Image.open(tiny_runs / "st" / "st_epoch1.gif")
    assert gif.n_frames == len(pngs)
    references = [gray(Image.open(p)) for p in pngs]
    for index in range(gif.n_frames):
        gif.seek(index)
        frame = gray(gif)
        distances = [float((frame - ref).square().mean()) for ref in references]
        assert distances.index(min(distances)) == index
    first = Image.open(pngs[0])
    assert first.size == (MARGIN + 3 * (SIZE * 3 + MARGIN),
                          CAPTION_HEIGHT + RECORDED_IMAGES * (CAPTION_HEIGHT + SIZE * 3 + MARGIN))


def test_recording_by_tenths_draws_the_start_and_each_tenth_of_epoch_1(data_env, tmp_path, monkeypatch):
    cfg = TrainConfig(net="lecun", cnn="4,8,16", n=1000, batch_size=50, epochs=2, optimizer="adam", lr=0.003,
                      st=True, locnet="4,4,8")  # 20 steps per epoch
    recorder = TrainingRecorder.for_run(cfg, "tenths", tmp_path / "run", echo=lambda _: None)
    assert [done for done in range(613 + 1) if recorder.records(done, 613)] == [
        0, 61, 123, 184, 245, 306, 368, 429, 490, 552, 613]
    loads = []
    real = device_data.load_tensors
    monkeypatch.setattr(device_data, "load_tensors", lambda *args: loads.append(args) or real(*args))
    train(cfg, tmp_path / "run", callbacks=[recorder], echo=lambda _: None)
    assert len(loads) == 1  # the recorder draws from the split the trainer holds: no second load
    training = device_data.training_split(cfg, real(32))
    chosen = torch.randperm(len(training), generator=torch.Generator().manual_seed(cfg.seed))[:RECORDED_IMAGES]
    assert torch.equal(recorder.images, training.images[chosen])
    assert torch.equal(recorder.labels, training.labels[chosen])
    steps = sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "run" / "st_frames").glob("step_*.png"))
    assert steps == list(range(0, 21, 2))  # 11 frames, none from epoch 2
    assert Image.open(tmp_path / "run" / "st_epoch1.gif").n_frames == 11


def test_animate_rebuilds_the_training_gif_from_recorded_frames(tiny_runs, data_env, tmp_path):
    result = run_cli("animate", str(tiny_runs / "st"), "--training", "--stride", "2", "-o", str(tmp_path / "e.gif"))
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "e.gif").n_frames == 3  # steps 0 and 8 (every 2nd frame), and the last, 10
    missing = run_cli("animate", str(tiny_runs / "plain"), "--training", "-o", str(tmp_path / "f.gif"))
    assert missing.returncode == 2 and "has no recorded frames: train it with --record-st K" in missing.stderr


def test_report_writes_curves_and_confusion(tiny_runs, data_env, tmp_path):
    result = run_cli("report", str(tiny_runs / "st"), "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "curves.png").size == (1000, 400)
    assert Image.open(tmp_path / "confusion.png").size == (1400, 650)


@pytest.mark.parametrize("args,message", [
    (["animate", "{st}", "--track", "5000", "-o", "{tmp}/x.gif"],
     f"unknown track 5000; valid: 0 to {CLASSES * TRACKS - 1}"),
    (["animate", "{st}", "--class", "43", "-o", "{tmp}/x.gif"], "unknown class 43; valid: 0 to 42"),
    (["plot", "{st}", "-o", "{tmp}/file/x.png"], "cannot write {tmp}/file/x.png"),
    (["plot", "{st}", "-o", "{tmp}/x.png", "--indices", "99999"], "image index 99999 is out of range"),
    (["report", "{tmp}"], "holds no finished epoch"),
    (["train", "--record-st", "tenth", "-o", "{tmp}/r"], "--record-st must be a positive number of steps or 'tenths', "
                                                        "got 'tenth'"),
])
def test_bad_input_is_one_line_with_exit_2(tiny_runs, data_env, tmp_path, args, message):
    (tmp_path / "file").write_text("in the way")
    fill = {"st": str(tiny_runs / "st"), "tmp": str(tmp_path)}
    result = run_cli(*[a.format(**fill) for a in args])
    assert result.returncode == 2, result.stderr
    assert message.format(**fill) in result.stderr and len(result.stderr.strip().splitlines()) == 1

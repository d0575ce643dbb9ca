"""``stn-gtsrb robustness``: the distortions, track stability, the command's files and its errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cli_helpers import quiet, run_cli
from stn_gtsrb import TrainConfig, evaluate, train
from stn_gtsrb.checkpoints import load_trained
from stn_gtsrb.data import load_tensors, validation_tracks
from stn_gtsrb.errors import StnError
from stn_gtsrb.robustness import DEFAULT_LEVELS, Draws, check_levels, content_thetas, distort, robustness_rows
from stn_gtsrb.stability import mean_figures, region_spread, trace_transformers, track_figures, track_frames


def square_image(size: int = 32, at: tuple[int, int] = (12, 12), side: int = 4) -> torch.Tensor:
    """One uint8 image (1, 3, size, size): a grey edge of 100 around black, a white square at (row, col)."""
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    image[..., 0, :] = image[..., -1, :] = image[..., :, 0] = image[..., :, -1] = 100
    image[..., at[0]:at[0] + side, at[1]:at[1] + side] = 255
    return image


def draws(turn: float = 1.0, direction: float = 0.0, zoom: float = 1.0) -> Draws:
    return Draws(torch.tensor([turn]), torch.tensor([direction]), torch.tensor([zoom]))


def white(image: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(p) for p in (image[0, 0] == 255).nonzero().tolist()}


def test_level_zero_is_the_identity_and_a_shift_moves_the_content_by_that_fraction_of_the_side():
    image = square_image()
    for transform in ("rotation", "shift", "combined"):
        assert torch.equal(distort(image, transform, 0, draws()), image)
    assert torch.equal(distort(image, "scale", 1.0, draws()), image)
    right = distort(image, "shift", 0.25, draws(direction=0.0))  # 8 px to the right
    assert white(right) == {(r, c + 8) for r, c in white(image)}
    down = distort(image, "shift", 0.125, draws(direction=math.pi / 2))  # 4 px down (y points down)
    assert white(down) == {(r + 4, c) for r, c in white(image)}


def test_rotation_turns_about_the_centre_and_scale_resizes_about_it_with_edges_replicated():
    image = square_image(at=(4, 14))  # centred horizontally, near the top
    turned = distort(image, "rotation", 90, draws(turn=1.0))
    back = distort(image, "rotation", 90, draws(turn=-1.0))
    assert white(turned) == {(r, c) for r in range(14, 18) for c in range(24, 28)}  # the top turned to the right
    assert white(back) == {(r, c) for r in range(14, 18) for c in range(4, 8)}  # the other way: to the left
    small = distort(image, "scale", 0.5, draws())
    assert small[0, 0, 0, 0] == 100 and small[0, 0, 0, 16] == 100  # outside the shrunk image: the edge, not black
    assert 0 < len(white(small)) < len(white(image))
    theta = content_thetas(torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert torch.allclose(theta, torch.tensor([[[0.5, 0, 0], [0, 0.5, 0]]]))  # zoom ×2 samples half the image


def test_draws_are_seeded():
    a, b, c = Draws.make(100, 1), Draws.make(100, 1), Draws.make(100, 2)
    assert torch.equal(a.turn, b.turn) and torch.equal(a.direction, b.direction) and torch.equal(a.zoom, b.zoom)
    assert not torch.equal(a.direction, c.direction)
    assert set(a.turn.tolist()) == {-1.0, 1.0} and set(a.zoom.tolist()) == {-1.0, 1.0}


def test_the_rows_are_reproducible_for_a_seed_and_cover_every_level_and_model():
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 43, (40,))
    by_pixels = {"a": lambda x: x[:, 0, 10:20, 10:20].float().mean((1, 2)).long() % 43,
                 "b": lambda x: x[:, 1, :8, :8].float().mean((1, 2)).long() % 43}
    levels = {"rotation": (0, 30), "shift": (0.1,)}
    first = robustness_rows(by_pixels, images, labels, levels, seed=0)
    assert [(r["transform"], r["level"], r["model"]) for r in first] == [
        ("rotation", 0, "a"), ("rotation", 0, "b"), ("rotation", 30, "a"), ("rotation", 30, "b"),
        ("shift", 0.1, "a"), ("shift", 0.1, "b")]
    assert robustness_rows(by_pixels, images, labels, levels, seed=0) == first
    draws = [Draws.make(len(images), seed) for seed in (0, 1)]
    assert not torch.equal(distort(images, "rotation", 30, draws[0]), distort(images, "rotation", 30, draws[1]))


@pytest.mark.parametrize("levels,message", [
    ({"rotation": (0, 200)}, "--rotation levels must lie in [0, 180], got 200"),
    ({"scale": (0.0,)}, "--scale levels must lie in [0.25, 4], got 0.0"),
    ({"shift": (float("nan"),)}, "--shift levels must lie in [0, 0.5], got nan"),
    ({"combined": ()}, "--combined levels must lie in [0, 1], got none"),
])
def test_levels_out_of_range_are_refused(levels, message):
    with pytest.raises(StnError) as error:
        check_levels(levels)
    assert str(error.value) == message
    assert check_levels(dict(DEFAULT_LEVELS)) == DEFAULT_LEVELS


def test_region_spread_and_variation_of_still_and_moving_frames():
    assert region_spread(torch.zeros(4, 2), torch.ones(4)) == {"centre_spread": 0.0, "scale_spread": 0.0}
    centre = torch.tensor([[0.2, 0], [-0.2, 0], [0.2, 0], [-0.2, 0]])  # ±0.1 of the side
    spread = region_spread(centre, torch.tensor([1.0, 1.0, 0.5, 0.5]))
    assert spread["centre_spread"] == pytest.approx(0.1)
    assert spread["scale_spread"] == pytest.approx(torch.tensor([1.0, 1, 0.5, 0.5]).std().item() / 0.75)


def test_track_figures_measure_each_transformer_and_average_over_tracks(data_env, tiny_runs):
    model, cfg, normalizer = load_trained(tiny_runs / "st")
    train_split = load_tensors(32)["train"]
    frames, label = track_frames(train_split, 3)
    in_track = train_split.tracks == 3
    assert len(frames) == in_track.sum() and (train_split.labels[in_track] == label).all()
    predicted, captured = trace_transformers(model, normalizer(frames))
    assert sorted(captured) == [1, 2] and captured[1][0].shape == captured[1][1].shape
    still = track_figures(model, normalizer, frames[:1].repeat(5, 1, 1, 1), label)
    assert still["changes"] == 0 and still["one_prediction"]
    assert all(t["input_variation"] < 1e-6 and t["centre_spread"] < 1e-6 for t in still["transformers"].values())
    moving = track_figures(model, normalizer, frames, label)
    assert moving["transformers"][1]["input_variation"] > 0
    summary = mean_figures([still, moving])
    assert summary["tracks"] == 2 and summary["frames"] == 5 + len(frames)
    assert summary["transformers"][1]["ratio"] == pytest.approx(
        moving["transformers"][1]["output_variation"] / moving["transformers"][1]["input_variation"])


def test_the_command_writes_tables_a_plot_and_stability_on_unseen_tracks(data_env, tiny_runs, tmp_path):
    full = TrainConfig(net="lecun", cnn="4,8,16", n=300, epochs=1, optimizer="adam", lr=0.003)  # no --val
    train(full, tmp_path / "full", echo=quiet)
    out = tmp_path / "out"
    result = run_cli("robustness", str(tiny_runs / "st"), str(tmp_path / "full"), "-o", str(out),
                     "--rotation", "0,20", "--scale", "0.75,1", "--shift", "0,0.2", "--combined", "0,0.5")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} >= {"robustness.json", "robustness.md", "robustness.png"}
    saved = json.loads((out / "robustness.json").read_text())
    assert [m["name"] for m in saved["models"]] == ["st", "full"] and saved["models"][0]["transformers"] == [1, 2]
    assert len(saved["robustness"]) == 2 * 8
    level0 = {r["model"]: r["accuracy"] for r in saved["robustness"]
              if r["transform"] == "rotation" and r["level"] == 0}
    # undistorted = the test accuracy, both in fp32 (eval's default is the run's own precision: bf16 where fast)
    assert level0["st"] == evaluate(tiny_runs / "st", "test", precision="fp32")["accuracy"]
    cfg = load_trained(tiny_runs / "st")[1]
    tracks = validation_tracks(load_tensors(32)["train"], cfg.val_seed, cfg.val_tracks).tolist()
    stability = saved["stability"]
    assert stability["tracks"] == tracks and stability["origin"] == "the validation tracks of st"
    assert [(m["model"], m["trained_on"]) for m in stability["models"]] == [("st", 0), ("full", len(tracks))]
    assert set(stability["models"][0]["transformers"]) == {"1", "2"} and stability["models"][1]["transformers"] == {}
    text = (out / "robustness.md").read_text()
    assert "## rotation" in text and "## Track stability" in text and "| 20 |" in text

    again = run_cli("robustness", str(tiny_runs / "st"), "-o", str(out), "--n", "10")
    assert again.returncode == 2 and "robustness.json exists: use --overwrite" in again.stderr


@pytest.mark.parametrize("args,message", [
    (["{tmp}/nothing"], "checkpoint {tmp}/nothing not found"),
    (["{run}", "--n", "0"], "--n must be between 1 and 258 (the test images), got 0"),
    (["{run}", "--rotation", "0,200"], "--rotation levels must lie in [0, 180], got 200.0"),
    (["{run}", "--shift", "a,b"], "--shift must be comma-separated float values, got 'a,b'"),
    (["{run}", "--tracks", "99999"], "--tracks must be training track ids from 0 to 257, got 99999"),
    ([], "give at least one model"),
])
def test_bad_input_is_a_one_line_error(data_env, tiny_runs, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, run=tiny_runs / "plain") for a in args]
    result = run_cli("robustness", *args, "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message.format(tmp=tmp_path) in result.stderr


def test_an_unwritable_output_is_refused_before_any_work(data_env, tiny_runs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("robustness", str(tiny_runs / "plain"), "-o", str(blocker / "out"))
    assert result.returncode == 2 and result.stderr.startswith(f"stn-gtsrb: error: cannot create {blocker / 'out'}")


def test_a_still_track_has_a_still_region_in_every_family(data_env, family_runs):
    train_split = load_tensors(32)["train"]
    frames, label = track_frames(train_split, 5)
    for family in ("projective", "tps"):
        model, _, normalizer = load_trained(family_runs / family)
        still = track_figures(model, normalizer, frames[:1].repeat(4, 1, 1, 1), label)
        assert all(t["centre_spread"] < 1e-6 and t["scale_spread"] < 1e-6 for t in still["transformers"].values())

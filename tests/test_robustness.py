"""``stn-gtsrb robustness``: the distortions (tilt included), track stability, the command's files and its errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from cli_helpers import quiet, run_cli
from stn_gtsrb import TrainConfig, evaluate, train
from stn_gtsrb.checkpoints import load_trained
from stn_gtsrb.classes import CLASS_NAMES, MIRROR_PAIRS
from stn_gtsrb.data import load_tensors, validation_tracks
from stn_gtsrb.errors import StnError
from stn_gtsrb.geometry import TILT_DISTANCE, content_thetas, homogeneous, matrix_points, tilt_thetas
from stn_gtsrb.robustness import DEFAULT_LEVELS, Draws, check_levels, distort, mirror_errors, robustness_rows
from stn_gtsrb.stability import mean_figures, region_spread, trace_transformers, track_figures, track_frames
from stn_gtsrb.straightening import ANGLES, straightening, turn_thetas


def square_image(size: int = 32, at: tuple[int, int] = (12, 12), side: int = 4) -> torch.Tensor:
    """One uint8 image (1, 3, size, size): a grey edge of 100 around black, a white square at (row, col)."""
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    image[..., 0, :] = image[..., -1, :] = image[..., :, 0] = image[..., :, -1] = 100
    image[..., at[0]:at[0] + side, at[1]:at[1] + side] = 255
    return image


def draws(turn: float = 1.0, direction: float = 0.0, zoom: float = 1.0, axis: int = 0) -> Draws:
    return Draws(torch.tensor([turn]), torch.tensor([direction]), torch.tensor([zoom]), torch.tensor([axis]))


def white(image: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(p) for p in (image[0, 0] == 255).nonzero().tolist()}


def test_level_zero_is_the_identity_and_a_shift_moves_the_content_by_that_fraction_of_the_side():
    image = square_image()
    for transform in ("rotation", "shift", "combined", "tilt"):
        assert torch.equal(distort(image, transform, 0, draws()), image)
    assert torch.equal(distort(image, "tilt", 0, draws(axis=1)), image)
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
    assert set(a.axis.tolist()) == {0, 1} and torch.equal(a.axis, b.axis)


@pytest.mark.parametrize("angle", [-60.0, -25.0, 10.0, 45.0, 60.0])
def test_tilt_samples_the_pinhole_view_of_the_turned_image(angle):
    """A point (u, v) of the image, turned about its vertical axis by a and seen from TILT_DISTANCE d
    half-sides away, lies at d·(u cos a, v) / (d - u sin a); the tilt's theta maps that view point back."""
    u, v = torch.meshgrid(torch.linspace(-1, 1, 5, dtype=torch.float64), torch.linspace(-1, 1, 5,
                                                                                         dtype=torch.float64),
                          indexing="ij")
    a, d = math.radians(angle), TILT_DISTANCE
    depth = d - u.flatten() * math.sin(a)
    seen = torch.stack([d * u.flatten() * math.cos(a), d * v.flatten()], 1) / depth[:, None]
    about = {0: tilt_thetas(torch.tensor([angle], dtype=torch.float64), torch.tensor([0])),
             1: tilt_thetas(torch.tensor([angle], dtype=torch.float64), torch.tensor([1]))}
    image_points = torch.stack([u.flatten(), v.flatten()], 1)
    assert torch.allclose(matrix_points(about[0], seen[None])[0], image_points, atol=1e-12)
    swapped = matrix_points(about[1], seen.flip(1)[None])[0].flip(1)  # about the horizontal axis: x, y swap
    assert torch.allclose(swapped, image_points, atol=1e-12)


def test_tilt_brings_one_side_nearer_and_replicates_the_edges():
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[..., 0, :] = image[..., -1, :] = image[..., :, 0] = image[..., :, -1] = 100
    image[..., 8:24, 3:7] = image[..., 8:24, 25:29] = 255  # two equal stripes, left and right
    right_nearer = distort(image, "tilt", 50, draws(turn=1.0))
    left_nearer = distort(image, "tilt", 50, draws(turn=-1.0))

    def stripes(picture):
        white = picture[0, 0] == 255
        return int(white[:, :16].sum()), int(white[:, 16:].sum())

    left, right = stripes(right_nearer)
    assert right > left > 0 and stripes(left_nearer) == (right, left)  # mirror images
    far = right_nearer[0, 0, :, :8]  # the far side, shrunk: around it, the edge replicated (no black)
    assert (far[:, 0] == 100).all() and (far[0] == 100).all() and (far[-1] == 100).all()
    rows_nearer = distort(image.transpose(2, 3).contiguous(), "tilt", 50, draws(axis=1))
    assert torch.equal(rows_nearer, right_nearer.transpose(2, 3))  # about the horizontal axis: the same, turned


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


def test_mirror_errors_count_only_images_taken_for_their_mirror_image():
    labels = torch.tensor([38, 39, 38, 19, 20, 33, 36, 5, 5])
    predicted = torch.tensor([39, 38, 38, 20, 21, 34, 37, 6, 5])
    # keep right <-> left twice, curves left -> right, turn right -> left ahead, straight or right -> left;
    # not: a right answer, curve right -> double curve, a class with no mirror image
    assert mirror_errors(predicted, labels) == 5
    assert mirror_errors(labels, labels) == 0
    swap = {a: b for pair in MIRROR_PAIRS for a, b in (pair, pair[::-1])}
    assert all(CLASS_NAMES[a].replace("left", "right") == CLASS_NAMES[b].replace("left", "right") or
               CLASS_NAMES[a].replace("right", "left") == CLASS_NAMES[b].replace("right", "left")
               for a, b in swap.items())
    rows = robustness_rows({"swap": lambda x: torch.tensor([swap.get(int(c), int(c)) for c in labels])},
                           torch.zeros(9, 3, 8, 8, dtype=torch.uint8), labels, {"rotation": (0,)}, seed=0)
    assert rows[0]["mirror_errors"] == 7 and rows[0]["correct"] == 2


@pytest.mark.parametrize("levels,message", [
    ({"rotation": (0, 200)}, "--rotation levels must lie in [0, 180], got 200"),
    ({"scale": (0.0,)}, "--scale levels must lie in [0.25, 4], got 0.0"),
    ({"shift": (float("nan"),)}, "--shift levels must lie in [0, 0.5], got nan"),
    ({"combined": ()}, "--combined levels must lie in [0, 1], got none"),
    ({"tilt": (30, 80)}, "--tilt levels must lie in [0, 70], got 80"),
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
                     "--rotation", "0,20", "--scale", "0.75,1", "--shift", "0,0.2", "--combined", "0,0.5",
                     "--tilt", "0,30")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} >= {"robustness.json", "robustness.md", "robustness.png"}
    saved = json.loads((out / "robustness.json").read_text())
    assert [m["name"] for m in saved["models"]] == ["st", "full"] and saved["models"][0]["transformers"] == [1, 2]
    assert len(saved["robustness"]) == 2 * 10 and saved["split"] == "test"
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
    assert "## rotation" in text and "## Track stability" in text and "| 20 |" in text and "## tilt" in text
    assert "## Mirror images under rotation" in text
    assert "on 258 GTSRB test images" in text
    straight = saved["straightening"]
    assert straight["angles"][0] == -45 and straight["angles"][-1] == 45 and straight["images"] == 258
    assert [(m["model"], m["position"]) for m in straight["models"]] == [("st", 1), ("st", 2)]  # full has none
    assert all(math.isfinite(m["slope"]) and m["scatter"] >= 0 and len(m["mean_turn"]) == 19
               for m in straight["models"])
    assert "## Straightening" in text
    assert Image.open(out / "robustness.png").size == (2400, 360)  # five distortions (tilt's too), straightening

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


def test_projective_and_spline_models_are_measured_on_their_validation_tracks(data_env, family_runs, tmp_path):
    out = tmp_path / "out"
    runs = [str(family_runs / family) for family in ("projective", "tps")]
    result = run_cli("robustness", *runs, "--split", "val", "-o", str(out), "--rotation", "0,20", "--scale", "1",
                     "--shift", "0", "--combined", "0", "--tilt", "0,40")
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "robustness.json").read_text())
    assert saved["split"] == "val" and [m["transform"] for m in saved["models"]] == ["projective", "tps"]
    for family in ("projective", "tps"):
        level0 = [r for r in saved["robustness"] if r["model"] == family and r["transform"] == "tilt"][0]
        expected = evaluate(family_runs / family, "val", precision="fp32")
        assert level0["level"] == 0 and level0["accuracy"] == expected["accuracy"]
        assert level0["total"] == saved["n"] == expected["total"]
    stable = saved["stability"]
    assert stable["origin"] == "the validation tracks of projective" and len(stable["models"]) == 2
    for model in stable["models"]:
        assert model["trained_on"] == 0 and set(model["transformers"]) == {"1", "2"}
        spreads = [(f["centre_spread"], f["scale_spread"]) for f in model["transformers"].values()]
        assert all(0 <= value < 1 for pair in spreads for value in pair) and max(max(spreads)) > 0
    text = (out / "robustness.md").read_text()
    assert f"on {saved['n']} GTSRB validation images (the held-out tracks)" in text and "## tilt" in text
    assert [(m["model"], m["position"]) for m in saved["straightening"]["models"]] == [
        ("projective", 1), ("projective", 2), ("tps", 1), ("tps", 2)]
    assert all(math.isfinite(m["slope"]) for m in saved["straightening"]["models"])


def test_a_still_track_has_a_still_region_in_every_family(data_env, family_runs):
    train_split = load_tensors(32)["train"]
    frames, label = track_frames(train_split, 5)
    for family in ("projective", "tps"):
        model, _, normalizer = load_trained(family_runs / family)
        still = track_figures(model, normalizer, frames[:1].repeat(4, 1, 1, 1), label)
        assert all(t["centre_spread"] < 1e-6 and t["scale_spread"] < 1e-6 for t in still["transformers"].values())


def test_the_validation_split_needs_models_trained_with_it(data_env, tmp_path):
    result = run_cli("robustness", "--pretrained", "--split", "val", "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--split val needs models trained with --val; pretrained was trained without one" in result.stderr


@pytest.mark.parametrize("follows", [1.0, 0.5, 0.0])
def test_the_straightening_slope_is_the_share_of_the_turn_the_region_follows(follows):
    """A transformer whose region turns by ``follows`` times the content's turn has that slope and no scatter."""
    model = TrainConfig(net="lecun", cnn="4,8,16", st=True, locnet="4,4,4").network()
    turns = iter([0.0, *ANGLES])  # the unturned images first, then one batch per angle

    def trace(x):  # the region of the content turned by follows * angle: its frame's sampling map, inverted
        frame = torch.linalg.inv(homogeneous(turn_thetas(follows * next(turns), len(x))))[:, :2]
        return torch.zeros(len(x), 43), {1: frame}, None

    model.trace = trace
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    figures = straightening(model, lambda x: x.float(), images)[1]
    assert figures["slope"] == pytest.approx(follows, abs=1e-4) and figures["scatter"] < 1e-3
    assert figures["mean_turn"] == pytest.approx([follows * angle for angle in ANGLES], abs=1e-3)

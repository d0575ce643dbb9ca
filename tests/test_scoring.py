"""Committees (``eval RUN RUN ...``) and test-time augmentation (``eval --tta``)."""

from __future__ import annotations

import json

import torch

from cli_helpers import quiet, run_cli
from stn_gtsrb import TrainConfig, evaluate, train
from stn_gtsrb.checkpoints import load_trained
from stn_gtsrb.data import load_tensors
from stn_gtsrb.evaluation import probabilities
from stn_gtsrb.predictor import load_predictor
from stn_gtsrb.scoring import TTA_VIEWS, evaluate_ensemble, model_probabilities, view


def test_the_first_view_is_the_image_itself_and_the_others_move_it():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert TTA_VIEWS[0] == (1.0, 0.0, 0.0) and len(TTA_VIEWS) == 7
    assert torch.equal(view(images, *TTA_VIEWS[0]), images)
    assert all(not torch.equal(view(images, *v), images) for v in TTA_VIEWS[1:])


def test_one_model_without_tta_scores_as_eval_and_a_committee_averages_probabilities(data_env, tiny_runs):
    single = evaluate_ensemble([tiny_runs / "st"])  # committees score in fp32; eval, by default, in the run's precision
    assert single["accuracy"] == evaluate(tiny_runs / "st", "test", precision="fp32")["accuracy"]
    assert single["views"] == 1
    assert evaluate_ensemble([tiny_runs / "st"] * 2)["correct"] == single["correct"]

    test = load_tensors(32)["test"]
    members = [load_trained(tiny_runs / name) for name in ("st", "plain")]
    mean = sum(probabilities(model, normalizer(test.images)) for model, _, normalizer in members) / 2
    committee = evaluate_ensemble([tiny_runs / "st", tiny_runs / "plain"])
    assert committee["correct"] == int((mean.argmax(1) == test.labels).sum())


def test_tta_averages_the_probabilities_of_the_seven_views(data_env, tiny_runs):
    model, _, normalizer = load_trained(tiny_runs / "st")
    images = load_tensors(32)["test"].images[:50]
    tta = model_probabilities(load_predictor(tiny_runs / "st"), images, tta=True)
    each = [probabilities(model, normalizer(view(images, *v))) for v in TTA_VIEWS]
    assert torch.allclose(tta, sum(each) / 7, atol=1e-6)
    assert not torch.allclose(tta, each[0])


def test_the_cli_reports_committees_and_tta_as_such(data_env, tiny_runs, tmp_path):
    result = run_cli("eval", str(tiny_runs / "st"), str(tiny_runs / "plain"), "--tta", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["models"] == [str(tiny_runs / "st"), str(tiny_runs / "plain")] and record["views"] == 7
    assert record["precision"] == "fp32"
    text = run_cli("eval", str(tiny_runs / "st"), str(tiny_runs / "plain"))
    assert "committee of 2 models" in text.stdout
    bf16 = json.loads(run_cli("eval", str(tiny_runs / "st"), "--tta", "--precision", "bf16", "--json").stdout)
    assert bf16["precision"] == "bf16"  # asked for, and run in: never silently fp32

    other = TrainConfig(net="lecun", cnn="4,8,16", n=300, epochs=1, optimizer="adam", lr=0.003, val=True,
                        val_seed=7)
    train(other, tmp_path / "other", echo=quiet)
    mixed = run_cli("eval", str(tiny_runs / "st"), str(tmp_path / "other"), "--split", "val")
    assert mixed.returncode == 2 and len(mixed.stderr.strip().splitlines()) == 1
    assert "was validated on other images than the first model" in mixed.stderr

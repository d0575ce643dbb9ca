"""The exponential moving average of the weights (``--ema``): its arithmetic, what a run saves, resume."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cli_helpers import quiet
from stn_gtsrb import TrainConfig, evaluate, train
from stn_gtsrb.checkpoints import LAST
from stn_gtsrb.ema import WeightAverage, ema_decay
from stn_gtsrb.errors import StnError
from stn_gtsrb.runs import read_log

TINY = dict(net="idsia", cnn="4,4,8,8", batchnorm=True, cnorm=False, n=300, epochs=2, optimizer="nesterov",
            momentum=0.9, lr=0.05, ema=0.9)


def test_the_average_moves_each_weight_and_statistic_by_the_warmed_up_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.99)
    before = {k: v.clone() for k, v in average.model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model(torch.randn(8, 3))  # BatchNorm statistics move, its counter becomes 1
    average.update()
    d = ema_decay(0.99, 1)
    assert d == pytest.approx(2 / 11)
    for key, value in model.state_dict().items():
        expected = value if key.endswith("num_batches_tracked") else d * before[key] + (1 - d) * value
        assert torch.allclose(average.model.state_dict()[key], expected), key
    assert ema_decay(0.99, 10_000) == 0.99
    assert not any(p.requires_grad for p in average.model.parameters()) and not average.model.training


def test_a_run_with_ema_saves_and_scores_the_average_and_resumes_exactly(data_env, tmp_path):
    full = train(TrainConfig(**TINY), tmp_path / "full", echo=quiet)
    checkpoint = torch.load(tmp_path / "full" / LAST, weights_only=True)
    assert set(checkpoint["model"]) == set(checkpoint["train_model"])
    assert not all(torch.equal(checkpoint["model"][k], checkpoint["train_model"][k]) for k in checkpoint["model"])
    assert evaluate(tmp_path / "full", "test")["accuracy"] == full["test_acc"]  # the average is what was scored

    train(TrainConfig(**{**TINY, "epochs": 1}), tmp_path / "split", echo=quiet)  # as if killed after epoch 1
    config = tmp_path / "split" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": 2}))
    (tmp_path / "split" / "result.json").unlink()
    resumed = train(TrainConfig(**TINY), tmp_path / "split", resume=True, echo=quiet)
    assert resumed["test_acc"] == full["test_acc"]
    again = torch.load(tmp_path / "split" / LAST, weights_only=True)
    for key in ("model", "train_model"):
        assert all(torch.equal(checkpoint[key][k], again[key][k]) for k in checkpoint[key]), key


def test_without_ema_nothing_changes(data_env, tmp_path):
    plain = {**TINY, "ema": 0.0, "epochs": 1}
    train(TrainConfig(**plain), tmp_path / "run", echo=quiet)
    assert "train_model" not in torch.load(tmp_path / "run" / LAST, weights_only=True)
    assert len(read_log(tmp_path / "run")) == 1


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_an_ema_decay_outside_0_1_is_refused(value):
    with pytest.raises(StnError, match="--ema must"):
        TrainConfig(ema=value).validate()

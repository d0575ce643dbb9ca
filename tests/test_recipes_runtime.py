"""Named recipes, the precision and layout options, the linear schedule and BatchNorm blocks."""

from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import run_cli
from stn_gtsrb import TrainConfig, create_model, evaluate, pretrained_path, train
from stn_gtsrb.errors import StnError
from stn_gtsrb.grid import expand, load_grid
from stn_gtsrb.recipes import list_recipes, load_recipe
from stn_gtsrb.runs import read_log
from stn_gtsrb.runtime import Runtime, bf16_is_fast, resolve_precision
from stn_gtsrb.train import learning_rate

SMALL = ["-n", "100", "-e", "1", "--cnn", "4,4,4,8", "--locnet", "4,4,4", "--locnet3", "4,4,4"]


def test_the_named_recipes_are_shipped_and_valid():
    assert list_recipes() == ["accurate", "fast", "minute", "paper", "regularised", "robust"]
    paper = load_recipe("paper")
    assert paper["net"] == "idsia" and paper["locnet"] == "200,300,200" and paper["locnet3"] == "150,150,150"
    assert TrainConfig.from_dict(load_recipe("regularised")).dropout == 0.5


def test_the_minute_recipe_is_fast_at_its_grids_winning_cell():
    winner = {"cnn": "16,32,64,64", "locnet2": "16,16,16", "epochs": 3}  # minute-val's rule (minute_report.log)
    assert load_recipe("minute") == {**load_recipe("fast"), **winner}


def test_the_robust_recipe_is_accurate_with_the_levers_of_its_grid():
    levers = {"jitter_rot": 45.0, "jitter_scale": 0.4, "jitter_content_scale": True, "jitter_shift": 0.25,
              "jitter_tilt": 60.0, "jitter_graded": True, "passes": 2, "locnet_act": "leaky",
              "straighten": 0.3}  # the [base] of accurate-robust-val-graded-straighten.toml
    assert load_recipe("robust") == {**load_recipe("accurate"), **levers}


def test_the_accurate_recipe_is_the_shipped_models():
    shipped = TrainConfig.from_saved(json.loads(pretrained_path().with_suffix(".json").read_text())["config"]).to_dict()
    recipe = TrainConfig.from_dict(load_recipe("accurate")).to_dict()
    assert {key: value for key, value in recipe.items() if key not in ("seed", "n")} == \
        {key: value for key, value in shipped.items() if key not in ("seed", "n")}


def test_command_line_options_override_the_recipe_and_config_json_records_the_result(data_env, tmp_path):
    result = run_cli("train", "--recipe", "paper", *SMALL, "--no-st", "-o", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config == TrainConfig.from_dict({**load_recipe("paper"), "n": 100, "epochs": 1, "cnn": "4,4,4,8",
                                            "locnet": "4,4,4", "locnet3": "4,4,4", "st": False}).to_dict()


@pytest.mark.parametrize("recipe,message", [
    ("papr", "unknown recipe 'papr'; valid: accurate, fast, minute, paper, regularised, robust, "
             "or a path to a .toml file"),
    ("{tmp}/bad.toml", "recipe {tmp}/bad.toml: unknown option(s) epoch; valid: image_size, "),
    ("{tmp}/typed.toml", "recipe {tmp}/typed.toml: option epochs must be int, got 'ten'"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, recipe, message):
    (tmp_path / "bad.toml").write_text("epoch = 3\n")
    (tmp_path / "typed.toml").write_text('epochs = "ten"\n')
    result = run_cli("train", "--recipe", recipe.format(tmp=tmp_path), "-o", str(tmp_path / "run"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"stn-gtsrb: error: {message.format(tmp=tmp_path)}")


def test_a_grid_can_start_from_a_recipe(tmp_path):
    (tmp_path / "g.toml").write_text('recipe = "paper"\n[base]\nepochs = 2\n[grid]\nlr = [0.01, 0.02]\n')
    configs = expand(load_grid(tmp_path / "g.toml"))
    assert [(c.net, c.locnet3, c.epochs, c.lr) for c in configs] == [("idsia", "150,150,150", 2, 0.01),
                                                                      ("idsia", "150,150,150", 2, 0.02)]


@pytest.mark.parametrize("caps,expected", [({"avx512_bf16": True}, "bf16"), ({"amx_bf16": True}, "bf16"),
                                           ({"avx512": True, "avx512_bf16": False}, "fp32"), ({}, "fp32")])
def test_auto_precision_on_cpu_reads_torchs_capability_report(monkeypatch, caps, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps, raising=False)
    assert resolve_precision("auto", torch.device("cpu")) == expected


@pytest.mark.parametrize("supported,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cuda_reads_torchs_bf16_report(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    assert resolve_precision("auto", torch.device("cuda")) == expected


def test_auto_precision_follows_torchs_report_and_bad_values_are_refused():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_is_fast(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(StnError, match="--precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16", cpu)
    assert Runtime.resolve("cpu", layout="auto").layout == torch.channels_last


@pytest.mark.parametrize("precision,layout", [("fp32", "contiguous"), ("bf16", "channels_last")])
def test_each_precision_and_layout_trains_records_itself_and_evaluates_alike(data_env, tmp_path, precision, layout):
    cfg = TrainConfig(net="lecun", cnn="8,16,32", n=1000, epochs=2, optimizer="adam", lr=0.003, st=True,
                      locnet="4,4,4")
    result = train(cfg, tmp_path / "run", precision=precision, layout=layout, echo=lambda _: None)
    assert result["precision"] == precision and read_log(tmp_path / "run")[-1]["precision"] == precision
    assert result["test_acc"] > 20
    assert evaluate(tmp_path / "run")["accuracy"] == result["test_acc"]  # in the precision it was trained in


def test_linear_schedule_with_warmup():
    cfg = TrainConfig(lr=0.1, epochs=2, schedule="linear", warmup=0.25)
    lrs = [learning_rate(cfg, step, steps_per_epoch=4) for step in range(8)]
    assert lrs[:2] == pytest.approx([0.1 * 1 / 2 * (1 - 0 / 8), 0.1 * 2 / 2 * (1 - 1 / 8)])
    assert lrs[2:] == pytest.approx([0.1 * (1 - s / 8) for s in range(2, 8)])


@pytest.mark.parametrize("name", ["lecun", "idsia"])
def test_batchnorm_blocks_train_and_keep_their_statistics(name):
    cnn = "4,4,4,8" if name == "idsia" else "4,4,8"
    model = create_model(name, cnn=cnn, batchnorm=True, cnorm=False, transformers={1: "3,4,5"})
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == len(model.blocks) and all(block[0].bias is None for block in model.blocks)
    model(torch.randn(6, 3, 32, 32)).sum().backward()
    assert all(n.num_batches_tracked == 1 for n in norms) and "blocks.0.1.running_mean" in model.state_dict()

"""Weights files (export, read, half precision) and the model shipped with the package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from cli_helpers import run_cli
from stn_gtsrb import (
    TrainConfig,
    checkpoints,
    create_model,
    data,
    evaluate,
    export,
    load_pretrained,
    load_trained,
    train,
)
from stn_gtsrb.checkpoints import load_checkpoint
from stn_gtsrb.errors import StnError


def test_full_precision_export_evaluates_exactly_like_the_checkpoint(tiny_runs, data_env, tmp_path):
    path = export(tiny_runs / "st", tmp_path / "st.safetensors", half=False)
    assert evaluate(path, "test") == evaluate(tiny_runs / "st", "test")
    checkpoint, exported = load_checkpoint(tiny_runs / "st"), load_checkpoint(path)
    assert exported["config"] == checkpoint["config"] and exported["epoch"] == checkpoint["epoch"]
    assert all(torch.equal(exported["model"][k], checkpoint["model"][k]) for k in checkpoint["model"])


def test_half_export_stores_the_model_in_float16_and_the_normaliser_in_full(tiny_runs, data_env, tmp_path):
    full = export(tiny_runs / "st", tmp_path / "full.safetensors", half=False)
    half = export(tiny_runs / "st", tmp_path / "half.safetensors")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    with safe_open(str(half), framework="pt") as file:
        dtypes = {name: file.get_tensor(name).dtype for name in file.keys()}
    assert {dtypes[name] for name in dtypes if name.startswith("model.")} == {torch.float16}
    assert {dtypes[name] for name in dtypes if name.startswith("normalizer.")} == {torch.float32}
    assert abs(evaluate(half, "test")["accuracy"] - evaluate(full, "test")["accuracy"]) < 0.5


def test_export_refuses_to_overwrite_and_bad_names(tiny_runs, tmp_path):
    target = export(tiny_runs / "plain", tmp_path / "w.safetensors")
    before = target.read_bytes()
    with pytest.raises(StnError, match="exists: use --overwrite"):
        export(tiny_runs / "st", target)
    assert target.read_bytes() == before
    with pytest.raises(StnError, match=r"weights file names end in \.safetensors"):
        export(tiny_runs / "plain", tmp_path / "w.pt")
    result = run_cli("export", str(tiny_runs / "st"), "-o", str(target), "--overwrite")
    assert result.returncode == 0 and "wrote" in result.stdout and target.read_bytes() != before


def test_unreadable_weights_files_give_one_line(data_env, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    with pytest.raises(StnError, match="is not a readable weights file"):
        load_checkpoint(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    result = run_cli("eval", str(tmp_path / "foreign.safetensors"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "is not a stn-gtsrb weights file" in result.stderr


def test_eval_needs_a_checkpoint_or_pretrained(tiny_runs):
    result = run_cli("eval")
    assert result.returncode == 2 and "give a checkpoint (run directory, .pt or .safetensors file), several, or " \
                                      "--pretrained" in result.stderr


def test_create_model_pretrained_loads_the_shipped_file(data_env, tmp_path, monkeypatch):
    """The mechanism, with a tiny idsia net standing in for the shipped file."""
    cfg = TrainConfig(net="idsia", cnn="4,4,4,8", st=True, locnet="4,4,4", n=300, epochs=1, optimizer="adam",
                      lr=0.003)
    train(cfg, tmp_path / "run", echo=lambda _: None)
    monkeypatch.setattr(checkpoints, "PRETRAINED_DIR", tmp_path / "shipped")
    with pytest.raises(StnError, match="missing from this installation"):
        create_model("idsia", pretrained=True)
    export(tmp_path / "run", tmp_path / "shipped" / f"{checkpoints.PRETRAINED['accurate']}.safetensors")
    model = create_model("idsia", pretrained=True)
    shipped = load_checkpoint(tmp_path / "shipped" / f"{checkpoints.PRETRAINED['accurate']}.safetensors")["model"]
    assert all(torch.equal(model.state_dict()[k], shipped[k]) for k in shipped)
    assert create_model("idsia", pretrained=True, cnn="4,4,4,8") is not None
    assert create_model("idsia", pretrained="accurate") is not None
    with pytest.raises(StnError, match=r"trained with cnn='4,4,4,8'; drop those options"):
        create_model("idsia", pretrained=True, cnn="150,200,300,350")
    with pytest.raises(StnError, match="the pretrained model 'accurate' has the idsia net, not lecun"):
        create_model("lecun", pretrained=True)  # never a different net from the one named
    with pytest.raises(StnError, match="no pretrained model 'robustest'; available: accurate"):
        create_model("idsia", pretrained="robustest")


def test_pretrained_names_select_registry_entries_in_every_command(data_env, tiny_runs, tmp_path, monkeypatch):
    """A second entry, a tiny net with two transformers, beside the shipped one."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / checkpoints.pretrained_path().name).symlink_to(checkpoints.pretrained_path())
    monkeypatch.setattr(checkpoints, "PRETRAINED_DIR", shipped)
    monkeypatch.setitem(checkpoints.PRETRAINED, "tiny", "tiny-st")
    export(tiny_runs / "st", shipped / "tiny-st.safetensors", half=False)
    assert load_pretrained("tiny")[1].transformers == load_trained(tiny_runs / "st")[1].transformers
    image = tmp_path / "sign.png"
    Image.new("RGB", (40, 30), "blue").save(image)
    for args, positions in ((["--pretrained", "tiny"], [1, 2]), (["--pretrained"], [2]), ([], [2])):
        result = run_cli("predict", str(image), *args, "--json")
        assert [t["position"] for t in json.loads(result.stdout)[0]["transformers"]] == positions, result.stderr
    measured = json.loads(run_cli("eval", "--pretrained", "tiny", "--json", "--precision", "fp32").stdout)
    assert measured["correct"] == evaluate(tiny_runs / "st", precision="fp32")["correct"]
    out = tmp_path / "robustness"
    result = run_cli("robustness", str(tiny_runs / "plain"), "--pretrained", "tiny", "-o", str(out), "--n", "20",
                     "--rotation", "0", "--scale", "1", "--shift", "0", "--combined", "0", "--tilt", "0")
    assert result.returncode == 0, result.stderr
    assert [m["name"] for m in json.loads((out / "robustness.json").read_text())["models"]] == ["pretrained:tiny",
                                                                                                "plain"]
    unknown = run_cli("predict", str(image), "--pretrained", "nosuch")
    assert unknown.returncode == 2 and unknown.stderr == (
        "stn-gtsrb: error: no pretrained model 'nosuch'; available: accurate, tiny\n")
    swallowed = run_cli("robustness", "--pretrained", str(tiny_runs / "plain"), "-o", str(tmp_path / "r2"))
    assert swallowed.returncode == 2 and swallowed.stderr == (
        f"stn-gtsrb: error: --pretrained takes a pretrained model's name (accurate, tiny), not {tiny_runs / 'plain'}"
        ": give models before --pretrained\n")


# ---------------------------------------------------------------- the shipped model itself

def test_shipped_model_is_the_batchnorm_net_with_a_transformer_before_conv2_and_small():
    path = checkpoints.pretrained_path()
    assert path.stat().st_size <= 25e6
    model, cfg, _ = load_pretrained()
    assert cfg.net == "idsia" and cfg.image_size == 32 and cfg.batchnorm and set(cfg.transformers) == {2}
    assert not model.training and model(torch.zeros(2, 3, 32, 32)).shape == (2, 43)


def test_eval_pretrained_reproduces_the_recorded_test_accuracy(real_env):
    result = run_cli("eval", "--pretrained", "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    recorded = json.loads((checkpoints.PRETRAINED_DIR / f"{checkpoints.PRETRAINED['accurate']}.json").read_text())
    assert measured["total"] == 12630 and measured["accuracy"] == pytest.approx(recorded["test_acc"], abs=1e-9)


def test_predict_without_a_model_uses_the_shipped_one(real_env, tmp_path):
    official = data.load_tensors(32)
    image = official["test"].images[0]
    path = tmp_path / "sign.png"
    Image.fromarray(image.permute(1, 2, 0).numpy()).resize((90, 90)).save(path)
    result = run_cli("predict", str(path), "--json", "--top-k", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["top"][0]["class"] == int(official["test"].labels[0])


def test_configs_saved_with_the_old_switch_names_load_as_the_positive_switches():
    shipped = checkpoints.read_weights(checkpoints.pretrained_path())["config"]
    assert shipped["no_cnorm"] is False and TrainConfig.from_saved(shipped).cnorm is True
    root = Path(__file__).resolve().parents[1]
    saved = [json.loads(path.read_text()) for path in sorted(root.glob("benchmarks/**/runs/*/config.json"))]
    assert any(values.get("no_cnorm") is True for values in saved)
    for values in saved:
        cfg = TrainConfig.from_saved(values)
        assert (cfg.norm, cfg.lnorm, cfg.cnorm) == tuple(not values.get(k, False) for k in ("no_norm", "no_lnorm",
                                                                                          "no_cnorm"))
    assert not [f for f in TrainConfig.__dataclass_fields__ if f.startswith("no_")]

"""One Predictor for every command: PyTorch and ONNX back ends alike, and each option a back end cannot
honour refused with one line, never ignored."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from cli_helpers import run_cli
from stn_gtsrb.errors import StnError
from stn_gtsrb.predictor import ONNX, PYTORCH, load_predictor


@pytest.fixture(scope="module")
def onnx_file(tiny_runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "st.onnx"
    result = run_cli("export", str(tiny_runs / "st"), "-o", str(path))
    assert result.returncode == 0, result.stderr
    return path


def test_both_back_ends_give_the_same_classes_and_thetas_in_batches(tiny_runs, official, onnx_file):
    images = official["test"].images[:70]
    torch_side, onnx_side = load_predictor(tiny_runs / "st"), load_predictor(onnx_file)
    assert (torch_side.kind, onnx_side.kind) == (PYTORCH, ONNX) and torch_side.image_size == 32
    (p1, t1), (p2, t2) = torch_side.trace(images), onnx_side.trace(images)
    assert p1.shape == (70, 43) and torch.allclose(p1, p2, atol=1e-4)
    assert set(t1) == set(t2) == {1, 2} and all(torch.allclose(t1[k], t2[k], atol=1e-4) for k in t1)
    assert torch.equal(torch_side.predict(images), p1.argmax(1))
    assert torch_side.torch_model("plot")[0] is torch_side.network


@pytest.mark.parametrize("options,message", [
    ({"best": True}, "--best picks a checkpoint in a run directory, not an ONNX file"),
    ({"precision": "bf16"}, "an ONNX file runs in float32 (onnxruntime), not --precision bf16"),
    ({"device": "cuda"}, "an ONNX file runs on the CPU (onnxruntime), not on --device cuda"),
])
def test_options_an_onnx_file_cannot_honour_are_refused(onnx_file, options, message):
    with pytest.raises(StnError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_predictor(onnx_file, **options)


def test_what_needs_a_pytorch_model_refuses_an_onnx_file(onnx_file, data_env, tmp_path):
    needs = "needs a PyTorch model (a run directory, .pt or .safetensors), not the ONNX file st.onnx"
    image = tmp_path / "sign.png"
    Image.new("RGB", (32, 32), "red").save(image)
    plotted = run_cli("predict", str(image), "-m", str(onnx_file), "--plot", str(tmp_path / "p.png"))
    assert plotted.returncode == 2 and plotted.stderr == f"stn-gtsrb: error: --plot {needs}\n"
    measured = run_cli("robustness", str(onnx_file), "-o", str(tmp_path / "r"))
    assert measured.returncode == 2 and measured.stderr == f"stn-gtsrb: error: robustness {needs}\n"
    assert not (tmp_path / "r" / "robustness.json").exists()
    for command, extra in (("plot", []), ("animate", ["--class", "0"])):
        drawn = run_cli(command, str(onnx_file), "-o", str(tmp_path / "x.png"), *extra)
        assert drawn.returncode == 2 and drawn.stderr == f"stn-gtsrb: error: {command} {needs}\n"
    again = run_cli("export", str(onnx_file), "-o", str(tmp_path / "again.onnx"))
    assert again.returncode == 2 and again.stderr == f"stn-gtsrb: error: export to ONNX {needs}\n"
    assert run_cli("predict", str(image), "--best").stderr == (
        "stn-gtsrb: error: --best picks a checkpoint in a run directory, not a pretrained model\n")


def test_a_committee_may_mix_back_ends(tiny_runs, onnx_file, data_env):
    pair = run_cli("eval", str(tiny_runs / "st"), str(onnx_file), "--json")  # a model and its own export
    alone = run_cli("eval", str(tiny_runs / "st"), "--json", "--precision", "fp32")
    assert pair.returncode == 0 and alone.returncode == 0, pair.stderr + alone.stderr
    assert abs(json.loads(pair.stdout)["correct"] - json.loads(alone.stdout)["correct"]) <= 1

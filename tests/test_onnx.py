"""ONNX export checked with onnxruntime: the whole pipeline in one graph, predict -m FILE.onnx, bad files."""

from __future__ import annotations

import dataclasses
import json
import warnings

import onnx
import pytest
import torch
from PIL import Image

from cli_helpers import run_cli
from stn_gtsrb import data, load_pretrained
from stn_gtsrb.checkpoints import load_trained
from stn_gtsrb.onnx_export import OnnxClassifier, export_onnx
from stn_gtsrb.predictor import torch_tracer


def agree(model, cfg, normalizer, images: torch.Tensor, path) -> None:
    """ONNX (onnxruntime) probabilities within 1e-4 of PyTorch's, for batches of 1 and 64."""
    export_onnx(model, cfg, normalizer, path)
    onnx_model, torch_model = OnnxClassifier(path), torch_tracer(model, normalizer, "fp32")
    for batch in (images[:1], images[:64]):
        expected = torch_model(batch)[0]
        assert (onnx_model.probabilities(batch) - expected).abs().max() < 1e-4 and len(expected) == len(batch)


def test_a_transformer_net_exports_whole_and_runs_alike(tiny_runs, official, tmp_path):
    model, cfg, normalizer = load_trained(tiny_runs / "st")
    agree(model, cfg, normalizer, official["test"].images[:64], tmp_path / "st.onnx")
    graph = onnx.load(tmp_path / "st.onnx")
    assert [o.name for o in graph.graph.output] == ["logits", "theta1", "theta2"]
    assert {"GridSample", "MatMul"} <= {node.op_type for node in graph.graph.node}
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_a_leaky_loc_net_exports_and_runs_alike(tiny_runs, official, tmp_path):
    _, cfg, normalizer = load_trained(tiny_runs / "st")
    cfg = dataclasses.replace(cfg, locnet_act="leaky")
    torch.manual_seed(0)
    model = cfg.network().eval()
    with torch.no_grad():
        for transformer in model.transformers.values():
            transformer.loc.head.weight.normal_(std=0.01)  # maps that depend on the image
    agree(model, cfg, normalizer, official["test"].images[:64], tmp_path / "leaky.onnx")
    assert "LeakyRelu" in {node.op_type for node in onnx.load(tmp_path / "leaky.onnx").graph.node}


@pytest.mark.parametrize("family,theta_shape", [("projective", [3, 3]), ("tps", [9, 2])])
def test_projective_and_spline_nets_export_whole_and_run_alike(family_runs, official, tmp_path, family, theta_shape):
    model, cfg, normalizer = load_trained(family_runs / family)
    agree(model, cfg, normalizer, official["test"].images[:64], tmp_path / "m.onnx")
    graph = onnx.load(tmp_path / "m.onnx")
    assert [o.name for o in graph.graph.output] == ["logits", "theta1", "theta2"]
    assert "GridSample" in {node.op_type for node in graph.graph.node}
    images = official["test"].images[:5]
    thetas = OnnxClassifier(tmp_path / "m.onnx").session.run(["theta1", "theta2"], {"images": images.float().numpy()})
    _, expected = model(normalizer(images), return_thetas=True)
    for position, theta in enumerate(thetas, 1):
        assert list(theta.shape) == [5, *theta_shape]
        assert (torch.from_numpy(theta) - expected[position]).abs().max() < 1e-5


def test_the_shipped_model_on_real_test_images(real_env, tmp_path):
    model, cfg, normalizer = load_pretrained()
    agree(model, cfg, normalizer, data.load_tensors(32)["test"].images[:64], tmp_path / "shipped.onnx")


def test_predict_with_an_onnx_file_gives_the_same_answers(tiny_runs, official, data_env, tmp_path):
    files = []
    for i in range(3):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(official["test"].images[i].permute(1, 2, 0).numpy()).save(files[-1])
    exported = run_cli("export", str(tiny_runs / "st"), "-o", str(tmp_path / "m.onnx"))
    assert exported.returncode == 0, exported.stderr
    by_onnx = json.loads(run_cli("predict", *files, "-m", str(tmp_path / "m.onnx"), "--json", "--top-k", "3").stdout)
    by_torch = json.loads(run_cli("predict", *files, "-m", str(tiny_runs / "st"), "--json", "--top-k", "3").stdout)
    for a, b in zip(by_onnx, by_torch, strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert [t["probability"] for t in a["top"]] == pytest.approx([t["probability"] for t in b["top"]], abs=1e-4)
    table = run_cli("predict", files[0], "-m", str(tmp_path / "m.onnx"))
    assert table.returncode == 0 and table.stdout.startswith("file")


def foreign_onnx(path, input_name: str = "x") -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(path), dynamo=False,
                          input_names=[input_name])


def test_bad_onnx_files_and_paths_are_one_line_errors(tiny_runs, tmp_path, official):
    image = tmp_path / "sign.png"
    Image.fromarray(official["test"].images[0].permute(1, 2, 0).numpy()).save(image)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    foreign_onnx(tmp_path / "foreign.onnx")
    model, cfg, normalizer = load_trained(tiny_runs / "st")
    export_onnx(model, cfg, normalizer, tmp_path / "ours.onnx")
    renamed = onnx.load(tmp_path / "ours.onnx")
    renamed.graph.input[0].name = "pixels"
    for node in renamed.graph.node:
        node.input[:] = ["pixels" if name == "images" else name for name in node.input]
    onnx.save(renamed, tmp_path / "renamed.onnx")
    (tmp_path / "file").write_text("in the way")
    cases = [
        (["predict", str(image), "-m", str(tmp_path / "junk.onnx")], "is not a readable ONNX model"),
        (["predict", str(image), "-m", str(tmp_path / "foreign.onnx")], "is not a stn-gtsrb ONNX model"),
        (["predict", str(image), "-m", str(tmp_path / "renamed.onnx")], "lacks the input 'images'"),
        (["export", str(tiny_runs / "st"), "-o", str(tmp_path / "file" / "m.onnx")], "cannot write"),
        (["export", str(tiny_runs / "st"), "-o", str(tmp_path / "ours.onnx")], "exists: use --overwrite"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr

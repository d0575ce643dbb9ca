"""``stn-gtsrb predict``: image files of any format and size, top-k, JSON, plot, unreadable files."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from PIL import Image

from cli_helpers import run_cli
from stn_gtsrb.checkpoints import load_trained
from stn_gtsrb.classes import CLASS_NAMES
from stn_gtsrb.evaluation import predict
from stn_gtsrb.geometry import FRAME_CORNERS


def run(*args: str) -> subprocess.CompletedProcess:
    return run_cli("predict", *args)


def test_predict_matches_the_trained_pipeline_on_files_of_any_format(tiny_runs, official, tmp_path):
    model, _, normalizer = load_trained(tiny_runs / "st")
    images = official["test"].images[:3]
    expected = predict(model, normalizer(images)).tolist()
    files = []
    for i, suffix in enumerate(["ppm", "png", "jpg"]):
        path = tmp_path / f"sign{i}.{suffix}"
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(path)  # 32×32, the model's size
        files.append(str(path))
    result = run(*files, "-m", str(tiny_runs / "st"), "--top-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert [p["file"] for p in predictions] == files
    for prediction, wanted in zip(predictions[:2], expected[:2], strict=True):  # lossless formats: the exact pipeline
        assert prediction["top"][0]["class"] == wanted
    for prediction in predictions:
        probabilities = [t["probability"] for t in prediction["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6
        assert all(t["name"] == CLASS_NAMES[t["class"]] for t in prediction["top"])
    _, thetas, _ = model.trace(normalizer(images[:1]))
    first = predictions[0]["transformers"]
    assert [t["position"] for t in first] == [1, 2]  # each transformer's theta and region, as serve gives them
    assert torch.allclose(torch.tensor(first[0]["theta"]), thetas[1][0], atol=1e-5)
    corners = torch.tensor(first[0]["corners"])  # the region of theta1 in input pixels: (theta·corner + 1) · 16
    expected_corners = (FRAME_CORNERS @ thetas[1][0, :, :2].T + thetas[1][0, :, 2] + 1) * 16
    assert corners.shape == (4, 2) and torch.allclose(corners, expected_corners, atol=1e-3)


def test_unreadable_files_get_one_line_each_and_the_others_are_predicted(tiny_runs, official, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(official["test"].images[0].permute(1, 2, 0).numpy()).resize((250, 120)).save(big)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    plot = tmp_path / "plot.png"
    result = run(str(bad), str(big), str(tmp_path / "missing.jpg"), "-m", str(tiny_runs / "st"), "--plot", str(plot))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("stn-gtsrb: error:")]
    assert len(errors) == 2
    assert f"cannot read image {bad}" in errors[0] and "missing.jpg" in errors[1]
    table = result.stdout.splitlines()
    assert table[0].split() == ["file", "rank", "class", "probability", "name"]
    assert len(table) == 1 + 5 and table[1].startswith(str(big))
    assert Image.open(plot).size[0] == 4 + 3 * (32 * 4 + 4)  # input + two transformer views


def test_bad_top_k_and_missing_model(tiny_runs, tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    result = run(str(image), "-m", str(tiny_runs / "st"), "--top-k", "50")
    assert result.returncode == 2 and "--top-k must be between 1 and 43, got 50" in result.stderr
    result = run(str(image), "-m", str(tmp_path / "none"))
    assert result.returncode == 2 and "not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_scoring_restores_the_models_training_mode_even_when_its_forward_fails():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3), torch.nn.Dropout(0.5))
    assert predict(net, torch.zeros(2, 3, 2, 2)).shape == (2,) and net.training
    net.eval()
    predict(net, torch.zeros(2, 3, 2, 2))
    assert not net.training
    net.train()
    with pytest.raises(RuntimeError):
        predict(net, torch.zeros(2, 3, 3, 3))  # 27 inputs to a 12-input layer
    assert net.training

"""The ``stn-gtsrb data`` commands, end to end in a subprocess."""

from __future__ import annotations

import torch

from cli_helpers import run_process as run
from stn_gtsrb import data


def test_data_prepare_info_verify(real_dir, tmp_path):
    common = ["--source", str(real_dir), "--data-dir", str(tmp_path)]
    prepared = run("data", "prepare", "--size", "8", *common)
    assert prepared.returncode == 0, prepared.stderr
    cache = data.cache_path(tmp_path, 8)
    assert f"cache ready: {cache}" in prepared.stdout
    assert torch.load(cache, weights_only=True)["train"]["images"].shape == (39209, 3, 8, 8)

    info = run("data", "info", "--size", "8", *common)
    assert info.returncode == 0, info.stderr
    assert "train                39209    1307" in info.stdout
    assert "val                   1290      43" in info.stdout
    assert "test                 12630" in info.stdout
    assert "\n    0   210    60\n" in info.stdout and "\n    2  2250   750\n" in info.stdout

    verify = run("data", "verify", *common)
    assert verify.returncode == 0 and verify.stdout.count("ok  ") == 3


def test_data_errors_are_one_line_with_exit_2(tmp_path):
    missing = run("data", "prepare", "--source", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path))
    assert missing.returncode == 2
    assert missing.stderr == f"stn-gtsrb: error: source folder {tmp_path / 'nowhere'} not found\n"
    bad_size = run("data", "prepare", "--size", "0", "--data-dir", str(tmp_path))
    assert bad_size.returncode == 2 and "image size must be a positive integer, got 0" in bad_size.stderr

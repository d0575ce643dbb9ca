"""Honest model selection: the test set never chooses, the validation protocol,
Torch7's SGD, bad values, divergence, a data directory that remembers its source, files read back."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import signal
import subprocess
import time

import pytest
import torch
from PIL import Image

from cli_helpers import CLI, quiet, run_cli
from stn_gtsrb import TrainConfig, data, device_data, evaluate, train
from stn_gtsrb.bench import bench
from stn_gtsrb.checkpoints import BEST, LAST, load_checkpoint
from stn_gtsrb.engines import outcome
from stn_gtsrb.errors import StnError
from stn_gtsrb.fileio import locked_directory, save_torch, write_text
from stn_gtsrb.grid import expand, load_grid
from stn_gtsrb.results import TEST_RANKED, append_record, format_table
from stn_gtsrb.runs import read_log
from stn_gtsrb.train import build_optimizer
from synthetic_gtsrb import CLASSES, FRAMES, TRACKS

train_module = importlib.import_module("stn_gtsrb.train")  # the package's `train` is the function
TINY = dict(net="lecun", cnn="4,8,16", n=400, epochs=2, optimizer="adam", lr=0.003)
TINY_ARGS = ["--net", "lecun", "--cnn", "4,8,16", "-n", "400", "--optimizer", "adam", "--lr", "0.003"]  # TINY's


# ---------------------------------------------------------------- the test set never chooses

def test_without_val_there_is_no_best_and_a_run_means_its_final_model(data_env, tmp_path):
    result = train(TrainConfig(**TINY), tmp_path / "run", echo=quiet)
    assert not (tmp_path / "run" / BEST).exists() and result["best_val_acc"] is None
    assert load_checkpoint(tmp_path / "run")["epoch"] == 2
    assert evaluate(tmp_path / "run")["accuracy"] == read_log(tmp_path / "run")[-1]["test_acc"]
    with pytest.raises(StnError, match="no best.pt: only runs trained with --val"):
        load_checkpoint(tmp_path / "run", best=True)


def test_with_val_best_is_chosen_on_validation_and_used_only_when_asked(data_env, tmp_path):
    train(TrainConfig(**{**TINY, "epochs": 3, "val": True}), tmp_path / "run", echo=quiet)
    log = read_log(tmp_path / "run")
    best_epoch = max(log, key=lambda r: r["val_acc"])["epoch"]  # first of equals, as the trainer keeps it
    assert load_checkpoint(tmp_path / "run", best=True)["epoch"] == best_epoch
    assert load_checkpoint(tmp_path / "run")["epoch"] == 3
    result = run_cli("eval", str(tmp_path / "run"), "--best", "--json", "--split", "val")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] == log[best_epoch - 1]["val_acc"]


@pytest.fixture(scope="module")
def run_without_val(tmp_path_factory, prepared, shared_dir):
    run = tmp_path_factory.mktemp("no-val") / "run"
    train(TrainConfig(**TINY), run, data_dir=prepared, source=str(shared_dir), echo=quiet)
    return run


BEST_COMMANDS = {  # every command that takes a run, with the rest of a valid command line
    "eval": ["eval", "{run}"],
    "plot": ["plot", "{run}", "-o", "{tmp}/p.png"],
    "animate": ["animate", "{run}", "--class", "0", "-o", "{tmp}/a.gif"],
    "report": ["report", "{run}", "-o", "{tmp}/report"],
    "predict": ["predict", "{tmp}/sign.png", "-m", "{run}"],
    "export": ["export", "{run}", "-o", "{tmp}/m.safetensors"],
    "export-onnx": ["export", "{run}", "-o", "{tmp}/m.onnx"],
    "robustness": ["robustness", "{run}", "-o", "{tmp}/robustness", "--n", "20"],
}


@pytest.mark.parametrize("command", BEST_COMMANDS)
def test_every_command_taking_a_run_passes_best_on(data_env, run_without_val, tmp_path, command):
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "sign.png")
    line = [part.format(run=run_without_val, tmp=tmp_path) for part in BEST_COMMANDS[command]]
    result = run_cli(*line, "--best")  # each command without --best: in its own test file
    assert result.returncode == 2 and "no best.pt: only runs trained with --val" in result.stderr


def test_a_table_ranks_on_validation_and_says_so_when_it_cannot():
    def record(name, test, val):
        return {"id": name, "status": "ok", "config": {"lr": {"a": 0.1, "b": 0.2}[name], "epochs": 1},
                "test_acc": test, "val_acc": val, "seconds": 1.0, "parameters": 5, "epochs": 1}

    ranked = format_table([record("a", 99.0, 90.0), record("b", 98.0, 95.0)])  # records of before the rule
    assert ranked.index("| 0.2 |") < ranked.index("| 0.1 |") and TEST_RANKED not in ranked
    assert "val acc (%)" in ranked and "test" not in ranked and "99.00" not in ranked  # no test column
    with pytest.raises(StnError, match="has no test column"):
        format_table([record("a", 99.0, 90.0)], sort="test")
    on_test = format_table([record("a", 99.0, None), record("b", 98.0, None)])
    assert on_test.index("| 0.1 |") < on_test.index("| 0.2 |") and on_test.rstrip().endswith(TEST_RANKED)


def test_a_bench_progress_line_shows_validation_accuracy_when_there_is_a_split():
    record = {"status": "ok", "test_acc": 99.12, "val_acc": 97.5, "seconds": 61.0}
    assert outcome(record) == "val 97.50% in 61s" and "99.12" not in outcome(record)
    assert outcome({**record, "val_acc": None}) == "test 99.12% in 61s"
    assert outcome({"status": "failed", "error": "boom"}) == "FAILED: boom"


# ---------------------------------------------------------------- the test set is blind by construction

def test_a_run_with_val_never_scores_the_test_set(data_env, tmp_path, monkeypatch):
    loaded = []
    real = device_data.load_device_data
    monkeypatch.setattr(train_module, "load_device_data", lambda *a, **k: loaded.append(k["splits"]) or real(*a, **k))
    lines = []
    result = train(TrainConfig(**{**TINY, "val": True}), tmp_path / "run", echo=lines.append)
    assert loaded == [("train", "val")]  # the test images are not even loaded
    assert all("test_acc" not in r and "val_acc" in r for r in read_log(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert "test_acc" not in saved and "test_acc" not in result and saved["val_acc"] == result["val_acc"]
    assert "test_acc" not in torch.load(tmp_path / "run" / LAST, weights_only=True)["metrics"]
    assert not any(re.search(r"\btest\b", line) for line in lines)
    printed = run_cli("train", "-o", str(tmp_path / "cli"), "--val", *TINY_ARGS, "-e", "1", "--script")
    assert printed.returncode == 0, printed.stderr
    assert not re.search(r"\btest\b", printed.stdout) and "final validation accuracy" in printed.stdout
    assert float(printed.stdout.splitlines()[-1]) == pytest.approx(read_log(tmp_path / "cli")[-1]["val_acc"], abs=1e-4)
    scored = run_cli("eval", str(tmp_path / "run"), "--json")  # on test when asked, deliberately
    assert scored.returncode == 0 and json.loads(scored.stdout)["split"] == "test"


def test_a_run_without_val_scores_the_test_set_after_its_final_epoch_or_each_with_test_curve(data_env, tmp_path):
    cfg = {**TINY, "epochs": 3}
    train(TrainConfig(**cfg), tmp_path / "final", echo=quiet)
    assert ["test_acc" in r for r in read_log(tmp_path / "final")] == [False, False, True]
    curve = TrainConfig(**cfg, test_curve=True)
    train(curve, tmp_path / "curve", echo=quiet)
    assert ["test_acc" in r for r in read_log(tmp_path / "curve")] == [True, True, True]
    assert json.loads((tmp_path / "curve" / "config.json").read_text())["test_curve"] is True
    assert read_log(tmp_path / "curve")[-1]["test_acc"] == read_log(tmp_path / "final")[-1]["test_acc"]


def test_a_val_grid_records_and_tabulates_no_test_figure(data_env, tmp_path):
    (tmp_path / "grid.toml").write_text('[base]\nnet = "lecun"\ncnn = "4,8,16"\nn = 400\nepochs = 1\nval = true\n'
                                        'optimizer = "adam"\nlr = 0.003\n[grid]\nseed = [1, 2]\n')
    lines = []
    records = bench(tmp_path / "grid.toml", tmp_path / "out", echo=lines.append)
    assert len(records) == 2 and all(r["status"] == "ok" and "test_acc" not in r for r in records)
    assert all(r["val_acc"] == read_log(r["run_dir"])[-1]["val_acc"] for r in records)
    table = (tmp_path / "out" / "results.md").read_text()
    assert table.startswith("| val acc (%) | epochs |") and "test" not in table  # the two seeds pooled
    assert not any(re.search(r"\btest\b", line) for line in lines)


def test_test_curve_with_val_is_refused_in_one_line(data_env, tmp_path):
    result = run_cli("train", "-o", str(tmp_path / "run"), "--val", "--test-curve")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--test-curve" in result.stderr
    assert not (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------- the validation protocol

def test_val_tracks_and_val_seed_choose_the_held_out_tracks(official):
    val = data.select_split(official, "val", val_seed=3, val_tracks=2)
    assert len(val) == CLASSES * 2 * FRAMES
    assert all(len(val.tracks[val.labels == c].unique()) == 2 for c in range(CLASSES))
    assert not torch.equal(val.tracks.unique(), data.select_split(official, "val", 4, 2).tracks.unique())
    with pytest.raises(StnError, match=f"--val-tracks {TRACKS} leaves class 0 no training track"):
        data.select_split(official, "val", 1, TRACKS)


def test_every_seed_of_a_run_is_scored_on_the_same_validation_images(data_env, tmp_path):
    for seed in (1, 2):
        train(TrainConfig(**{**TINY, "epochs": 1, "val": True, "val_tracks": 2, "seed": seed}),
              tmp_path / f"s{seed}", echo=quiet)
    dataset = data.GTSRB(split="val", val_seed=1, val_tracks=2)
    result = run_cli("data", "info", "--val-tracks", "2", "--val-seed", "1")
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^val +{len(dataset)} +{CLASSES * 2}$", result.stdout, re.M)
    for seed in (1, 2):
        assert evaluate(tmp_path / f"s{seed}", "val")["total"] == len(dataset) == CLASSES * 2 * FRAMES


# ---------------------------------------------------------------- Torch7's SGD

def test_sgd_momentum_dampens_like_torch7():
    """Torch7 optim.sgd: v = g on the first step, then v <- m v + (1 - m) g; x <- x - lr v."""
    model = torch.nn.Linear(1, 1, bias=False)
    model.localisation_parameters = lambda: []
    optimizer = build_optimizer(TrainConfig(lr=0.1, momentum=0.9), model)
    x, v = model.weight.item(), None
    for gradient in (1.0, 2.0, -1.0):
        model.weight.grad = torch.tensor([[gradient]])
        optimizer.step()
        v = gradient if v is None else 0.9 * v + 0.1 * gradient
        x -= 0.1 * v
        assert model.weight.item() == pytest.approx(x, abs=1e-7)


# ---------------------------------------------------------------- bad values and divergence

@pytest.mark.parametrize("flag", ["--lr", "--momentum", "--weight-decay", "--jitter-rot", "--gamma"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_float_options_are_refused(data_env, tmp_path, flag, value):
    result = run_cli("train", "-o", str(tmp_path / "run"), f"{flag}={value}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"stn-gtsrb: error: {flag} must be a finite number, got {float(value)}"


def test_a_diverging_run_stops_at_once_and_keeps_its_last_good_epoch(data_env, tmp_path):
    args = ["--net", "lecun", "--cnn", "4,8,16", "-n", "400", "-e", "3", "--lr", "1e9"]
    result = run_cli("train", "-o", str(tmp_path / "big"), *args)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "the loss is not finite at epoch 1, step" in line
    assert "try a lower learning rate" in line
    assert not (tmp_path / "big" / LAST).exists() and not (tmp_path / "big" / "result.json").exists()


def test_divergence_after_a_good_epoch_keeps_that_epoch(data_env, tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TINY, "epochs": 3})
    calls = {"n": 0}
    real = torch.nn.functional.cross_entropy

    def poisoned(*args, **kwargs):  # the loss turns NaN in epoch 2 (8 steps per epoch)
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * math.nan if calls["n"] > 11 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    with pytest.raises(StnError, match="not finite at epoch 2, step 12"):
        train(cfg, tmp_path / "run", echo=quiet)
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1 and len(read_log(tmp_path / "run")) == 1


# ---------------------------------------------------------------- a data directory remembers its source

def test_a_prepared_data_dir_needs_no_source_afterwards(shared_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("STN_GTSRB_SOURCE", raising=False)
    monkeypatch.delenv("STN_GTSRB_DATA", raising=False)
    data_dir = str(tmp_path / "d")
    assert run_cli("data", "prepare", "--source", str(shared_dir), "--data-dir", data_dir).returncode == 0
    for command in (["data", "info"], ["data", "verify"],
                    ["train", "-o", str(tmp_path / "run"), "-n", "100", "-e", "1", "--cnn", "2,2,4"]):
        result = run_cli(*command, "--data-dir", data_dir)
        assert result.returncode == 0, (command, result.stderr)


# ---------------------------------------------------------------- files read back, and faults

def test_a_kill_between_best_and_last_leaves_them_consistent(data_env, tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TINY, "val": True})  # 2 epochs: the kill comes in the last one
    uninterrupted = train(cfg, tmp_path / "whole", echo=quiet)
    log = read_log(tmp_path / "whole")
    assert log[1]["val_acc"] > log[0]["val_acc"]  # epoch 2 is a new best: it writes both files
    from stn_gtsrb import runs

    real = runs.save_checkpoint
    written = []

    def killed_at_epoch_2s_second_write(checkpoint, path):  # whichever of the two files comes second
        if checkpoint["epoch"] == 2 and written.count(2) == 1:
            raise KeyboardInterrupt
        written.append(checkpoint["epoch"])
        return real(checkpoint, path)

    monkeypatch.setattr(runs, "save_checkpoint", killed_at_epoch_2s_second_write)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", echo=quiet)
    monkeypatch.setattr(runs, "save_checkpoint", real)
    assert train(cfg, tmp_path / "run", resume=True, echo=quiet)["best_val_acc"] == uninterrupted["best_val_acc"]
    for name in (LAST, BEST):
        resumed, whole = (load_checkpoint(d / name) for d in (tmp_path / "run", tmp_path / "whole"))
        assert resumed["epoch"] == whole["epoch"]
        assert all(torch.equal(resumed["model"][k], whole["model"][k]) for k in whole["model"])


def test_a_failed_start_leaves_no_run_behind(data_env, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1})
    with pytest.raises(StnError, match="not found"):
        train(cfg, tmp_path / "run", source=str(tmp_path / "nowhere"), data_dir=tmp_path / "empty", echo=quiet)
    assert not (tmp_path / "run" / "config.json").exists()
    assert train(cfg, tmp_path / "run", echo=quiet)["epochs"] == 1  # no --resume or --overwrite needed


def test_malformed_files_read_back_are_one_line_errors(data_env, tmp_path):
    train(TrainConfig(**{**TINY, "epochs": 1}), tmp_path / "run", echo=quiet)
    checkpoint = torch.load(tmp_path / "run" / LAST, weights_only=True)
    save_torch({k: v for k, v in checkpoint.items() if k != "normalizer"}, tmp_path / "no-norm.pt")
    assert run_cli("export", str(tmp_path / "run"), "-o", str(tmp_path / "w.safetensors")).returncode == 0
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as file:
        tensors, metadata = {k: file.get_tensor(k) for k in file.keys()}, file.metadata()
    save_file(tensors, str(tmp_path / "no-config.safetensors"), {k: v for k, v in metadata.items() if k != "config"})
    cases = {"no-norm.pt": "lacks its normalizer", "no-config.safetensors": "lacks its config"}
    for name, message in cases.items():
        result = run_cli("eval", str(tmp_path / name))
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_malformed_parts_of_a_checkpoint_are_one_line_errors_where_read(data_env, tmp_path):
    train(TrainConfig(**{**TINY, "epochs": 1}), tmp_path / "run", echo=quiet)
    checkpoint = torch.load(tmp_path / "run" / LAST, weights_only=True)
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "sign.png")
    normalizer = checkpoint["normalizer"]
    cases = {  # file name: (what is saved in place of a part, the message)
        "empty-norm.pt": ({"normalizer": {}}, "its normalizer is malformed: it needs mean, std and local"),
        "shape-norm.pt": ({"normalizer": {**normalizer, "mean": torch.zeros(5)}}, "mean must be a finite float"),
        "zero-std.pt": ({"normalizer": {**normalizer, "std": torch.tensor(0.0)}}, "std must be positive"),
        "list-config.pt": ({"config": [1, 2]}, "a saved config must be a dict of options, got list"),
        "unknown-config.pt": ({"config": {**checkpoint["config"], "wings": 2}}, "unknown option(s) wings"),
    }
    for name, (part, message) in cases.items():
        save_torch({**checkpoint, **part}, tmp_path / name)
        for command in (["predict", str(tmp_path / "sign.png"), "-m", str(tmp_path / name)],
                        ["eval", str(tmp_path / name)]):
            result = run_cli(*command)
            assert result.returncode == 2 and message in result.stderr, (name, command, result.stderr)
            assert len(result.stderr.splitlines()) == 1 and str(tmp_path / name) in result.stderr
    write_text(tmp_path / "run" / "config.json", "[1, 2]\n")
    resumed = run_cli("train", "-o", str(tmp_path / "run"), "--resume", *TINY_ARGS, "-e", "1")
    assert resumed.returncode == 2 and "not a run config" in resumed.stderr and len(resumed.stderr.splitlines()) == 1


def test_a_torn_last_log_line_is_dropped_on_resume_and_garbage_is_an_error(data_env, tmp_path):
    cfg = TrainConfig(**TINY)
    train(cfg, tmp_path / "run", echo=quiet)
    log = tmp_path / "run" / "log.jsonl"
    good = log.read_text()
    (tmp_path / "run" / "result.json").unlink()
    log.write_text(good + '{"epoch": 3, "train_lo')  # a kill during the append
    assert len(read_log(tmp_path / "run")) == 2
    assert train(cfg, tmp_path / "run", resume=True, echo=quiet)["epochs"] == 2
    (tmp_path / "run" / "result.json").unlink()
    log.write_text("garbage\n" + good)
    result = run_cli("train", "-o", str(tmp_path / "run"), "--resume", "--net", "lecun", "--cnn", "4,8,16",
                     "-n", "400", "-e", "2", "--optimizer", "adam", "--lr", "0.003")
    assert result.returncode == 2 and f"cannot read {log}: line 1 is not an epoch record" in result.stderr


def test_resume_says_when_logged_epochs_have_no_checkpoint(data_env, tmp_path):
    cfg = TrainConfig(**TINY)
    train(cfg, tmp_path / "run", echo=quiet)
    for name in (LAST, "result.json"):  # a new checkout: the log is committed, the checkpoint is not
        (tmp_path / "run" / name).unlink()
    said = []
    assert train(cfg, tmp_path / "run", resume=True, echo=said.append)["epochs"] == 2
    assert any("no checkpoint holds the last 2 logged epoch(s); training from epoch 1" in line for line in said)
    assert [r["epoch"] for r in read_log(tmp_path / "run")] == [1, 2]


@pytest.mark.parametrize("grid_json,records,message", [
    ("{}", None, "not a grid"),
    (None, '{"id": "a", "status": "ok", "config": {}}\n', "line 1 is not a run record"),
])
def test_malformed_sweep_files_are_one_line_errors(tmp_path, grid_json, records, message):
    (tmp_path / "out").mkdir()
    if grid_json:
        (tmp_path / "out" / "grid.json").write_text(grid_json)
    (tmp_path / "out" / "results.jsonl").write_text(records or "")
    result = run_cli("bench", "table", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_seed_axis_with_repeats_makes_no_duplicate_runs(tmp_path):
    (tmp_path / "g.toml").write_text('repeats = 2\n[base]\nnet = "lecun"\n[grid]\nseed = [1, 2]\n')
    seeds = [cfg.seed for cfg in expand(load_grid(tmp_path / "g.toml"))]
    assert seeds == [1, 2, 3]


def test_one_bench_runner_per_output_directory(data_env, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[base]\nnet = "lecun"\ncnn = "4,8,16"\nn = 2000\nepochs = 30\n[grid]\nlr = [0.01]\n')
    first = subprocess.Popen([*CLI, "bench", str(grid), "-o", str(tmp_path / "out")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp_path / "out" / "grid.json").exists():
            time.sleep(0.1)
        second = run_cli("bench", str(grid), "-o", str(tmp_path / "out"))
        assert second.returncode == 2
        assert "another process is using the sweep output directory" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)


def test_an_interrupted_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    def half_then_interrupted(obj, path):
        open(path, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_torch({"a": 1}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_locking_a_directory_removes_what_killed_writers_left(tmp_path):
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".hidden").write_text("kept")
    (tmp_path / "notes.tmp").write_text("kept: not a writer's temporary file")
    with locked_directory(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".lock", "notes.tmp"]


def test_writes_reach_the_disk_before_the_name_points_at_them(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda *paths: (events.append("replace"), real_replace(*paths))[1])
    write_text(tmp_path / "a.txt", "text")
    save_torch({"a": 1}, tmp_path / "a.pt")
    assert events == ["fsync", "replace", "fsync", "replace"]
    events.clear()
    append_record(tmp_path, {"id": "x"})
    assert events == ["fsync"]


def test_sigterm_stops_a_training_run_like_ctrl_c(data_env, tmp_path):
    process = subprocess.Popen([*CLI, "train", "-o", str(tmp_path / "run"), "--net", "lecun", "--cnn", "4,8,16",
                                "-e", "50", "--script"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run" / LAST).exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130 and "interrupted" in process.stderr.read()
    assert not list((tmp_path / "run").glob(".*.tmp"))

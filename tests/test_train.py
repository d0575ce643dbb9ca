"""The trainer on small subsets: learning, resume after a kill, eval, script mode, errors."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch

from cli_helpers import CLI, quiet, run_cli
from stn_gtsrb import TrainConfig, evaluate, train
from stn_gtsrb.checkpoints import BEST, LAST
from stn_gtsrb.errors import StnError
from stn_gtsrb.runs import read_log
from stn_gtsrb.train import learning_rate
from synthetic_gtsrb import TRAIN_COUNT

TINY = dict(net="lecun", cnn="8,16,32", n=2000, epochs=2, optimizer="adam", lr=0.003)


def cli_args(cfg: dict) -> list[str]:
    args = []
    for key, value in cfg.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else ["--no-" + flag[2:]] if value is False else [flag, str(value)]
    return args


def test_short_training_learns_and_writes_the_run_directory(data_env, tmp_path):
    result = train(TrainConfig(**TINY), tmp_path / "run", echo=quiet)
    assert result["test_acc"] > 20  # chance is 2.3 %
    log = read_log(tmp_path / "run")
    assert [r["epoch"] for r in log] == [1, 2] and log[-1]["train_loss"] < log[0]["train_loss"]
    assert {"train_acc", "lr", "seconds", "images_per_s"} <= set(log[0])
    assert "test_acc" not in log[0] and log[-1]["test_acc"] == result["test_acc"]  # scored after the final epoch
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == TrainConfig(**TINY).to_dict()
    checkpoint = torch.load(tmp_path / "run" / LAST, weights_only=True)
    assert checkpoint["epoch"] == 2 and set(checkpoint) >= {"model", "optimizer", "config", "step", "rng"}


def test_each_epoch_logs_the_transformers_spread_and_names_one_that_stopped(data_env, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1, "st": True, "locnet": "4,4,4"})
    train(cfg, tmp_path / "alive", echo=quiet)
    assert read_log(tmp_path / "alive")[0]["theta_spread"]["1"] > 1e-4

    def stop(step):  # every image gets the bias's map, as when a layer of the loc-net's ReLUs all output 0
        step.model.transformers["1"].loc.head.weight.data.zero_()
    lines = []
    train(cfg, tmp_path / "stopped", echo=lines.append, callbacks=[stop])
    assert read_log(tmp_path / "stopped")[0]["theta_spread"] == {"1": 0.0}
    assert any(line.startswith("warning: the transformer before block 1 gives every image the same map")
               for line in lines)
    train(TrainConfig(**{**TINY, "epochs": 1}), tmp_path / "none", echo=quiet)
    assert "theta_spread" not in read_log(tmp_path / "none")[0]


def test_eval_reproduces_the_logged_accuracy_exactly(data_env, tmp_path):
    cfg = {**TINY, "epochs": 1, "st": True, "locnet": "4,4,4"}
    train(TrainConfig(**cfg, val=True), tmp_path / "val", echo=quiet)
    train(TrainConfig(**cfg), tmp_path / "test", echo=quiet)
    for split in ("val", "test"):
        assert evaluate(tmp_path / split / LAST, split)["accuracy"] == read_log(tmp_path / split)[-1][f"{split}_acc"]
    assert evaluate(tmp_path / "val", "val")["accuracy"] == torch.load(
        tmp_path / "val" / BEST, weights_only=True)["metrics"]["val_acc"]


def test_resume_after_a_kill_equals_the_uninterrupted_run(data_env, tmp_path):
    cfg = {**TINY, "epochs": 3, "st": True, "locnet": "4,4,4", "optimizer": "sgd", "momentum": 0.9,
           "lr": 0.01, "lr_decay": 1e-3}
    train(TrainConfig(**cfg), tmp_path / "full", echo=quiet)

    killed = tmp_path / "killed"
    process = subprocess.Popen([*CLI, "train", "-o", str(killed), *cli_args(cfg)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / LAST).exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(read_log(killed)) < 3, "the run finished before it could be killed"
    stale = killed / f".{LAST}.kill9.tmp"  # what a kill in the middle of a checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")

    result = run_cli("train", "-o", str(killed), "--resume", *cli_args(cfg))
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    full = torch.load(tmp_path / "full" / LAST, weights_only=True)
    resumed = torch.load(killed / LAST, weights_only=True)
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
    assert [r.get("test_acc") for r in read_log(killed)] == [r.get("test_acc") for r in read_log(tmp_path / "full")]


@pytest.mark.parametrize("augmentation", [{"jitter_rot": 10.0, "jitter_scale": 0.1, "jitter_shift": 0.1},
                                          {"jitter_blur": 1.0}, {"jitter_rot": 45.0, "jitter_tilt": 60.0}],
                         ids=["geometric", "blur", "tilt"])
def test_jitter_changes_the_batches_and_resumes_the_same(data_env, tmp_path, augmentation):
    cfg = {**TINY, "epochs": 2, "n": 500}
    train(TrainConfig(**cfg), tmp_path / "plain", echo=quiet)
    jitter = {**cfg, **augmentation}
    full = train(TrainConfig(**jitter), tmp_path / "full", echo=quiet)
    assert read_log(tmp_path / "full")[0]["train_loss"] != read_log(tmp_path / "plain")[0]["train_loss"]
    train(TrainConfig(**{**jitter, "epochs": 1}), tmp_path / "split", echo=quiet)  # as if killed after epoch 1:
    config = tmp_path / "split" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": 2}))
    (tmp_path / "split" / "result.json").unlink()
    resumed = train(TrainConfig(**jitter), tmp_path / "split", resume=True, echo=quiet)
    assert resumed["test_acc"] == full["test_acc"]  # not compared with plain's: 258 test images can tie
    assert read_log(tmp_path / "split")[-1]["train_loss"] == read_log(tmp_path / "full")[-1]["train_loss"]


@pytest.mark.parametrize("lever", [{"straighten": 1.0}, {"passes": 2}, {"jitter_content_scale": True},
                                   {"whiten": True}, {"locnet_act": "leaky"}],
                         ids=["straighten", "passes", "content-scale", "whiten", "leaky-loc-net"])
def test_the_levers_train_resume_and_reload(data_env, tmp_path, lever):
    cfg = {**TINY, "epochs": 2, "n": 300, "st": True, "locnet": "4,4,8", "jitter_rot": 30.0, "jitter_scale": 0.3,
           "jitter_tilt": 30.0}
    plain = train(TrainConfig(**cfg), tmp_path / "plain", echo=quiet)
    full = train(TrainConfig(**cfg, **lever), tmp_path / "full", echo=quiet)
    assert read_log(tmp_path / "full")[0]["train_loss"] != read_log(tmp_path / "plain")[0]["train_loss"]
    assert plain["config"].get(next(iter(lever))) != full["config"][next(iter(lever))]
    train(TrainConfig(**{**cfg, **lever, "epochs": 1}), tmp_path / "split", echo=quiet)  # as if killed after epoch 1
    config = tmp_path / "split" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": 2}))
    (tmp_path / "split" / "result.json").unlink()
    resumed = train(TrainConfig(**cfg, **lever), tmp_path / "split", resume=True, echo=quiet)
    assert resumed["test_acc"] == full["test_acc"]
    assert evaluate(tmp_path / "full")["accuracy"] == full["test_acc"]  # the checkpoint rebuilds the same net


def test_calm_epochs_change_the_last_epochs_only_and_resume_the_same(data_env, tmp_path):
    cfg = {**TINY, "epochs": 3, "n": 300, "jitter_rot": 45.0, "jitter_shift": 0.25, "jitter_graded": True}
    train(TrainConfig(**cfg), tmp_path / "graded", echo=quiet)
    calm = train(TrainConfig(**cfg, jitter_calm_epochs=1), tmp_path / "calm", echo=quiet)
    graded_log, calm_log = read_log(tmp_path / "graded"), read_log(tmp_path / "calm")
    assert [r["train_loss"] for r in calm_log[:2]] == [r["train_loss"] for r in graded_log[:2]]  # full draws
    assert calm_log[2]["train_loss"] != graded_log[2]["train_loss"]  # epoch 3, the calm one, draws mild ones
    train(TrainConfig(**{**cfg, "epochs": 2}), tmp_path / "split", echo=quiet)  # as if killed after epoch 2
    config = tmp_path / "split" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": 3, "jitter_calm_epochs": 1}))
    (tmp_path / "split" / "result.json").unlink()
    resumed = train(TrainConfig(**cfg, jitter_calm_epochs=1), tmp_path / "split", resume=True, echo=quiet)
    assert resumed["test_acc"] == calm["test_acc"]
    assert read_log(tmp_path / "split")[-1]["train_loss"] == calm_log[-1]["train_loss"]


def test_label_smoothing_and_dropout_reach_the_training_loss(data_env, tmp_path):
    cfg = {**TINY, "epochs": 1, "n": 300}
    losses = {}
    for name, extra in (("plain", {}), ("smooth", {"label_smoothing": 0.3}), ("drop", {"dropout": 0.5})):
        train(TrainConfig(**{**cfg, **extra}), tmp_path / name, echo=quiet)
        losses[name] = read_log(tmp_path / name)[0]["train_loss"]
    assert losses["smooth"] > losses["plain"] and losses["drop"] != losses["plain"]


def test_a_run_saved_before_an_option_existed_still_resumes(data_env, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1, "n": 300})
    train(cfg, tmp_path / "run", echo=quiet)
    config = tmp_path / "run" / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items()
                                  if not k.startswith("jitter") and k not in ("transform", "tps_grid")}))
    assert train(cfg, tmp_path / "run", resume=True, echo=quiet)["epochs"] == 1


def test_script_mode_prints_the_test_accuracy_last(data_env, tmp_path):
    result = run_cli("train", "-o", str(tmp_path / "run"), "--script", *cli_args({**TINY, "epochs": 1}))
    assert result.returncode == 0, result.stderr
    summary, last_line = result.stdout.strip().splitlines()[-2:]
    log = read_log(tmp_path / "run")
    assert float(last_line) == pytest.approx(log[-1]["test_acc"], abs=1e-4)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())  # the summary: accuracy, time, speed, CPU
    assert saved["train_seconds"] == pytest.approx(log[-1]["train_seconds"]) and saved["train_seconds"] > 0
    speed = f"{saved['images_per_s']:.0f} images/s, {saved['precision']}, {saved['device']}"
    assert summary == (f"final test accuracy: {log[-1]['test_acc']:.2f}% after {saved['train_seconds']:.1f} s of "
                       f"training ({speed}) (run in {tmp_path / 'run'})")
    assert saved["device"].endswith(f", {torch.get_num_threads()} threads") and len(saved["device"]) > 12
    scored = run_cli("eval", str(tmp_path / "run"), "--json")  # `eval` scores a run; train does not
    assert json.loads(scored.stdout)["accuracy"] == pytest.approx(float(last_line), abs=1e-4)


def test_a_run_reruns_from_its_config_json_and_options_given_override_it(data_env, tmp_path):
    cfg = {**TINY, "epochs": 1, "st": True, "locnet": "4,4,4", "cnorm": False}
    assert run_cli("train", "-o", str(tmp_path / "first"), *cli_args(cfg)).returncode == 0
    config = tmp_path / "first" / "config.json"
    again = run_cli("train", "-o", str(tmp_path / "again"), "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "config.json").read_text() == config.read_text()
    assert read_log(tmp_path / "again")[-1]["test_acc"] == read_log(tmp_path / "first")[-1]["test_acc"]
    changed = run_cli("train", "-o", str(tmp_path / "changed"), "--config", str(config), "--seed", "2", "--cnorm")
    assert changed.returncode == 0, changed.stderr
    saved = json.loads((tmp_path / "changed" / "config.json").read_text())
    assert saved == {**json.loads(config.read_text()), "seed": 2, "cnorm": True}
    both = run_cli("train", "-o", str(tmp_path / "both"), "--config", str(config), "--recipe", "fast")
    assert both.returncode == 2 and "--recipe or --config, not both" in both.stderr


def test_finished_run_is_not_overwritten(data_env, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1, "n": 500})
    train(cfg, tmp_path / "run", echo=quiet)
    before = (tmp_path / "run" / LAST).read_bytes()
    with pytest.raises(StnError, match="already holds a run"):
        train(cfg, tmp_path / "run", echo=quiet)
    assert train(cfg, tmp_path / "run", resume=True, echo=quiet)["epochs"] == 1  # finished: nothing to do
    assert (tmp_path / "run" / LAST).read_bytes() == before
    with pytest.raises(StnError, match=r"belongs to another config \(differs in: lr\)"):
        train(TrainConfig(**{**TINY, "epochs": 1, "n": 500, "lr": 0.1}), tmp_path / "run", resume=True, echo=quiet)
    train(cfg, tmp_path / "run", overwrite=True, echo=quiet)
    assert len(read_log(tmp_path / "run")) == 1


def test_learning_rate_schedules():
    base = TrainConfig(lr=0.1, epochs=4)
    assert learning_rate(base, 10, 5) == 0.1
    assert learning_rate(TrainConfig(lr=0.1, lr_decay=0.5), 2, 5) == pytest.approx(0.05)
    step = TrainConfig(lr=0.1, schedule="step", step_epochs=2, gamma=0.1)
    assert learning_rate(step, 9, 5) == pytest.approx(0.1) and learning_rate(step, 10, 5) == pytest.approx(0.01)
    cosine = TrainConfig(lr=0.1, schedule="cosine", epochs=4)
    assert learning_rate(cosine, 0, 5) == pytest.approx(0.1) and learning_rate(cosine, 10, 5) == pytest.approx(0.05)


@pytest.mark.parametrize("args,message", [
    (["--epochs", "-1"], "--epochs must be positive, got -1"),
    (["--cnn", "1,2"], "--cnn for lecun must be 3 comma-separated positive integers, got '1,2'"),
    (["--locnet3", "4,4,4"], "--locnet3 puts a transformer before conv block 3, which lecun lacks"),
    (["--optimizer", "nesterov"], "--optimizer nesterov needs --momentum > 0"),
    (["--optimizer", "lbfgs"], "--optimizer must be one of sgd, nesterov, adam, rmsprop, got 'lbfgs'"),
    (["--transform", "shear"], "--transform must be one of affine, projective, tps, got 'shear'"),
    (["--transform", "tps", "--rot"], "--rot, --sca and --tra restrict the affine family, not --transform tps"),
    (["--tps-grid", "1"], "--tps-grid must be an integer of at least 2 (control points per side), got 1"),
    (["--net", "idsia", "--locnet2", "1,x,3"], "--locnet2 must be 3 comma-separated positive integers"),
    (["--rot", "--st", "--locnet", "4,4"], "--locnet must be 3 comma-separated positive integers"),
    (["--precision", "fp16", "-n", "100", "--cnn", "2,2,2"], "--precision must be one of auto, fp32, bf16"),
    (["--layout", "nhwc", "-n", "100", "--cnn", "2,2,2"], "--layout must be one of auto, channels_last, contiguous"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--jitter-scale", "1.5"], "--jitter-scale must be below 1, got 1.5"),
    (["--jitter-rot", "-5"], "--jitter-rot must not be negative, got -5.0"),
    (["--jitter-blur", "-1"], "--jitter-blur must not be negative, got -1.0"),
    (["--jitter-tilt", "-1"], "--jitter-tilt must not be negative, got -1.0"),
    (["--jitter-tilt", "75"], "--jitter-tilt must be below 70.0, got 75.0"),
    (["--dropout", "1"], "--dropout must be below 1, got 1.0"),
    (["--label-smoothing", "-0.1"], "--label-smoothing must not be negative, got -0.1"),
    (["-n", "50000"], f"-n 50000 is larger than the training split ({TRAIN_COUNT} images)"),
    (["--straighten", "1", "--jitter-rot", "10"], "--straighten acts on a transformer: add one"),
    (["--straighten", "1", "--st"], "--straighten compares each image with its jittered view: give a geometric"),
    (["--straighten", "-1"], "--straighten must not be negative, got -1.0"),
    (["--passes", "0", "--st"], "--passes must be positive, got 0"),
    (["--jitter-rot", "10", "--jitter-calm-epochs", "1"], "--jitter-calm-epochs caps the graded jitter's magnitude"),
    (["--jitter-rot", "10", "--jitter-graded", "--jitter-calm-epochs", "10"],
     "--jitter-calm-epochs must be at least 0 and below --epochs (10), got 10"),
    (["--passes", "2", "--st", "--transform", "tps"], "--passes 2 composes maps, which the tps family cannot"),
])
def test_bad_options_give_one_line_and_exit_2(data_env, tmp_path, args, message):
    result = run_cli("train", "-o", str(tmp_path / "run"), *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"stn-gtsrb: error: {result.stderr.strip().split('error: ', 1)[1]}"
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_and_incompatible_checkpoints(data_env, tmp_path):
    result = run_cli("eval", str(tmp_path / "nothing.pt"))
    assert result.returncode == 2 and "checkpoint" in result.stderr and "not found" in result.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    result = run_cli("eval", str(junk))
    assert result.returncode == 2 and f"{junk} is not a readable checkpoint" in result.stderr
    torch.save({"format": 1, "config": {**TrainConfig().to_dict(), "cnn": "2,2,2"},
                "model": {"weight": torch.zeros(1)}, "epoch": 1, "metrics": {},
                "normalizer": {"mean": torch.tensor(0.5), "std": torch.tensor(0.2), "local": True}}, junk)
    result = run_cli("eval", str(junk))
    assert result.returncode == 2 and "does not fit its network" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_data_prepared_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_GTSRB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("STN_GTSRB_SOURCE", "http://127.0.0.1:9/")
    result = run_cli("train", "-o", str(tmp_path / "run"), "-n", "10")
    assert result.returncode == 2 and "run 'stn-gtsrb data prepare'" in result.stderr
    assert "download=True" not in result.stderr  # the CLI's hint speaks CLI


@pytest.mark.parametrize("text,message", [("{not json", "Expecting property name"), ("[1, 2]", "not a run config")])
def test_a_corrupt_run_config_on_resume_is_a_one_line_error(tmp_path, text, message):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(text)
    result = run_cli("train", "-o", str(tmp_path / "run"), "--resume", *cli_args(TINY))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"stn-gtsrb: error: cannot read {tmp_path / 'run' / 'config.json'}: ") and message in line

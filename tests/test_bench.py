"""The benchmark runner: grids, records, table, reruns, failures, kills, and Ray."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import CLI, run_cli
from stn_gtsrb import DataLocation, TrainConfig, bench, engines, results
from stn_gtsrb.errors import StnError
from stn_gtsrb.grid import axis_options, describe, expand, load_grid, run_id
from stn_gtsrb.recipes import load_recipe

GRID = """
[base]
net = "lecun"
n = 300
epochs = 1
optimizer = "adam"
lr = 0.003
[grid]
cnn = ["2,4,8", "4,8,16"]
{extra}
"""
TWO_BY_TWO = GRID.format(extra='locnet2 = ["", "2,2,2"]')
BENCH = [*CLI, "bench"]


def write_grid(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory, prepared, shared_dir):
    """The 2×2 grid run once by the local engine, 2 workers (1 thread per cell, like Ray's trials):
    its grid file, output directory and records."""
    root = tmp_path_factory.mktemp("two-by-two")
    grid = write_grid(root, TWO_BY_TWO)
    records = bench.bench(grid, root / "out", engines.Engine(workers=2),
                          engines.CellRuntime(DataLocation(prepared, str(shared_dir))), echo=quiet)
    return grid, root / "out", records


def test_two_by_two_grid_runs_records_tabulates_and_reruns_nothing(data_env, two_by_two):
    grid, out, records = two_by_two
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert {(r["config"]["cnn"], r["config"]["locnet2"]) for r in records} == {
        ("2,4,8", ""), ("2,4,8", "2,2,2"), ("4,8,16", ""), ("4,8,16", "2,2,2")}
    assert all({"test_acc", "val_acc", "epochs", "seconds", "parameters", "seed"} <= set(r) for r in records)
    table = (out / "results.md").read_text().splitlines()
    assert table[0] == "| cnn | locnet2 | test acc (%) | epochs | time (s) | parameters | runs |"
    assert len(table) == 2 + 4 + 2 and table[-1] == results.TEST_RANKED  # no validation split: ranked on test
    accuracies = [float(line.split("|")[3]) for line in table[2:6]]
    assert accuracies == sorted(accuracies, reverse=True)

    before = (out / "results.jsonl").read_text()
    started = time.time()
    bench.bench(grid, out, echo=quiet)
    assert (out / "results.jsonl").read_text() == before  # nothing new
    assert time.time() - started < 5

    (out / "results.md").unlink()
    result = run_cli("bench", "table", str(out))
    assert result.returncode == 0 and (out / "results.md").read_text().splitlines() == table


@pytest.mark.parametrize("names", ["current", "old"])
def test_every_cell_trains_the_config_its_grid_gives_switches_off_included(data_env, tmp_path, names):
    text = """
[base]
net = "idsia"
cnn = "4,4,4,8"
n = 100
epochs = 1
cnorm = false
[grid]
lnorm = [true, false]
"""
    if names == "old":  # committed grids name the switches for their off state: they still load
        text = text.replace("cnorm = false", "no_cnorm = true").replace("lnorm = [true, false]",
                                                                        "no_lnorm = [false, true]")
    records = bench.bench(write_grid(tmp_path, text), tmp_path / "out", echo=quiet)
    assert len(records) == 2 and {r["config"]["lnorm"] for r in records} == {False, True}
    for record in records:
        trained = json.loads((Path(record["run_dir"]) / "config.json").read_text())
        assert trained == record["config"] and trained["cnorm"] is False
    if names == "old":  # run ids as before the rename: the switch off hashed under its old name
        assert run_id(TrainConfig(cnorm=False)) == hashlib.sha256(b'{"no_cnorm": true}').hexdigest()[:12]


def test_ray_engine_gives_the_same_records(data_env, two_by_two, tmp_path):
    pytest.importorskip("ray")
    import ray

    grid, _, local = two_by_two
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = bench.bench(grid, tmp_path / "ray", engines.Engine("ray", cpus_per_trial=1), echo=quiet)
    finally:
        ray.shutdown()
    key = lambda r: r["id"]  # noqa: E731
    assert len(remote) == 4
    for a, b in zip(sorted(local, key=key), sorted(remote, key=key), strict=True):
        assert (a["id"], a["status"], a["test_acc"], a["parameters"]) == (b["id"], b["status"], b["test_acc"],
                                                                            b["parameters"])
    assert len((tmp_path / "ray" / "results.md").read_text().splitlines()) == 2 + 4 + 2  # + the test-ranked note

    # The driver "dies" before writing its records: a rerun restores the Tune experiment
    # and takes the finished trials' results from it, without training again.
    (tmp_path / "ray" / "results.jsonl").unlink()
    checkpoints = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "runs").glob("*/last.pt")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        restored = bench.bench(grid, tmp_path / "ray", engines.Engine("ray", cpus_per_trial=1), echo=quiet)
    finally:
        ray.shutdown()
    assert sorted(r["test_acc"] for r in restored) == sorted(r["test_acc"] for r in remote)
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints


def test_a_crashing_cell_is_recorded_and_the_others_finish(data_env, tmp_path):
    grid = write_grid(tmp_path, GRID.format(extra="").replace("n = 300", "").replace(
        '[grid]', '[grid]\nn = [300, 50000]').replace('cnn = ["2,4,8", "4,8,16"]', 'cnn = ["2,4,8"]'))
    records = bench.bench(grid, tmp_path / "out", echo=quiet)
    status = {r["config"]["n"]: r for r in records}
    assert status[300]["status"] == "ok"
    assert status[50000]["status"] == "failed"
    assert "larger than the training split" in status[50000]["error"]
    assert "(1 failed)" in (tmp_path / "out" / "results.md").read_text()


def test_kill_mid_sweep_then_rerun_finishes_without_duplicates(data_env, tmp_path):
    grid = write_grid(tmp_path, GRID.format(extra='seed = [1, 2]').replace("epochs = 1", "epochs = 2"))
    out = tmp_path / "out"
    process = subprocess.Popen([*BENCH, str(grid), "-o", str(out)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(results.read_records(out)) < 1:
        time.sleep(0.05)
    while time.time() < deadline and not list((out / "runs").glob("*/last.pt"))[1:]:
        time.sleep(0.05)  # a second cell has started training
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = len(results.read_records(out))
    assert 1 <= killed_at < 4
    result = run_cli("bench", str(grid), "-o", str(out))
    assert result.returncode == 0, result.stderr
    ids = [r["id"] for r in results.read_records(out)]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert f"{killed_at} already recorded" in result.stdout


def processes_mentioning(text: str) -> list[int]:
    """The pids of the live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            pass
    return pids


def wait_until_gone(text: str, seconds: float) -> list[int]:
    """Wait up to ``seconds`` for no live process to mention ``text``; return those still there."""
    deadline = time.time() + seconds
    while time.time() < deadline and processes_mentioning(text):
        time.sleep(0.05)
    return processes_mentioning(text)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_stopping_the_runner_stops_its_running_cells_and_records_none(data_env, tmp_path, sig, code):
    """SIGTERM: the runner stops its cells; SIGKILL (or a lost Ray worker): the orphaned cells stop themselves."""
    grid = write_grid(tmp_path, GRID.format(extra="").replace("epochs = 1", "epochs = 500"))
    out = tmp_path / "out"
    process = subprocess.Popen([*BENCH, str(grid), "-o", str(out), "--workers", "2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list((out / "runs").glob("*/last.pt"))) < 2:
            time.sleep(0.05)  # both cells are training
        cells = processes_mentioning(str(out / "runs"))
        assert len(cells) == 2
        process.send_signal(sig)  # the runner only, as `kill PID` does
        assert process.wait(timeout=60) == code
        assert ("interrupted" in process.stderr.read()) == (sig == signal.SIGTERM)
        assert wait_until_gone(str(out / "runs"), 10) == []
        assert results.read_records(out) == []  # stopped, not failed: a rerun resumes both
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_a_stopped_cell_stops_the_sweep_before_the_next_cell_starts(data_env, tmp_path):
    """A cell stopped by a signal of its own (as Ctrl-C reaches every cell) must not let the next one start."""
    grid = write_grid(tmp_path, GRID.format(extra="seed = [1, 2, 3]").replace("epochs = 1", "epochs = 500"))
    out = tmp_path / "out"
    process = subprocess.Popen([*BENCH, str(grid), "-o", str(out)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list((out / "runs").glob("*/last.pt")):
            time.sleep(0.05)  # the first cell is training
        [cell] = processes_mentioning(str(out / "runs"))
        os.kill(cell, signal.SIGTERM)
        assert process.wait(timeout=60) == 130
        assert "interrupted" in process.stderr.read()
        assert wait_until_gone(str(out / "runs"), 10) == []
        assert len(list((out / "runs").iterdir())) == 1 and results.read_records(out) == []
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("budget, workers, expected", [("1", 1, 1), ("4", 2, 2), ("3", 2, 1), ("", 1, None)])
def test_cells_share_the_omp_thread_budget(monkeypatch, budget, workers, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", budget)
    assert engines.cell_threads(workers) == (expected or os.cpu_count())


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_stop_with_parent_sends_an_orphaned_process_sigterm(tmp_path):
    marker = tmp_path / "orphan-to-be"
    child = ("import sys, time; from stn_gtsrb.engines import stop_with_parent; "
             "stop_with_parent(int(sys.argv[2]), poll_s=0.05); open(sys.argv[1], 'w').close(); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", "import os, subprocess, sys; "
                               "subprocess.run([*sys.argv[1:], str(os.getpid())])",
                               sys.executable, "-c", child, str(marker)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not marker.exists():
            time.sleep(0.05)
        assert marker.exists() and len(processes_mentioning(str(marker))) == 2  # parent and child
        parent.kill()
        parent.wait()
        assert wait_until_gone(str(marker), 10) == []
    finally:
        for pid in processes_mentioning(str(marker)):
            os.kill(pid, signal.SIGKILL)


def test_dry_run_lists_cells_with_repeats(data_env, tmp_path, capsys):
    grid = write_grid(tmp_path, TWO_BY_TWO)
    todo = bench.plan(grid, tmp_path / "out", repeats=3)
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "12 runs, 12 to do" and len(todo) == 12
    assert sum('seed=3' in line for line in out) == 4
    assert not (tmp_path / "out").exists()


def test_options_that_change_together_form_one_axis(tmp_path):
    grid = write_grid(tmp_path, GRID.format(extra='"sca+tra" = [{}, {sca = true, tra = true}]\nst = [true]'))
    configs = expand(load_grid(grid))
    assert len(configs) == 4 and {(c.sca, c.tra, c.st) for c in configs} == {(False, False, True), (True, True, True)}
    assert axis_options(load_grid(grid)) == ["cnn", "sca", "tra", "st"]


def test_recipes_can_vary_and_a_saved_grid_keeps_their_options(tmp_path):
    grid = load_grid(write_grid(tmp_path, '[base]\nseed = 3\n[grid]\nrecipe = ["minute", "fast"]'))
    minute, fast = expand(grid)
    assert minute == TrainConfig.from_dict({**load_recipe("minute"), "seed": 3})
    assert fast == TrainConfig.from_dict({**load_recipe("fast"), "seed": 3})
    assert grid.to_dict()["axes"]["recipe"] == [load_recipe("minute"), load_recipe("fast")]  # options, not names
    tables = load_grid(write_grid(tmp_path, '[grid]\nrun = [{recipe = "paper", epochs = 1}, {epochs = 2}]', "t.toml"))
    paper, plain = expand(tables)
    assert paper == TrainConfig.from_dict({**load_recipe("paper"), "epochs": 1})
    assert plain == TrainConfig.from_dict({"epochs": 2})


@pytest.mark.parametrize("text,message", [
    ('recipe = "fast"\n[grid]\nrecipe = ["minute"]', "a cell names a recipe, and so does the file's top"),
    ('[base]\nepochs = 2\n[grid]\nrecipe = ["minute"]', "[base] sets epochs, which the cell's recipe sets too"),
    ('[grid]\nrecipe = ["nope"]', "nope"),
    ('[grid]\npair = [{lrr = 1}]', "[grid] pair: unknown option 'lrr'"),
    ('[grid]\nlearning_rate = [0.1]', "unknown option 'learning_rate'; valid: image_size"),
    ('[grid]\nlr = []', "lr must be a non-empty list of values"),
    ('[grid]\nlr = 0.1', "lr must be a non-empty list of values"),
    ('[grid]\nepochs = ["two"]', "option epochs must be int, got 'two'"),
    ('[base]\nnet = "lecun"\n[grid]\ncnn = ["1,2"]', 'cell cnn="1,2": --cnn for lecun must be 3'),
    ('[grid\n', "is not valid TOML"),
    ('[grids]\nlr = [0.1]', "unknown top-level key(s) grids"),
])
def test_bad_grids_are_refused_before_anything_runs(tmp_path, text, message):
    with pytest.raises(StnError, match=re.escape(message)):
        bench.bench(write_grid(tmp_path, text), tmp_path / "out", echo=quiet)
    assert not (tmp_path / "out").exists()


def test_output_dir_of_another_grid_is_refused_unless_extended(data_env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grid.json").write_text(json.dumps({"base": {}, "axes": {"lr": [0.5]}, "repeats": 1}))
    grid = write_grid(tmp_path, GRID.format(extra="").replace('cnn = ["2,4,8", "4,8,16"]', 'cnn = ["2,4,8"]'))
    result = run_cli("bench", str(grid), "-o", str(out))
    assert result.returncode == 2
    assert result.stderr == (f"stn-gtsrb: error: {out} holds the results of another grid; "
                             "use --extend to add this one to it\n")
    assert bench.bench(grid, out, extend=True, echo=quiet)[0]["status"] == "ok"


@pytest.mark.parametrize(("pinned", "accepted"), [
    ("jitter_blur = 0.0", True),  # defaults: the same runs (how old grids stay put when a recipe gains options)
    ('locnet3 = ""', True),
    ("jitter_blur = 0.5", False),
    ("label_smoothing = 0.1", False),
])
def test_a_grid_that_pins_a_value_keeps_its_directory_only_if_its_runs_are_the_same(tmp_path, pinned, accepted):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grid.json").write_text(json.dumps(load_grid(write_grid(tmp_path, TWO_BY_TWO)).to_dict()))
    pinned_grid = load_grid(write_grid(tmp_path, TWO_BY_TWO.replace("[grid]", f"{pinned}\n[grid]"), "pinned.toml"))
    if accepted:
        assert bench.check_directory(out, pinned_grid) is not None
    else:
        with pytest.raises(StnError, match="holds the results of another grid"):
            bench.check_directory(out, pinned_grid)


def test_a_saved_grid_with_an_option_that_no_longer_exists_is_another_grid(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    saved = load_grid(write_grid(tmp_path, TWO_BY_TWO)).to_dict()
    saved["base"]["retired_option"] = 1
    (out / "grid.json").write_text(json.dumps(saved))
    with pytest.raises(StnError, match="holds the results of another grid"):
        bench.check_directory(out, load_grid(tmp_path / "grid.toml"))


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_an_unreadable_grid_json_is_a_one_line_error(tmp_path, text):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grid.json").write_text(text)
    (out / "results.jsonl").write_text("")
    grid = write_grid(tmp_path, TWO_BY_TWO)
    for args in ([str(grid), "-o", str(out)], ["table", str(out)]):
        result = run_cli("bench", *args)
        assert result.returncode == 2
        assert result.stderr.startswith(f"stn-gtsrb: error: cannot read {out / 'grid.json'}: ")
        assert result.stderr.count("\n") == 1
    assert (out / "grid.json").read_text() == text


def test_torn_last_line_is_skipped_and_mended(tmp_path):
    def failed(name: str) -> dict:
        return {"id": name, "status": "failed", "config": {}, "error": "x"}

    (tmp_path / "results.jsonl").write_text(json.dumps(failed("a")) + '\n{"id": "b", "sta')
    assert [r["id"] for r in results.read_records(tmp_path)] == ["a"]
    results.append_record(tmp_path, failed("c"))
    assert [r["id"] for r in results.read_records(tmp_path)] == ["a", "c"]


def test_run_ids_hash_only_the_options_that_differ_from_their_defaults():
    expected = hashlib.sha256(json.dumps({"lr": 0.1, "net": "idsia"}, sort_keys=True).encode()).hexdigest()[:12]
    assert run_id(TrainConfig(net="idsia", lr=0.1, epochs=TrainConfig().epochs)) == expected


def test_table_and_progress_lines_leave_the_loc_net_of_an_absent_input_transformer_blank():
    def record(run: str, st: bool, locnet: str, acc: float) -> dict:
        config = TrainConfig(net="idsia", st=st, locnet=locnet).to_dict()
        return {"id": run, "status": "ok", "config": config, "test_acc": acc, "seconds": 1.0, "parameters": 10}

    table = results.format_table([record("a", True, "200,300,200", 99.0), record("b", False, "30,60,30", 98.8)])
    rows = [line.split(" | ")[:3] for line in table.splitlines()[2:4]]
    assert rows == [["| True", "200,300,200", "99.00"], ["| False", "-", "98.80"]]
    assert describe(TrainConfig(st=False).to_dict(), ["st", "locnet"]) == "st=false locnet=-"
    assert describe(TrainConfig(st=True).to_dict(), ["st", "locnet"]) == 'st=true locnet="30,60,30"'


def test_table_of_a_partly_done_sweep_has_the_grid_options_as_columns(tmp_path):
    loaded = load_grid(write_grid(tmp_path, '[grid]\ntransformers = [{st = true, locnet = "4,4,4"}, {st = false}]'))
    (tmp_path / results.GRID_FILE).write_text(json.dumps(loaded.to_dict()))
    config = TrainConfig(st=True, locnet="4,4,4").to_dict()
    results.append_record(tmp_path, {"id": "a", "status": "ok", "config": config, "test_acc": 97.5, "val_acc": None,
                                     "seconds": 3.0, "parameters": 10, "epochs": config["epochs"]})
    table = results.write_table(tmp_path).read_text().splitlines()
    assert table[0].startswith("| st | locnet | test acc (%) |")
    assert table[2].startswith("| True | 4,4,4 | 97.50 |")

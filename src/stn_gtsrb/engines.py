"""Engines that train a sweep's cells: one subprocess per cell, run locally or as Ray Tune trials.

Each cell's config is written to its run directory as config.json, and the
cell runs as a ``stn-gtsrb train --config FILE --resume`` subprocess, so a rerun
resumes interrupted ones, and a crashing cell is recorded with its error while
the sweep goes on; stopping the local runner (Ctrl-C, SIGTERM) stops its
running cells and records none of them, and a cell whose runner dies
(``kill -9``, a lost Ray worker) stops itself. Engines: ``local`` (one cell
after another, or ``workers`` side by side with the CPU threads split between
them: ``OMP_NUM_THREADS`` if set, else every core) and ``ray`` (Ray Tune, on
a local or existing cluster; imported only when used, as it is an optional extra). Both write the same records.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tqdm import tqdm

from . import runs
from .archives import DataLocation
from .config import TrainConfig
from .errors import StnError
from .grid import Grid, describe, run_id
from .results import append_record, read_records

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Engine:
    """How a sweep's cells run."""

    name: str = "local"  # "local": subprocesses in threads on this machine; "ray": Ray Tune trials
    workers: int = 1  # local: cells side by side, the CPU threads split between them
    address: str | None = None  # ray: the cluster to join (None: start a local one)
    cpus_per_trial: int = 1  # ray: CPUs, and torch threads, per trial
    storage: str | None = None  # ray: where Tune keeps the experiment (None: OUT/ray)

    def __post_init__(self):
        if self.name not in ENGINES:
            raise StnError(f"unknown engine {self.name!r}; valid: {', '.join(ENGINES)}")
        if self.workers < 1 or self.cpus_per_trial < 1:
            raise StnError("--workers and --cpus-per-trial must be at least 1")


@dataclass(frozen=True)
class CellRuntime:
    """Where every cell finds its data and how it computes: passed to each cell's ``stn-gtsrb train``."""

    location: DataLocation | None = None  # the data (None: the default place)
    device: str = "auto"  # --device
    precision: str = "auto"  # --precision


# A cell's exit codes when it was stopped (Ctrl-C, SIGTERM) rather than failed: not recorded, so a rerun resumes it.
_STOPPED = {130, -signal.SIGINT, -signal.SIGTERM}
_live: set[subprocess.Popen] = set()  # the cell subprocesses running now
_live_lock = threading.Lock()
_stopping = threading.Event()  # set by stop_cells: no further cell starts until run_local begins anew


def stop_cells() -> None:
    """Terminate every running cell subprocess and start no more (each keeps its last checkpoint, so a rerun
    resumes it)."""
    with _live_lock:
        _stopping.set()
        for process in _live:
            process.terminate()


def cell_threads(workers: int) -> int:
    """CPU threads for each of ``workers`` cells side by side: ``OMP_NUM_THREADS`` if set, else every core,
    shared between them."""
    budget = os.environ.get("OMP_NUM_THREADS", "")
    total = int(budget) if budget.isdigit() and int(budget) > 0 else os.cpu_count() or 1
    return max(1, total // workers)


def stop_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """Send this process SIGTERM as soon as process ``parent`` is no longer its parent (it died).

    A cell calls this (``train --parent-pid``) so that it does not train on, orphaned, when
    its runner is killed outright or its Ray worker is lost.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


@contextmanager
def _cell_process(command: list[str], env: dict):
    """A cell subprocess, tracked while it runs and terminated if its caller stops waiting for it; none
    starts once the sweep is stopping."""
    with _live_lock:
        if _stopping.is_set():
            raise KeyboardInterrupt("the sweep is stopping")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        _live.add(process)
    try:
        yield process
    finally:
        with _live_lock:
            _live.discard(process)
        if process.poll() is None:
            process.terminate()
            process.wait()


def run_cell(cfg: TrainConfig, run_dir: Path, threads: int, cell: CellRuntime) -> dict:
    """Train one cell in a ``stn-gtsrb train --config RUN/config.json --resume`` subprocess; return its record,
    every figure of which comes from the run's result.json.

    Raises KeyboardInterrupt when the cell was stopped (by a signal or ``stop_cells``) rather than failed.
    """
    if _stopping.is_set():  # before writing anything for a cell that will not start
        raise KeyboardInterrupt("the sweep is stopping")
    run_dir = Path(run_dir)
    config = run_dir / runs.CONFIG_FILE
    if not config.exists():  # else the interrupted run's own, which --resume checks against the cell
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_config(run_dir, cfg)
    command = [sys.executable, "-m", "stn_gtsrb.cli", "train", "-o", str(run_dir), "--config", str(config),
               "--script", "--resume", "--parent-pid", str(os.getpid()), "--device", cell.device,
               "--precision", cell.precision]
    location = cell.location
    command += ["--data-dir", str(location.dir), "--source", location.source] if location else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    with _cell_process(command, env) as process:
        stdout, stderr = process.communicate()
    if process.returncode in _STOPPED:
        raise KeyboardInterrupt(f"cell {run_dir} stopped")
    record = {"id": run_id(cfg), "config": cfg.to_dict(), "seed": cfg.seed, "run_dir": str(run_dir)}
    if process.returncode != 0:
        lines = (stderr.strip() or stdout.strip() or f"exit code {process.returncode}").splitlines()
        return {**record, "status": "failed", "error": lines[-1], "seconds": time.perf_counter() - started}
    result = runs.read_result(run_dir)
    return {**record, "status": "ok", **runs.judged_scores(cfg, result), "epochs": result["epochs"],
            "seconds": result["seconds"], "parameters": result["parameters"]}


def outcome(record: dict) -> str:
    """A finished cell's progress-line ending: its error, or the accuracy its grid is judged on, which is
    validation accuracy when the run held a split out (such a run never scores the test set), else test
    accuracy."""
    if record["status"] != "ok":
        return f"FAILED: {record['error']}"
    split = "val" if record.get("val_acc") is not None else "test"
    return f"{split} {record[split + '_acc']:.2f}% in {record['seconds']:.0f}s"


def _report(bar, cfg: TrainConfig, record: dict, shown) -> None:
    bar.write(f"[{record['id']}] {describe(cfg.to_dict(), [*shown, 'seed'])}: {outcome(record)}")
    bar.update()


def run_local(todo: list[TrainConfig], out_dir: Path, shown, workers: int, cell: CellRuntime) -> None:
    """Run the cells in ``workers`` threads; an interrupt (or error) in the runner stops the running cells
    and records none of them; so does a cell stopped on its own (Ctrl-C reaches the cells too)."""
    threads = cell_threads(workers)
    _stopping.clear()
    with tqdm(total=len(todo), desc="cells", unit="cell", disable=None) as bar:
        def one(cfg: TrainConfig) -> None:
            try:
                record = run_cell(cfg, out_dir / "runs" / run_id(cfg), threads, cell)
            except KeyboardInterrupt:
                stop_cells()  # before this worker takes the next cell
                raise
            append_record(out_dir, record)
            _report(bar, cfg, record, shown)

        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            for future in [pool.submit(one, cfg) for cfg in todo]:
                future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            stop_cells()
            raise
        finally:
            pool.shutdown(wait=True)


def _ray_trial(config: dict, out_dir: str, threads: int, cell: CellRuntime) -> None:
    from ray import tune

    cfg = TrainConfig.from_dict(config["cell"])
    record = run_cell(cfg, Path(out_dir) / "runs" / run_id(cfg), threads, cell)
    tune.report({"record": json.dumps(record)})


def run_ray(todo: list[TrainConfig], out_dir: Path, shown, grid: Grid, engine: Engine, cell: CellRuntime) -> None:
    """Run the cells as Ray Tune trials; restores the experiment if a previous sweep was interrupted."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise StnError("the ray engine needs Ray Tune: pip install 'stn-gtsrb[ray]'") from None
    storage, cpus_per_trial = engine.storage, engine.cpus_per_trial
    ray.init(address=engine.address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    if storage is None or "://" not in storage:  # a local path: Tune wants it absolute
        storage = str(Path(storage or out_dir / "ray").resolve())
    name = "stn-gtsrb-" + hashlib.sha256(json.dumps(grid.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    trainable = tune.with_resources(
        partial(_ray_trial, out_dir=str(out_dir.resolve()), threads=cpus_per_trial, cell=cell),
        {"cpu": cpus_per_trial})
    experiment = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space={"cell": tune.grid_search([c.to_dict() for c in todo])},
                           run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0))
    results = tuner.fit()
    recorded = {r["id"] for r in read_records(out_dir)}
    with tqdm(total=len(todo), desc="cells", unit="cell", disable=None) as bar:
        for result in results:
            if result.error is not None or "record" not in (result.metrics or {}):
                bar.write(f"ray trial failed: {result.error}")
                continue
            record = json.loads(result.metrics["record"])
            if record["id"] not in recorded:
                append_record(out_dir, record)
                recorded.add(record["id"])
                _report(bar, TrainConfig.from_dict(record["config"]), record, shown)

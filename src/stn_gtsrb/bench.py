"""Mass benchmarking: a grid of training options, every combination trained and scored.

A grid file (TOML) names base options and, for any option, a list of values;
the cells are the cartesian product, each run with ``repeats`` seeds::

    repeats = 2                       # optional (or --repeats)
    [base]                            # options shared by every cell
    net = "idsia"
    epochs = 14
    [grid]                            # option -> list of values
    cnn = ["150,200,300,350", "100,150,250,300"]
    st = [false, true]

Option names are exactly those of ``stn-gtsrb train`` (TrainConfig's fields,
with ``-`` or ``_``). Options that must change together form one axis whose
values are tables, under any label: ``"sca+tra" = [{}, {sca = true, tra = true}]``.
Every cell is validated before anything runs.

An output directory holds::

    grid.json       the grid it belongs to (another grid is refused unless extend=True)
    runs/<id>/      one run directory per cell and seed; id = hash of the resolved config
    results.jsonl   one record per finished run (config, seed, accuracies, seconds, status, ...)
    results.md      the table: the grid's options, test accuracy mean ± std over seeds, ...

Cells run as ``stn-gtsrb train --script --resume`` subprocesses, so a rerun
skips recorded cells and resumes interrupted ones, and a crashing cell is
recorded with its error while the sweep goes on; stopping the local runner
(Ctrl-C, SIGTERM) stops its running cells and records none of them, and a
cell whose runner dies (``kill -9``, a lost Ray worker) stops itself. Engines:
``local`` (one cell after another, or ``workers`` side by side with the CPU
threads split between them) and ``ray`` (Ray Tune, on a local or existing
cluster). Both write the same records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import signal
import statistics
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

from .config import TrainConfig
from .errors import StnError
from .fileio import read_json, write_text
from .train import RESULT_FILE

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

GRID_FILE, RECORDS_FILE, TABLE_FILE = "grid.json", "results.jsonl", "results.md"
SORT_KEYS = ("test", "val", "time", "none")


# ---------------------------------------------------------------- grid

@dataclass
class Grid:
    """Base options, the options that vary (name -> values), and seeds per cell."""

    base: dict
    axes: dict
    repeats: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _option_name(key: str, where: str) -> str:
    name = key.replace("-", "_")
    valid = [f.name for f in dataclasses.fields(TrainConfig)]
    if name not in valid:
        raise StnError(f"{where}: unknown option {key!r}; valid: {', '.join(valid)}")
    return name


def load_grid(path: Path | str, repeats: int | None = None) -> Grid:
    """Read and check a grid file; ``repeats`` overrides the file's."""
    path = Path(path)
    try:
        content = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StnError(f"grid file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise StnError(f"{path} is not valid TOML: {error}") from None
    unknown = sorted(set(content) - {"base", "grid", "repeats"})
    if unknown:
        raise StnError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; valid: repeats, [base], [grid]")
    base = {_option_name(k, f"{path} [base]"): v for k, v in content.get("base", {}).items()}
    axes = {}
    for key, values in content.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            raise StnError(f"{path} [grid]: {key} must be a non-empty list of values, got {values!r}")
        if all(isinstance(v, dict) for v in values):  # options set together
            axes[key] = [{_option_name(k, f"{path} [grid] {key}"): v for k, v in value.items()} for value in values]
        else:
            axes[_option_name(key, f"{path} [grid]")] = values
    repeats = content.get("repeats", 1) if repeats is None else repeats
    if not isinstance(repeats, int) or repeats < 1:
        raise StnError(f"repeats must be a positive integer, got {repeats!r}")
    grid = Grid(base, axes, repeats)
    expand(grid)  # validates every cell now, before anything runs
    return grid


def expand(grid: Grid) -> list[TrainConfig]:
    """Every cell × seed as a validated TrainConfig (seeds: base seed, +1, ...)."""
    configs = []
    for values in itertools.product(*grid.axes.values()):
        options = dict(grid.base)
        for axis, value in zip(grid.axes, values):
            options.update(value if isinstance(value, dict) else {axis: value})
        cfg = TrainConfig.from_dict(options)
        try:
            cfg.validate()
        except StnError as error:
            raise StnError(f"cell {describe(options, axis_options(grid))}: {error}") from None
        configs += [dataclasses.replace(cfg, seed=cfg.seed + r) for r in range(grid.repeats)]
    return configs


def axis_options(grid: Grid) -> list[str]:
    """The option names the grid varies (the keys inside table-valued axes included)."""
    names = []
    for axis, values in grid.axes.items():
        for key in ([k for v in values for k in v] if isinstance(values[0], dict) else [axis]):
            if key not in names:
                names.append(key)
    return names


def unused(config: dict, key: str) -> bool:
    """Whether an option has no effect in this config: the input loc-net's widths without an input transformer."""
    return key == "locnet" and not config.get("st", TrainConfig.st)


def describe(options: dict, keys) -> str:
    """``key=value`` for each key (a progress line); ``-`` for an unused option."""
    default = TrainConfig().to_dict()
    values = {k: "-" if unused(options, k) else json.dumps(options.get(k, default[k])) for k in keys}
    return " ".join(f"{k}={v}" for k, v in values.items()) or "(base)"


def run_id(cfg: TrainConfig) -> str:
    """A short hash of the options that differ from their defaults (stable when options are added)."""
    default = TrainConfig().to_dict()
    changed = {name: value for name, value in cfg.to_dict().items() if value != default[name]}
    return hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- records

_records_lock = threading.Lock()


def read_records(out_dir: Path) -> list[dict]:
    """The records in results.jsonl; a torn last line (a killed write) is skipped."""
    path = Path(out_dir) / RECORDS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_record(out_dir: Path, record: dict) -> None:
    """Append one record as a line of results.jsonl, durably."""
    path = Path(out_dir) / RECORDS_FILE
    with _records_lock, open(path, "ab+") as file:
        size = file.seek(0, os.SEEK_END)
        if size:
            file.seek(size - 1)
            if file.read(1) != b"\n":
                file.write(b"\n")  # end a torn line so the new record stands on its own
        file.write((json.dumps(record) + "\n").encode())
        file.flush()
        os.fsync(file.fileno())


def config_args(cfg: TrainConfig) -> list[str]:
    """The ``stn-gtsrb train`` options that reproduce ``cfg``."""
    args = []
    for f in dataclasses.fields(cfg):
        value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args += [flag] if value else []
        else:
            args += [flag, str(value)]
    return args


# A cell's exit codes when it was stopped (Ctrl-C, SIGTERM) rather than failed: not recorded, so a rerun resumes it.
_STOPPED = {130, -signal.SIGINT, -signal.SIGTERM}
_live: set[subprocess.Popen] = set()  # the cell subprocesses running now
_live_lock = threading.Lock()


def stop_cells() -> None:
    """Terminate every running cell subprocess (each keeps its last checkpoint, so a rerun resumes it)."""
    with _live_lock:
        for process in _live:
            process.terminate()


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
    """A cell subprocess, tracked while it runs and terminated if its caller stops waiting for it."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with _live_lock:
        _live.add(process)
    try:
        yield process
    finally:
        with _live_lock:
            _live.discard(process)
        if process.poll() is None:
            process.terminate()
            process.wait()


def run_cell(cfg: TrainConfig, run_dir: Path, threads: int, data_dir=None, source=None, device="auto") -> dict:
    """Train one cell in a ``stn-gtsrb train --script --resume`` subprocess; return its record.

    Raises KeyboardInterrupt when the cell was stopped (by a signal or ``stop_cells``) rather than failed.
    """
    command = [sys.executable, "-m", "stn_gtsrb.cli", "train", "-o", str(run_dir), "--script", "--resume",
               "--parent-pid", str(os.getpid()), "--device", device, *config_args(cfg)]
    command += ["--data-dir", str(data_dir)] if data_dir else []
    command += ["--source", str(source)] if source else []
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
    result = read_json(Path(run_dir) / RESULT_FILE, "run result")
    return {**record, "status": "ok", "test_acc": float(stdout.strip().splitlines()[-1]),
            "val_acc": result["val_acc"], "epochs": result["epochs"], "seconds": result["seconds"],
            "parameters": result["parameters"]}


# ---------------------------------------------------------------- engines

def _report(bar, cfg: TrainConfig, record: dict, shown) -> None:
    outcome = (f"{record['test_acc']:.2f}% in {record['seconds']:.0f}s" if record["status"] == "ok"
               else f"FAILED: {record['error']}")
    bar.write(f"[{record['id']}] {describe(cfg.to_dict(), [*shown, 'seed'])}: {outcome}")
    bar.update()


def run_local(todo: list[TrainConfig], out_dir: Path, shown, workers: int = 1, **cell_options) -> None:
    """Run the cells in ``workers`` threads; an interrupt (or error) in the runner stops the running cells
    and records none of them."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    with tqdm(total=len(todo), desc="cells", unit="cell", disable=None) as bar:
        def one(cfg: TrainConfig) -> None:
            record = run_cell(cfg, out_dir / "runs" / run_id(cfg), threads, **cell_options)
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


def _ray_trial(config: dict, out_dir: str, threads: int, cell_options: dict) -> None:
    from ray import tune

    cfg = TrainConfig.from_dict(config["cell"])
    record = run_cell(cfg, Path(out_dir) / "runs" / run_id(cfg), threads, **cell_options)
    tune.report({"record": json.dumps(record)})


def run_ray(todo: list[TrainConfig], out_dir: Path, shown, grid: Grid, address: str | None = None,
            cpus_per_trial: int = 1, storage: str | None = None, **cell_options) -> None:
    """Run the cells as Ray Tune trials; restores the experiment if a previous sweep was interrupted."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise StnError("the ray engine needs Ray Tune: pip install 'stn-gtsrb[ray]'") from None
    ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    if storage is None or "://" not in storage:  # a local path: Tune wants it absolute
        storage = str(Path(storage or out_dir / "ray").resolve())
    name = "stn-gtsrb-" + hashlib.sha256(json.dumps(grid.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    trainable = tune.with_resources(
        partial(_ray_trial, out_dir=str(out_dir.resolve()), threads=cpus_per_trial, cell_options=cell_options),
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


# ---------------------------------------------------------------- table

def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _cells(records: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(config without its seed, latest record of each of its runs) per cell, in first-seen order."""
    cells: dict[str, tuple[dict, list[dict]]] = {}
    for record in {r["id"]: r for r in records}.values():
        config = {k: v for k, v in record["config"].items() if k != "seed"}
        cells.setdefault(json.dumps(config, sort_keys=True), (config, []))[1].append(record)
    return list(cells.values())


def _option_cell(config: dict, key: str) -> str:
    """An option's table cell; "-" for an unused one."""
    return "-" if unused(config, key) else str(config[key])


def _summary(config: dict, runs: list[dict], varying: list[str]) -> dict:
    """One table row: its cells, and the values it sorts by (smaller first)."""
    ok = [r for r in runs if r["status"] == "ok"]
    test = [r["test_acc"] for r in ok]
    val = [r["val_acc"] for r in ok if r.get("val_acc") is not None]
    seconds = statistics.mean(r["seconds"] for r in ok) if ok else None
    failed = len(runs) - len(ok)
    cells = [_option_cell(config, k) for k in varying] + [
        _mean_std(test) + (f" ({failed} failed)" if failed else ""), _mean_std(val), str(config["epochs"]),
        f"{seconds:.0f}" if ok else "-", f"{ok[0]['parameters']:,}" if ok else "-", str(len(runs))]
    worst = float("inf")
    order = {"test": -statistics.mean(test) if test else worst, "val": -statistics.mean(val) if val else worst,
             "time": seconds if ok else worst, "none": 0}
    return {"cells": cells, "order": order}


def format_table(records: list[dict], sort: str = "test", axes=()) -> str:
    """Markdown: one row per cell (seeds pooled), columns for the options that vary among the records
    or that are among ``axes`` (a grid's options, shown while only some of its cells are done)."""
    if sort not in SORT_KEYS:
        raise StnError(f"unknown sort key {sort!r}; valid: {', '.join(SORT_KEYS)}")
    cells = _cells(records)
    configs = [config for config, _ in cells]
    varying = [k for k in (configs[0] if configs else {})
               if k in axes or len({json.dumps(c[k]) for c in configs}) > 1]
    rows = sorted((_summary(config, runs, varying) for config, runs in cells), key=lambda row: row["order"][sort])
    header = [*varying, "test acc (%)", "val acc (%)", "epochs", "time (s)", "parameters", "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row["cells"]) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _saved_grid(out_dir: Path) -> dict | None:
    """The grid recorded in ``out_dir/grid.json`` as a dict, or None when there is none yet."""
    grid_file = out_dir / GRID_FILE
    if not grid_file.exists():
        return None
    return read_json(grid_file, "grid")


def write_table(out_dir: Path, sort: str = "test") -> Path:
    out_dir = Path(out_dir)
    if not (out_dir / RECORDS_FILE).exists():
        raise StnError(f"{out_dir / RECORDS_FILE} not found: nothing to tabulate")
    saved = _saved_grid(out_dir)
    axes = axis_options(Grid(**saved)) if saved is not None else ()
    path = out_dir / TABLE_FILE
    write_text(path, format_table(read_records(out_dir), sort, axes))
    return path


# ---------------------------------------------------------------- entry point

def _claim_directory(out_dir: Path, grid: Grid, extend: bool) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StnError(f"cannot create output directory {out_dir}: {error}") from None
    saved = _saved_grid(out_dir)
    if saved is not None and not extend and saved != grid.to_dict():
        raise StnError(f"{out_dir} holds the results of another grid; use --extend to add this one to it")
    if saved is None or extend:
        write_text(out_dir / GRID_FILE, json.dumps(grid.to_dict(), indent=2) + "\n")


def bench(grid_path: Path | str, out_dir: Path | str, engine: str = "local", workers: int = 1,
          repeats: int | None = None, dry_run: bool = False, extend: bool = False, retry_failed: bool = False,
          address: str | None = None, cpus_per_trial: int = 1, storage: str | None = None, sort: str = "test",
          data_dir=None, source=None, device: str = "auto", echo=print) -> list[dict]:
    """Run every cell of the grid not yet recorded in ``out_dir``; return all records."""
    if engine not in ("local", "ray"):
        raise StnError(f"unknown engine {engine!r}; valid: local, ray")
    if workers < 1 or cpus_per_trial < 1:
        raise StnError("--workers and --cpus-per-trial must be at least 1")
    grid, out_dir = load_grid(grid_path, repeats), Path(out_dir)
    configs = expand(grid)
    done = {r["id"] for r in read_records(out_dir) if r["status"] == "ok" or not retry_failed}
    todo = [cfg for cfg in configs if run_id(cfg) not in done]
    if dry_run:
        for cfg in configs:
            state = "done" if run_id(cfg) in done else "todo"
            echo(f"{state}  {run_id(cfg)}  {describe(cfg.to_dict(), [*axis_options(grid), 'seed'])}")
        echo(f"{len(configs)} runs, {len(todo)} to do")
        return read_records(out_dir)
    _claim_directory(out_dir, grid, extend)
    echo(f"{len(configs)} runs ({len(configs) // grid.repeats} cells × {grid.repeats} seeds), "
         f"{len(configs) - len(todo)} already recorded, {len(todo)} to run with the {engine} engine")
    cell_options = dict(data_dir=data_dir, source=source, device=device)
    if todo and engine == "local":
        run_local(todo, out_dir, axis_options(grid), workers, **cell_options)
    elif todo:
        run_ray(todo, out_dir, axis_options(grid), grid, address, cpus_per_trial, storage, **cell_options)
    if (out_dir / RECORDS_FILE).exists():
        echo(f"table: {write_table(out_dir, sort)}")
    return read_records(out_dir)

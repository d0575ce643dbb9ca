"""Mass benchmarking: a grid of training options, every combination trained and scored.

The parts: grid.py (grid files and their cells), engines.py (training the
cells, locally or with Ray Tune), results.py (records and the table). This
module ties them together for ``stn-gtsrb bench``. An output directory holds::

    grid.json       the grid it belongs to (another grid is refused unless extend=True)
    runs/<id>/      one run directory per cell and seed; id = hash of the resolved config
    results.jsonl   one record per finished run
    results.md      the table

A rerun skips recorded cells and resumes interrupted ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import TrainConfig
from .engines import CellRuntime, Engine, run_local, run_ray
from .errors import StnError
from .fileio import locked_directory, write_text
from .grid import Grid, axis_options, describe, expand, load_grid, run_id
from .results import GRID_FILE, RECORDS_FILE, read_records, saved_grid, write_table


def same_runs(saved: dict, grid: Grid) -> bool:
    """Whether a saved grid names exactly the runs of ``grid``. A grid file that pins an option at the value
    it already had (its default, or what the recipe gave it) changes the dict, not the runs."""
    if saved == grid.to_dict():
        return True
    try:
        before = {run_id(cfg) for cfg in expand(Grid(**saved))}
    except StnError:  # saved by a version whose options no longer load
        return False
    return before == {run_id(cfg) for cfg in expand(grid)}


def check_directory(out_dir: Path, grid: Grid, extend: bool = False) -> dict | None:
    """Refuse ``out_dir`` if it holds another grid's results (unless ``extend``); return its saved grid
    (None when it has none yet). Reads only."""
    saved = saved_grid(out_dir)
    if saved is not None and not extend and not same_runs(saved, grid):
        raise StnError(f"{out_dir} holds the results of another grid; use --extend to add this one to it")
    return saved


def _claim_directory(out_dir: Path, grid: Grid, extend: bool) -> None:
    if check_directory(out_dir, grid, extend) is None or extend:
        write_text(out_dir / GRID_FILE, json.dumps(grid.to_dict(), indent=2) + "\n")


def _todo(grid: Grid, out_dir: Path, retry_failed: bool) -> tuple[list[TrainConfig], set[str]]:
    """The grid's runs not recorded in ``out_dir`` (failed ones too, with ``retry_failed``), and the ids recorded."""
    done = {r["id"] for r in read_records(out_dir) if r["status"] == "ok" or not retry_failed}
    return [cfg for cfg in expand(grid) if run_id(cfg) not in done], done


def plan(grid_path: Path | str, out_dir: Path | str, repeats: int | None = None, retry_failed: bool = False,
         echo=print) -> list[TrainConfig]:
    """Say which runs of the grid are recorded in ``out_dir`` and which are to do (``bench --dry-run``);
    return those to do. Writes nothing."""
    grid, out_dir = load_grid(grid_path, repeats), Path(out_dir)
    todo, done = _todo(grid, out_dir, retry_failed)
    for cfg in expand(grid):
        state = "done" if run_id(cfg) in done else "todo"
        echo(f"{state}  {run_id(cfg)}  {describe(cfg.to_dict(), [*axis_options(grid), 'seed'])}")
    echo(f"{len(expand(grid))} runs, {len(todo)} to do")
    return todo


def bench(grid_path: Path | str, out_dir: Path | str, engine: Engine | None = None, cell: CellRuntime | None = None,
          *, repeats: int | None = None, extend: bool = False, retry_failed: bool = False, sort: str = "auto",
          echo=print) -> list[dict]:
    """Run every cell of the grid not yet recorded in ``out_dir`` with ``engine`` (default: local, one at a
    time), each as ``cell`` says (default: the default data place, device and precision); return all records.
    ``repeats`` overrides the grid's seeds per cell; ``extend`` adds this grid to a directory that holds
    another's; ``retry_failed`` reruns failed cells; ``sort`` orders the table."""
    engine, cell = engine or Engine(), cell or CellRuntime()
    grid, out_dir = load_grid(grid_path, repeats), Path(out_dir)
    with locked_directory(out_dir, "sweep output directory"):  # one runner per directory
        _claim_directory(out_dir, grid, extend)
        todo, _ = _todo(grid, out_dir, retry_failed)
        total = len(expand(grid))
        echo(f"{total} runs ({grid.repeats} seed(s) per cell), {total - len(todo)} already "
             f"recorded, {len(todo)} to run with the {engine.name} engine")
        if todo and engine.name == "local":
            run_local(todo, out_dir, axis_options(grid), engine.workers, cell)
        elif todo:
            run_ray(todo, out_dir, axis_options(grid), grid, engine, cell)
        if (out_dir / RECORDS_FILE).exists():
            echo(f"table: {write_table(out_dir, sort)}")
        return read_records(out_dir)

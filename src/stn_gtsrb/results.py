"""Sweep results: the records file of an output directory and the markdown table made from it.

    grid.json       the grid the directory belongs to
    results.jsonl   one record per finished run (config, seed, accuracies, seconds, status, ...)
    results.md      the table: the grid's options, accuracy mean ± std over seeds, ...

A run with a validation split never scores the test set, so its record has no ``test_acc`` and the
table of a ``--val`` grid has no test column.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
from pathlib import Path

from .errors import StnError
from .fileio import read_json, write_text
from .grid import Grid, axis_options, unused

GRID_FILE, RECORDS_FILE, TABLE_FILE = "grid.json", "results.jsonl", "results.md"
SORT_KEYS = ("auto", "val", "test", "time", "none")
TEST_RANKED = "Ranked by test accuracy: for reporting, not for choosing (choose on validation: `--val`)."

_records_lock = threading.Lock()


RECORD_KEYS = ("id", "config", "status")  # every record
OK_KEYS = ("val_acc", "epochs", "seconds", "parameters")  # and every finished run's


def read_records(out_dir: Path) -> list[dict]:
    """The records in results.jsonl. A torn line (a killed write, later mended by a newline) is
    skipped; a record that lacks what the table needs is a StnError naming the file and line."""
    path = Path(out_dir) / RECORDS_FILE
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise StnError(f"cannot read {path}: {error}") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        ok = isinstance(record, dict) and record.get("status") == "ok"
        needed = RECORD_KEYS + (OK_KEYS if ok else ()) + (("test_acc",) if ok and record.get("val_acc") is None else ())
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or any(
                key not in record for key in needed):
            raise StnError(f"cannot read {path}: line {number} is not a run record (it needs {', '.join(needed)})")
        records.append(record)
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


def _summary(config: dict, runs: list[dict], varying: list[str], split: str) -> dict:
    """One table row: its cells (accuracy on ``split``: val or test), and the values it sorts by (smaller
    first)."""
    ok = [r for r in runs if r["status"] == "ok"]
    test = [r["test_acc"] for r in ok if r.get("test_acc") is not None]
    val = [r["val_acc"] for r in ok if r.get("val_acc") is not None]
    seconds = statistics.mean(r["seconds"] for r in ok) if ok else None
    failed = len(runs) - len(ok)
    cells = [_option_cell(config, k) for k in varying] + [
        _mean_std(val if split == "val" else test) + (f" ({failed} failed)" if failed else ""), str(config["epochs"]),
        f"{seconds:.0f}" if ok else "-", f"{ok[0]['parameters']:,}" if ok else "-", str(len(runs))]
    worst = float("inf")
    order = {"test": -statistics.mean(test) if test else worst, "val": -statistics.mean(val) if val else worst,
             "time": seconds if ok else worst, "none": 0}
    return {"cells": cells, "order": order}


def format_table(records: list[dict], sort: str = "auto", axes=()) -> str:
    """Markdown: one row per cell (seeds pooled), columns for the options that vary among the records
    or that are among ``axes`` (a grid's options, shown while only some of its cells are done).

    The runs of a grid with a validation split never scored the test set: its table shows validation
    accuracy and has no test column (records written before that rule keep their test figure out of
    sight). Other tables show test accuracy. ``auto`` ranks by the accuracy shown, and a table ranked
    by test accuracy says that it is not for choosing.
    """
    if sort not in SORT_KEYS:
        raise StnError(f"unknown sort key {sort!r}; valid: {', '.join(SORT_KEYS)}")
    split = "val" if any(r.get("val_acc") is not None for r in records) else "test"
    if sort == "auto":
        sort = split
    if split == "val" and sort == "test":
        raise StnError("a grid with a validation split has no test column: sort by val, time or none")
    cells = _cells(records)
    configs = [config for config, _ in cells]
    varying = [k for k in (configs[0] if configs else {})
               if k in axes or len({json.dumps(c[k]) for c in configs}) > 1]
    rows = sorted((_summary(config, runs, varying, split) for config, runs in cells),
                  key=lambda row: row["order"][sort])
    header = [*varying, f"{split} acc (%)", "epochs", "time (s)", "parameters", "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row["cells"]) + " |" for row in rows]
    lines += ["", TEST_RANKED] if sort == "test" else []
    return "\n".join(lines) + "\n"


def saved_grid(out_dir: Path) -> dict | None:
    """The grid recorded in ``out_dir/grid.json`` as a dict, or None when there is none yet."""
    grid_file = out_dir / GRID_FILE
    if not grid_file.exists():
        return None
    saved = read_json(grid_file, "grid")
    if set(saved) != {"base", "axes", "repeats"} or not isinstance(saved["axes"], dict) or not all(
            isinstance(values, list) and values for values in saved["axes"].values()):
        raise StnError(f"cannot read {grid_file}: not a grid (it needs base, axes and repeats)")
    return saved


def write_table(out_dir: Path, sort: str = "auto") -> Path:
    out_dir = Path(out_dir)
    if not (out_dir / RECORDS_FILE).exists():
        raise StnError(f"{out_dir / RECORDS_FILE} not found: nothing to tabulate")
    saved = saved_grid(out_dir)
    axes = axis_options(Grid(**saved)) if saved is not None else ()
    path = out_dir / TABLE_FILE
    write_text(path, format_table(read_records(out_dir), sort, axes))
    return path

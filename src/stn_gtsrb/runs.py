"""Run directories: what a training run leaves on disk, and the rules for reusing one.

A run directory holds::

    config.json    the resolved TrainConfig
    log.jsonl      one record per epoch (losses, accuracies in %, lr, seconds, images/s)
    last.pt        checkpoint after the latest epoch (model, optimiser, RNG, step, ...)
    best.pt        checkpoint of the best epoch (validation accuracy, else test)
    result.json    written when the run is finished

Every file is written atomically; one process at a time may use a run
directory (a file lock, :func:`locked_run`).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import filelock

from .checkpoints import BEST, LAST, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .errors import StnError
from .fileio import read_json, write_text

CONFIG_FILE, LOG_FILE, RESULT_FILE = "config.json", "log.jsonl", "result.json"


@contextmanager
def locked_run(run_dir: Path):
    """Create ``run_dir`` and hold its lock while the block runs; StnError if another process holds it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(run_dir / ".lock"), timeout=0)
        lock.acquire()
    except filelock.Timeout:
        raise StnError(f"another process is using the run directory {run_dir}") from None
    except OSError as error:
        raise StnError(f"cannot use run directory {run_dir}: {error}") from None
    try:
        yield run_dir
    finally:
        lock.release()


def read_log(run_dir: Path | str) -> list[dict]:
    """The epoch records of a run, oldest first ([] before its first epoch)."""
    path = Path(run_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def open_run(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool) -> dict | None:
    """Check the run directory against ``cfg``; return the checkpoint to resume from, if any."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        return None
    if overwrite:
        for name in (CONFIG_FILE, LOG_FILE, RESULT_FILE, LAST, BEST):
            (run_dir / name).unlink(missing_ok=True)
        return None
    if not resume:
        raise StnError(f"{run_dir} already holds a run: use --resume to continue it or --overwrite to start again")
    saved = TrainConfig.from_dict(read_json(config_path, "run config")).to_dict()  # new options: defaults
    wanted = cfg.to_dict()
    if saved != wanted:
        differing = sorted(k for k in wanted if saved[k] != wanted[k])
        raise StnError(f"{run_dir} belongs to another config (differs in: {', '.join(differing)})")
    return load_checkpoint(run_dir / LAST) if (run_dir / LAST).exists() else None


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    write_text(run_dir / CONFIG_FILE, cfg.to_json() + "\n")


def trim_log(run_dir: Path, first_epoch: int) -> list[dict]:
    """Drop the log records of epochs from ``first_epoch`` on (not checkpointed); return the rest."""
    log = [record for record in read_log(run_dir) if record["epoch"] < first_epoch]
    write_text(run_dir / LOG_FILE, "".join(json.dumps(r) + "\n" for r in log))
    return log


def save_epoch(run_dir: Path, record: dict, checkpoint: dict, improved: bool) -> None:
    """Append the epoch's log record, then write last.pt (and best.pt), each atomically."""
    with open(run_dir / LOG_FILE, "a") as file:
        file.write(json.dumps(record) + "\n")
    save_checkpoint(checkpoint, run_dir / LAST)
    if improved:
        save_checkpoint(checkpoint, run_dir / BEST)


def read_result(run_dir: Path) -> dict | None:
    """The finished run's result record, or None while it is not finished."""
    path = run_dir / RESULT_FILE
    return read_json(path, "run result") if path.exists() else None


def write_result(run_dir: Path, result: dict) -> None:
    write_text(run_dir / RESULT_FILE, json.dumps(result, indent=2) + "\n")


def format_record(record: dict) -> str:
    """One epoch's log record as a console line."""
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4f}", f"train {record['train_acc']:.2f}%"]
    parts += [f"{name} {record[name + '_acc']:.2f}%" for name in ("val", "test") if name + "_acc" in record]
    parts += [f"lr {record['lr']:.2g}", f"{record['seconds']:.1f}s", f"{record['images_per_s']:.0f} img/s"]
    return " | ".join(parts)

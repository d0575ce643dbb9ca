"""Run directories: what a training run leaves on disk, and the rules for reusing one.

A run directory holds::

    config.json    the resolved TrainConfig
    log.jsonl      one record per epoch (losses, accuracies in %, lr, seconds in all and of training
                   steps alone, training images/s): validation
                   accuracy with --val, test accuracy never; without it, test accuracy after the
                   final epoch (every epoch with --test-curve)
    last.pt        checkpoint after the latest epoch (model, optimiser, RNG, step, ...): the run's model
    best.pt        runs with a validation split only: the epoch with the best validation accuracy
    result.json    written when the run is finished: the judged accuracy, seconds in all and of training,
                   images/s, precision and device (the CPU's model name or the GPU's)

Every file is written atomically; one process at a time may use a run
directory (a file lock, :func:`locked_run`). A run killed outright keeps its
finished epochs: ``last.pt`` is the previous epoch's until the new one is
complete, ``--resume`` goes on from it, and the temporary file of a checkpoint
write cut short is removed when the run directory is next locked.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoints import BEST, LAST, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .errors import StnError
from .fileio import locked_directory, read_json, write_text

CONFIG_FILE, LOG_FILE, RESULT_FILE = "config.json", "log.jsonl", "result.json"


def locked_run(run_dir: Path):
    """Create ``run_dir`` and hold its lock while the ``with`` block runs (one process per run)."""
    return locked_directory(run_dir, "run directory")


LOG_KEYS = ("epoch", "train_loss", "train_acc", "lr", "seconds", "images_per_s")  # in every epoch record


def read_log(run_dir: Path | str) -> list[dict]:
    """The epoch records of a run, oldest first ([] before its first epoch).

    A torn last line (a kill during the append: no newline at its end) is left out; any other
    line that is not an epoch record is a StnError naming the file and line.
    """
    path = Path(run_dir) / LOG_FILE
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise StnError(f"cannot read {path}: {error}") from None
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not all(key in record for key in LOG_KEYS):
            raise StnError(f"cannot read {path}: line {number} is not an epoch record")
        records.append(record)
    return records


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
    saved = TrainConfig.from_saved(read_json(config_path, "run config")).to_dict()
    wanted = cfg.to_dict()
    if saved != wanted:
        differing = sorted(k for k in wanted if saved[k] != wanted[k])
        raise StnError(f"{run_dir} belongs to another config (differs in: {', '.join(differing)})")
    return load_checkpoint(run_dir / LAST) if (run_dir / LAST).exists() else None


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    write_text(run_dir / CONFIG_FILE, cfg.to_json() + "\n")


def trim_log(run_dir: Path, first_epoch: int) -> int:
    """Drop the log records of epochs from ``first_epoch`` on (not checkpointed); return how many."""
    records = read_log(run_dir)
    log = [record for record in records if record["epoch"] < first_epoch]
    write_text(run_dir / LOG_FILE, "".join(json.dumps(r) + "\n" for r in log))
    return len(records) - len(log)


def save_epoch(run_dir: Path, record: dict, checkpoint: dict, improved: bool) -> None:
    """Append the epoch's log record, then write best.pt (if ``improved``) and last.pt, each atomically.

    best.pt goes first: a kill between the two leaves last.pt at the previous epoch, which a resume
    trains again, rewriting best.pt; the other order could leave best.pt behind for good.
    """
    with open(run_dir / LOG_FILE, "a") as file:
        file.write(json.dumps(record) + "\n")
    if improved:
        save_checkpoint(checkpoint, run_dir / BEST)
    save_checkpoint(checkpoint, run_dir / LAST)


def read_result(run_dir: Path) -> dict | None:
    """The finished run's result record, or None while it is not finished."""
    path = run_dir / RESULT_FILE
    return read_json(path, "run result") if path.exists() else None


def judged_scores(cfg: TrainConfig, record: dict) -> dict:
    """A finished run's scores for its result and the bench's records, from its last epoch's ``record``:
    ``val_acc`` alone with --val, else ``test_acc`` (and ``val_acc`` None)."""
    if cfg.judged_split == "val":
        return {"val_acc": record["val_acc"]}
    return {"test_acc": record["test_acc"], "val_acc": None}


def write_result(run_dir: Path, result: dict) -> None:
    write_text(run_dir / RESULT_FILE, json.dumps(result, indent=2) + "\n")


def format_record(record: dict) -> str:
    """One epoch's log record as a console line."""
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4f}", f"train {record['train_acc']:.2f}%"]
    parts += [f"{name} {record[name + '_acc']:.2f}%" for name in ("val", "test") if name + "_acc" in record]
    parts += [f"lr {record['lr']:.2g}", f"{record['seconds']:.1f}s", f"{record['images_per_s']:.0f} img/s"]
    return " | ".join(parts)

"""Files: atomic writes (a temporary file beside the target, fsync, then ``os.replace``), checked JSON
reads, and a lock that keeps a directory to one process.

A reader never sees a half-written file, and a failed or interrupted write
leaves the old file as it was. A write that fails or is interrupted by an
exception removes its temporary file; one killed outright (``kill -9``, a power
cut) leaves it behind, as ``.NAME.*.tmp`` beside the target, and the next
process to lock that directory (:func:`locked_directory`) removes it. Written
files get mode 0644 (``mkstemp`` would leave 0600).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import filelock
import torch

from .errors import StnError

PUBLIC_FILE_MODE = 0o644


TEMP_SUFFIX = ".tmp"


def atomic_write(path: Path | str, write: Callable[[str], None]) -> Path:
    """Call ``write(temp_path)``, then move the result to ``path``; StnError if that is impossible."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        os.close(handle)
    except OSError as error:
        raise StnError(f"cannot write {path}: {error}") from None
    try:
        write(temp)
        os.chmod(temp, PUBLIC_FILE_MODE)
        with open(temp, "rb+") as file:
            os.fsync(file.fileno())  # the data is on disk before the name points at it
        os.replace(temp, path)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise StnError(f"cannot write {path}: {error}") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def save_torch(obj, path: Path | str) -> Path:
    """``torch.save`` atomically."""
    return atomic_write(path, lambda temp: torch.save(obj, temp))


def write_text(path: Path | str, text: str) -> Path:
    """Write a text file atomically."""
    return atomic_write(path, lambda temp: Path(temp).write_text(text))


def read_json(path: Path | str, kind: str) -> dict:
    """The JSON object in ``path``; StnError naming the file if it cannot be read or parsed,
    or holds something other than an object (``kind`` says what it should be, e.g. "grid")."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StnError(f"cannot read {path}: {error}") from None
    if not isinstance(value, dict):
        raise StnError(f"cannot read {path}: not a {kind}")
    return value


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary files that killed writers left in ``directory``; return them.

    Only for a directory whose lock the caller holds: no other writer can be at work there.
    """
    stale = [path for path in directory.glob(f".*{TEMP_SUFFIX}") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextmanager
def locked_directory(path: Path | str, what: str = "directory"):
    """Create ``path`` and hold its ``.lock`` while the block runs; StnError if another process holds it.

    Once locked, the temporary files of writers killed in it earlier are removed.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(path / ".lock"), timeout=0)
        lock.acquire()
        remove_stale_temporaries(path)
    except filelock.Timeout:
        raise StnError(f"another process is using the {what} {path}") from None
    except OSError as error:
        raise StnError(f"cannot use {what} {path}: {error}") from None
    try:
        yield path
    finally:
        lock.release()

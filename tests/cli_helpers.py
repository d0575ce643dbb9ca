"""Helpers for tests of the ``stn-gtsrb`` command: run in this process, or in a subprocess of its own.

Most tests call :func:`run_cli`: ``cli.main`` in this process, with the command's parser, handlers, exit
codes and one-line errors, but without starting Python and importing torch again (about 1.5 s a call,
which over the suite's hundred-odd calls was minutes of CI). Tests of the process itself start ``CLI``:
with :func:`run_process` (``test_cli.py``, the command end to end), or with ``Popen`` to signal or kill it.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

from stn_gtsrb import cli

CLI = [sys.executable, "-m", "stn_gtsrb.cli"]


def quiet(_: str) -> None:
    """An ``echo`` that prints nothing."""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``stn-gtsrb ARGS`` in this process: its exit code, stdout and stderr, as a subprocess would give them.
    The SIGTERM handler that ``train`` and ``bench`` install is put back afterwards."""
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            code = cli.main(list(args))
    except SystemExit as stop:  # argparse's usage errors, and --help
        code = stop.code
    finally:
        signal.signal(signal.SIGTERM, handler)
    return subprocess.CompletedProcess(["stn-gtsrb", *args], code, stdout.getvalue(), stderr.getvalue())


def run_process(*args: str) -> subprocess.CompletedProcess:
    """``python -m stn_gtsrb.cli ARGS`` in a subprocess of its own."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)

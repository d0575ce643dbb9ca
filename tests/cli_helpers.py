"""Helpers for tests that run the ``stn-gtsrb`` command in a subprocess."""

from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "stn_gtsrb.cli"]


def quiet(_: str) -> None:
    """An ``echo`` that prints nothing."""


def run_cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)

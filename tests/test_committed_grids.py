"""The committed benchmark commands: every grid they name loads, and its committed results are its own.

The README and the grid files' comments give ``stn-gtsrb bench benchmarks/grids/G.toml -o DIR``
commands (options such as ``--workers 2`` may stand between the grid and ``-o``). Rerunning one must
add only the missing cells: the bench refuses a directory whose saved ``grid.json`` differs from the
grid as it loads now (a changed option, or a changed recipe file); the test asks the bench's own check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stn_gtsrb.bench import check_directory
from stn_gtsrb.grid import load_grid

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"stn-gtsrb bench (benchmarks/grids/\S+\.toml)[^\n]*? -o (benchmarks/results/\S+)")


def committed_commands() -> list[tuple[str, str]]:
    texts = [ROOT / "README.md", *sorted((ROOT / "benchmarks" / "grids").glob("*.toml"))]
    return sorted({pair for path in texts for pair in COMMAND.findall(path.read_text())})


def test_the_committed_commands_are_found():
    commands = committed_commands()
    assert len(commands) >= 10, commands
    assert ("benchmarks/grids/bn48_32px_full.toml", "benchmarks/results/bn48-32px-full") in commands
    assert ("benchmarks/grids/bn48_32px_full_wide.toml", "benchmarks/results/bn48-32px-full-wide") in commands


@pytest.mark.parametrize(("grid_file", "out_dir"), committed_commands())
def test_a_committed_command_would_rerun_its_own_grid(grid_file, out_dir):
    check_directory(ROOT / out_dir, load_grid(ROOT / grid_file))  # raises StnError if the bench would refuse

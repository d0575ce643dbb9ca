"""The committed benchmark commands: every grid they name loads, and its committed results are its own.

The README, ``docs/*.md``, ``benchmarks/README.md`` and the grid files' comments (``benchmarks/grids`` and
``benchmarks/archive/grids``) give ``stn-gtsrb bench benchmarks/[archive/]grids/G.toml ... -o DIR``
commands (options such as ``--workers 2`` may stand between the grid and ``-o``). Rerunning one must add
only the missing cells: the bench refuses a directory whose saved ``grid.json`` differs from the grid as
it loads now (a changed option, or a changed recipe file); the test asks the bench's own check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stn_gtsrb.bench import check_directory
from stn_gtsrb.grid import load_grid

ROOT = Path(__file__).resolve().parents[1]
GRID_FOLDERS = ("benchmarks/grids", "benchmarks/archive/grids")
PATH = r"benchmarks/(?:archive/)?{}/[\w.-]+"
COMMAND = re.compile(
    rf"stn-gtsrb bench ({PATH.format('grids')}\.toml)[^\n]*? -o ({PATH.format('results')})"
)


def command_texts() -> list[Path]:
    grids = sorted(p for folder in GRID_FOLDERS for p in (ROOT / folder).glob("*.toml"))
    return [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md")), *grids]


def committed_commands() -> list[tuple[str, str]]:
    return sorted({pair for path in command_texts() for pair in COMMAND.findall(path.read_text())})


def test_the_committed_commands_are_found():
    commands = committed_commands()
    assert len(commands) >= 20, commands
    for pair in [
        ("benchmarks/grids/accurate-96-full-seeds.toml", "benchmarks/results/accurate-96-full-seeds"),
        ("benchmarks/grids/accurate-96-full-ablation.toml", "benchmarks/results/accurate-96-full-ablation"),
        ("benchmarks/grids/accurate-96-val-width.toml", "benchmarks/results/accurate-96-val-width"),
        ("benchmarks/grids/fast-full-seeds.toml", "benchmarks/results/fast-full-seeds"),
        ("benchmarks/archive/grids/accurate-48-full.toml", "benchmarks/archive/results/accurate-48-full"),
    ]:
        assert pair in commands


def test_every_grid_has_a_command():
    named = {grid for grid, _ in committed_commands()}
    grids = [p.relative_to(ROOT).as_posix() for folder in GRID_FOLDERS for p in (ROOT / folder).glob("*.toml")]
    never_run = {g for g in grids if Path(g).name.startswith("original-baseline")}  # the original's grids, not run
    assert sorted(set(grids) - named - never_run) == []


@pytest.mark.parametrize(("grid_file", "out_dir"), committed_commands())
def test_a_committed_command_would_rerun_its_own_grid(grid_file, out_dir):
    grid = load_grid(ROOT / grid_file)  # raises StnError if the grid file is gone or no longer loads
    if not (ROOT / out_dir).exists():  # a registered grid, not run yet: its folder takes the grid's name
        assert Path(out_dir).name == Path(grid_file).stem, (grid_file, out_dir)
        return
    check_directory(ROOT / out_dir, grid)  # raises StnError if the bench would refuse

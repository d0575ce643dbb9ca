"""``benchmarks/robust_seeds.py``: seeds of both arms at the target levels, their spread and the verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stn_gtsrb import TrainConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "robust_seeds.py"
LEVELS = [("rotation", 0.0), ("rotation", 30.0), ("rotation", 45.0), ("shift", 0.25), ("scale", 0.6),
          ("tilt", 60.0), ("combined", 0.6), ("combined", 0.8)]


def write_run(results: Path, run_id: str, seed: int, transformer: bool, test_acc: float) -> Path:
    cfg = TrainConfig(seed=seed, locnet2="8,8,8" if transformer else "").to_dict()
    folder = results / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"config": cfg, "test_acc": test_acc, "val_acc": None}))
    return folder


def write_report(folder: Path, models: dict[Path, tuple[float, float]]) -> None:
    """folder/robustness.json: per run folder (every level's accuracy, its slope)."""
    rows, straight = [], []
    for run, (accuracy, slope) in models.items():
        rows += [{"transform": t, "level": level, "model": run.name, "accuracy": accuracy, "correct": 0,
                  "total": 10, "mirror_errors": 3 if (t, level) == ("rotation", 45.0) else 0}
                 for t, level in LEVELS]
        straight.append({"model": run.name, "position": 2, "slope": slope, "scatter": 1.0})
    report = {"models": [{"name": run.name, "source": str(run)} for run in models], "robustness": rows,
              "straightening": {"models": straight}}
    folder.mkdir(parents=True)
    (folder / "robustness.json").write_text(json.dumps(report))


def test_seeds_spread_and_verdicts_per_arm(tmp_path):
    results, robustness = tmp_path / "results", tmp_path / "robustness"
    with1 = write_run(results, "a1", 1, True, 99.6)
    without1 = write_run(results, "b1", 1, False, 99.4)
    with2 = write_run(results, "a2", 2, True, 99.4)
    write_run(results, "b2", 2, False, 99.2)  # no robustness report for seed 2's control: clean figure only
    write_report(robustness / "seed-1" / "with", {with1: (96.0, 0.9)})  # one report per run, or per seed
    write_report(robustness / "seed-1" / "without", {without1: (94.0, 0.0)})
    write_report(robustness / "seed-2", {with2: (98.0, 0.7)})
    done = subprocess.run([sys.executable, str(SCRIPT), str(results), str(robustness)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "with the transformer (seeds 1, 2)" in out and "without a transformer (seeds 1, 2)" in out
    assert "| 1 | 99.60 | 96.00 | 96.00 | 96.00 |" in out  # clean, then rotation 30 and 45, shift 0.25
    assert "| mean ± std (seeds) | 99.50 ± 0.14 (2) | 97.00 ± 1.41 (2)" in out
    assert "clean ≥ 99.55: seed 1 99.600 reaches, the mean of 2 99.500 misses" in out
    assert "slope ≥ 0.8: seed 1 0.900 reaches, the mean of 2 0.800 reaches" in out
    assert "rotation 45 ≥ 95: seed 1 94.000 misses, the mean of 1 94.000 misses" in out  # the control
    assert "  clean: 0.20 ± 0.00 (2)" in out and "  rotation 30: 2.00 ± 0.00 (1)" in out
    seed_one = next(line for line in out.split("without")[0].splitlines() if line.startswith("| 1 |"))
    assert seed_one.endswith("| 0.900 | 3 |")  # its slope, then its mirror errors at 45°


def test_a_folder_without_finished_runs_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == f"robust_seeds.py: error: no finished runs under {tmp_path}\n"

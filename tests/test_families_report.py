"""The transform families' report applies the decision rule registered in its grid."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from stn_gtsrb.config import TrainConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "families_report.py"
spec = importlib.util.spec_from_file_location("families_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

CONFIGS = {"affine": {}, "projective": {"transform": "projective"}, "tps": {"transform": "tps"},
           "none": {"locnet2": ""}}
TILT_LEVELS = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0)


def write_tree(root: Path, clean: dict[str, list[float]], tilt: dict[str, list[float]]) -> tuple[Path, Path]:
    """Three splits; each family's clean accuracy per split and its tilt accuracy (flat over the levels)."""
    results, robustness = root / "results", root / "robustness"
    for split in (1, 2, 3):
        models, rows = [], []
        for name, overrides in CONFIGS.items():
            cfg = TrainConfig(**{"val": True, "val_seed": split, "seed": split, "locnet2": "8,16,32", **overrides})
            run_id = f"{name}{split}"
            run_dir = results / "runs" / run_id
            run_dir.mkdir(parents=True)
            (run_dir / "result.json").write_text(json.dumps(
                {"val_acc": clean[name][split - 1], "test_acc": None, "config": cfg.to_dict()}))
            models.append({"name": name, "source": str(run_dir)})
            rows += [{"transform": "tilt", "level": level, "model": name, "accuracy": tilt[name][split - 1]}
                     for level in TILT_LEVELS]
        folder = robustness / f"val-seed-{split}"
        folder.mkdir(parents=True)
        (folder / "robustness.json").write_text(json.dumps({"models": models, "robustness": rows}))
    return results, robustness


def decide(tmp_path: Path, clean, tilt) -> dict[str, bool]:
    results, robustness = write_tree(tmp_path, clean, tilt)
    runs = report.load_runs(results)
    report.add_robustness(runs, robustness)
    assert {f for _, f in runs} == set(report.FAMILIES)
    return {name: report.beats_affine(runs, [1, 2, 3], name)[0] for name in report.CHALLENGERS}


BASE = {"affine": [99.0, 99.0, 99.0], "none": [98.8, 98.8, 98.8]}
FLAT_TILT = {name: [80.0] * 3 for name in CONFIGS}


@pytest.mark.parametrize("clean_projective, expected", [
    ([99.15, 99.15, 98.95], False),  # +0.083 mean: below the margin
    ([99.20, 99.20, 98.95], True),  # +0.15 mean, higher on two splits
    ([99.40, 98.95, 98.95], False),  # +0.10 mean but higher on one split only
    ([99.05, 99.05, 99.05], False),  # +0.05: below the margin
])
def test_clean_rule(tmp_path, clean_projective, expected):
    clean = {**BASE, "projective": clean_projective, "tps": [99.0] * 3}
    assert decide(tmp_path, clean, FLAT_TILT) == {"projective": expected, "tps": False}


def test_tilt_rule_needs_every_split_and_little_clean_loss(tmp_path):
    clean = {**BASE, "projective": [98.95] * 3, "tps": [98.85] * 3}  # -0.05 and -0.15 clean
    tilt = {**FLAT_TILT, "projective": [82.0] * 3, "tps": [82.0] * 3}  # +2 tilt on every split
    assert decide(tmp_path, clean, tilt) == {"projective": True, "tps": False}


def test_tilt_rule_fails_when_one_split_is_lower(tmp_path):
    clean = {**BASE, "projective": [99.0] * 3, "tps": [99.0] * 3}
    tilt = {**FLAT_TILT, "projective": [84.0, 84.0, 79.0]}
    assert decide(tmp_path, clean, tilt) == {"projective": False, "tps": False}


def test_report_runs_end_to_end(tmp_path, capsys, monkeypatch):
    clean = {**BASE, "projective": [99.2] * 3, "tps": [99.3] * 3}
    results, robustness = write_tree(tmp_path, clean, FLAT_TILT)
    figure = tmp_path / "families.png"
    monkeypatch.setattr("sys.argv", ["families_report", str(results), str(robustness), "--figure", str(figure)])
    report.main()
    out = capsys.readouterr().out
    assert "winner: tps" in out
    assert "| tps | 99.30 | 80.00 | +0.50 | +0.00 |" in out
    assert figure.stat().st_size > 0


def test_distortion_scores_leave_out_the_undistorted_level(tmp_path):
    results, robustness = write_tree(tmp_path, {**BASE, "projective": [99.0] * 3, "tps": [99.0] * 3}, FLAT_TILT)
    path = robustness / "val-seed-1" / "robustness.json"
    saved = json.loads(path.read_text())
    saved["robustness"] += [{"transform": "scale", "level": level, "model": "tps", "accuracy": accuracy}
                            for level, accuracy in ((0.8, 90.0), (1.0, 99.0), (1.2, 94.0))]
    saved["stability"] = {"models": [{"model": "tps", "one_prediction": 95.5}]}
    path.write_text(json.dumps(saved))
    runs = report.load_runs(results)
    report.add_robustness(runs, robustness)
    assert runs[1, "tps"]["scores"] == {"tilt": 80.0, "scale": 92.0}  # tilt 0 and scale 1 left out
    assert runs[1, "tps"]["one_class"] == 95.5 and runs[1, "affine"]["one_class"] is None

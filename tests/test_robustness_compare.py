"""Robustness reports of separate runs merge into one side-by-side report, and refuse what does not fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness_compare.py"
TRACKS = [3, 5]


def write_report(folder: Path, name: str, counts: dict[tuple[str, float], int], split: str | None = "test",
                 transform: str | None = "affine", slope: float | None = None) -> Path:
    """A one-model robustness.json with ``counts`` correct of 10 images per (distortion, level), and the
    straightening ``slope`` of its transformer if given; an older report has no split and no transform."""
    levels: dict[str, list[float]] = {}
    for distortion, level in counts:
        levels.setdefault(distortion, []).append(level)
    rows = [{"transform": t, "level": level, "model": name, "accuracy": 10.0 * c, "correct": c, "total": 10}
            for (t, level), c in counts.items()]
    figures = {"input_variation": 0.5, "output_variation": 0.25, "centre_spread": 0.01, "scale_spread": 0.02,
               "ratio": 0.5}
    stability = {"tracks": TRACKS, "origin": "the tracks given", "models": [
        {"model": name, "trained_on": 2, "tracks": 2, "frames": 60, "accuracy": 100.0, "one_prediction": 100.0,
         "changes": 0.0, "transformers": {"2": figures}}]}
    result = {"seed": 0, "n": 10, "models": [{"name": name, "source": str(folder), "transformers": [2],
                                              "image_size": 32}],
              "levels": levels, "robustness": rows, "stability": stability}
    if split:
        result["split"] = split
    if transform:
        result["models"][0]["transform"] = transform
    if slope is not None:
        result["straightening"] = {"angles": [-45.0, 0.0, 45.0], "images": 10, "models": [
            {"model": name, "position": 2, "slope": slope, "scatter": 4.0,
             "mean_turn": [-45 * slope, 0.0, 45 * slope]}]}
    folder.mkdir(parents=True)
    (folder / "robustness.json").write_text(json.dumps(result))
    return folder


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def reports(tmp_path: Path) -> dict[str, Path]:
    """Model a measured in two runs (an older one without a split, then tilt alone), model b in one."""
    return {
        "a1": write_report(tmp_path / "a1", "pretrained", {("rotation", 0.0): 9, ("rotation", 30.0): 6,
                                                          ("tilt", 0.0): 9}, split=None, transform=None),
        "a2": write_report(tmp_path / "a2", "pretrained", {("rotation", 0.0): 9, ("tilt", 0.0): 9,
                                                          ("tilt", 60.0): 4}),
        "b": write_report(tmp_path / "b", "run1", {("rotation", 0.0): 10, ("rotation", 30.0): 5, ("tilt", 0.0): 10,
                                                   ("tilt", 60.0): 7}, transform="tps"),
    }


def test_merges_runs_side_by_side(reports, tmp_path):
    out = tmp_path / "out"
    done = run(f"ship={reports['a1']},{reports['a2']}", f"new={reports['b']}", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "| rotation | 60.00 | 50.00 | -10.00 |" in done.stdout  # scores over the distorted levels only
    assert "| tilt | 40.00 | 70.00 | +30.00 |" in done.stdout
    assert "| tilt | 60 | 40.00 | 70.00 | +3 |" in done.stdout  # images gained, level by level
    result = json.loads((out / "robustness.json").read_text())
    assert [m["name"] for m in result["models"]] == ["ship", "new"]
    assert result["split"] == "test" and result["levels"] == {"rotation": [0.0, 30.0], "tilt": [0.0, 60.0]}
    assert {(r["model"], r["transform"], r["level"]): r["correct"] for r in result["robustness"]} == {
        ("ship", "rotation", 0.0): 9, ("ship", "rotation", 30.0): 6, ("ship", "tilt", 0.0): 9,
        ("ship", "tilt", 60.0): 4, ("new", "rotation", 0.0): 10, ("new", "rotation", 30.0): 5,
        ("new", "tilt", 0.0): 10, ("new", "tilt", 60.0): 7}
    assert [m["model"] for m in result["stability"]["models"]] == ["ship", "new"]
    markdown = (out / "robustness.md").read_text()
    assert "`ship` (" in markdown and "[2], affine)" in markdown and "[2], tps)" in markdown
    assert "| new | 2 | 0.5000 | 0.2500 |" in markdown
    assert (out / "robustness.png").stat().st_size > 0
    again = run(f"ship={reports['a2']}", "-o", str(out))  # never overwrites silently
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_refuses_what_does_not_fit(reports, tmp_path):
    clash = write_report(tmp_path / "clash", "pretrained", {("rotation", 0.0): 8})
    done = run(f"ship={reports['a1']},{clash}", "-o", str(tmp_path / "o1"))
    assert done.returncode == 2 and "gives 8 correct, not 9" in done.stderr
    done = run(f"ship={reports['a1']}", f"new={reports['b']}", "-o", str(tmp_path / "o2"))
    assert done.returncode == 2 and "other levels" in done.stderr
    val = write_report(tmp_path / "val", "run2", {("rotation", 0.0): 9, ("rotation", 30.0): 6, ("tilt", 0.0): 9,
                                                  ("tilt", 60.0): 4}, split="val")
    done = run(f"ship={reports['a1']},{reports['a2']}", f"new={val}", "-o", str(tmp_path / "o3"))
    assert done.returncode == 2 and "split val differs from test" in done.stderr
    done = run(f"ship={tmp_path / 'missing'}", "-o", str(tmp_path / "o4"))
    assert done.returncode == 2 and "robustness.json" in done.stderr and "Traceback" not in done.stderr
    done = run("no-label", "-o", str(tmp_path / "o5"))
    assert done.returncode == 2 and "LABEL=DIR" in done.stderr


def test_carries_each_models_straightening_figures(reports, tmp_path):
    counts = {("rotation", 0.0): 9, ("tilt", 0.0): 9}
    turned = write_report(tmp_path / "turned", "pretrained", counts, slope=0.01)  # the same model, clean only
    robust = write_report(tmp_path / "robust", "run1", {("rotation", 0.0): 10, ("rotation", 30.0): 9,
                                                        ("tilt", 0.0): 10, ("tilt", 60.0): 8}, slope=0.9)
    out = tmp_path / "out"
    done = run(f"ship={reports['a1']},{reports['a2']},{turned}", f"robust={robust}", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "straightening of robust's transformer before block 2: slope 0.900, scatter 4.00 degrees" in done.stdout
    result = json.loads((out / "robustness.json").read_text())
    assert [(m["model"], m["slope"]) for m in result["straightening"]["models"]] == [("ship", 0.01), ("robust", 0.9)]
    assert "| robust | 2 | 0.900 | 4.00 |" in (out / "robustness.md").read_text()
    done = run(f"ship={reports['a1']},{reports['a2']}", f"robust={robust}", "-o", str(tmp_path / "o1"))
    assert done.returncode == 2 and done.stderr == (
        "error: ship: no straightening figures at 10 images turned by -45 to 45 degrees, as the others have\n")

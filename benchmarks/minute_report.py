"""The minute grid on validation, and the decision rule of ``benchmarks/grids/minute-val.toml`` applied.

    python benchmarks/minute_report.py benchmarks/results/minute-val > benchmarks/results/minute-val/minute_report.log

Per cell (widths, epochs): the final-epoch validation accuracy of each split's run and their mean, and the
training time on the full training set estimated as epochs × 39,209 / the mean of its runs' per-epoch
images_per_s (the training steps alone). Eligible: an estimate of at most 55 s. The winner is the eligible
cell with the highest mean validation accuracy (a tie: the shorter estimate). Nothing here reads a test figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from stn_gtsrb.runs import read_log

FULL_TRAINING_SET = 39_209  # images
BUDGET = 55.0  # seconds: the 60 s target less 5 s of margin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    cells: dict[tuple[str, int], list[dict]] = {}
    for path in sorted(args.results.glob("runs/*/result.json")):
        result = json.loads(path.read_text())
        config = result["config"]
        log = read_log(path.parent)
        cells.setdefault((config["cnn"], config["epochs"]), []).append(
            {"split": config["val_seed"], "val": result["val_acc"], "speeds": [r["images_per_s"] for r in log]})
    rows = []
    for (cnn, epochs), runs in sorted(cells.items()):
        speed = statistics.mean(s for run in runs for s in run["speeds"])
        rows.append({"cnn": cnn, "epochs": epochs, "runs": sorted(runs, key=lambda r: r["split"]),
                     "val": statistics.mean(run["val"] for run in runs), "speed": speed,
                     "estimate": epochs * FULL_TRAINING_SET / speed})
    print("| widths | epochs | val acc per split | mean val acc | images/s | estimated training s (full set) "
          "| eligible |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        splits = ", ".join(f"{run['val']:.2f}" for run in row["runs"])
        print(f"| {row['cnn']} | {row['epochs']} | {splits} | {row['val']:.2f} | {row['speed']:.0f} "
              f"| {row['estimate']:.1f} | {'yes' if row['estimate'] <= BUDGET else 'no'} |")
    eligible = [row for row in rows if row["estimate"] <= BUDGET and len(row["runs"]) == 2]
    winner = max(eligible, key=lambda row: (row["val"], -row["estimate"]))
    print(f"\nwinner: widths {winner['cnn']}, {winner['epochs']} epochs: mean val {winner['val']:.2f}%, "
          f"estimated {winner['estimate']:.1f} s on the full training set")


if __name__ == "__main__":
    main()

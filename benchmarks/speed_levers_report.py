"""A speed grid's levers on validation, and its decision rule applied (minute-val-levers.toml, fast300-val.toml).

    python benchmarks/speed_levers_report.py benchmarks/results/minute-val-levers --budget 55 \\
        > benchmarks/results/minute-val-levers/levers_report.log
    python benchmarks/speed_levers_report.py benchmarks/results/fast300-val --budget 270 \\
        > benchmarks/results/fast300-val/levers_report.log

A cell is the grid's ``lever`` axis entry (its options, or ``baseline`` for the empty one). Per cell: the
final-epoch validation accuracy of each split's run and their mean, and the training time on the full
training set estimated as epochs × 39,209 / the mean of its runs' per-epoch images_per_s (the training
steps alone, with ``--whiten``'s set-up in epoch 1). Eligible: an estimate of at most ``--budget`` seconds.
The winner is the eligible cell with the highest mean validation accuracy (a tie: the shorter estimate);
it is adopted if it beats the baseline's mean by at least ``--gain`` points (it is the baseline
otherwise). Nothing here reads a test figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from stn_gtsrb.runs import read_log

FULL_TRAINING_SET = 39_209  # images


def lever_name(lever: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(lever.items())) or "baseline"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--budget", type=float, required=True, help="seconds of estimated training at most")
    parser.add_argument("--gain", type=float, default=0.10, help="points over the baseline to adopt a lever")
    args = parser.parse_args()
    levers = json.loads((args.results / "grid.json").read_text())["axes"]["lever"]
    cells: dict[str, list[dict]] = {lever_name(lever): [] for lever in levers}
    for path in sorted(args.results.glob("runs/*/result.json")):
        result = json.loads(path.read_text())
        config = result["config"]
        lever = max((lv for lv in levers if all(config.get(k) == v for k, v in lv.items())), key=len)  # most specific
        cells[lever_name(lever)].append({"split": config["val_seed"], "val": result["val_acc"],
                                         "epochs": config["epochs"],
                                         "speeds": [r["images_per_s"] for r in read_log(path.parent)]})
    rows = []
    for name, runs in cells.items():
        if len(runs) < 2:
            continue
        speed = statistics.mean(s for run in runs for s in run["speeds"])
        rows.append({"name": name, "runs": sorted(runs, key=lambda r: r["split"]), "speed": speed,
                     "val": statistics.mean(run["val"] for run in runs),
                     "estimate": runs[0]["epochs"] * FULL_TRAINING_SET / speed})
    print("| cell | val acc per split | mean val acc | images/s | estimated training s (full set) | eligible |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        splits = ", ".join(f"{run['val']:.2f}" for run in row["runs"])
        print(f"| {row['name']} | {splits} | {row['val']:.2f} | {row['speed']:.0f} | {row['estimate']:.1f} "
              f"| {'yes' if row['estimate'] <= args.budget else 'no'} |")
    eligible = [row for row in rows if row["estimate"] <= args.budget]
    baseline = next(row for row in rows if row["name"] == "baseline")
    winner = max(eligible, key=lambda row: (row["val"], -row["estimate"]))
    adopted = winner if winner["val"] >= baseline["val"] + args.gain else baseline
    print(f"\nbest eligible: {winner['name']}: mean val {winner['val']:.2f}% (baseline {baseline['val']:.2f}%), "
          f"estimated {winner['estimate']:.1f} s; adopted: {adopted['name']}")


if __name__ == "__main__":
    main()

"""A speed-run's seeds beside the `fast` time reference of the same log: accuracy, training seconds, ratio.

    python benchmarks/speed_report.py benchmarks/results/minute-full-seeds \\
        > benchmarks/results/minute-full-seeds/speed_report.log

Reads every finished run's ``result.json`` under RESULTS_DIR. A run is the reference if its widths are the
`fast` recipe's (``REFERENCE_WIDTHS``); the others are the recipe measured. Per run: seed, test accuracy,
training seconds (the training steps alone), images/s, precision and the device its result names. Then per
group the mean ± sample standard deviation of test accuracy, the range of training seconds, and the mean
training seconds as a fraction of the reference's, which scales the figure to another CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

REFERENCE_WIDTHS = "32,64,128,128"  # the `fast` recipe's net when these grids ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    results = [json.loads(path.read_text()) for path in sorted(args.results.glob("runs/*/result.json"))]
    fast = REFERENCE_WIDTHS
    groups = {"recipe": [r for r in results if r["config"]["cnn"] != fast],
              "fast (reference)": [r for r in results if r["config"]["cnn"] == fast]}
    print("| group | seed | test acc (%) | training s | images/s | precision | device |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, runs in groups.items():
        for r in sorted(runs, key=lambda r: r["config"]["seed"]):
            print(f"| {name} | {r['config']['seed']} | {r['test_acc']:.2f} | {r['train_seconds']:.1f} "
                  f"| {r['images_per_s']:.0f} | {r['precision']} | {r['device']} |")
    reference = statistics.mean(r["train_seconds"] for r in groups["fast (reference)"])
    print()
    for name, runs in groups.items():
        accuracies, seconds = [r["test_acc"] for r in runs], [r["train_seconds"] for r in runs]
        spread = f" ± {statistics.stdev(accuracies):.2f}" if len(runs) > 1 else ""
        print(f"{name}: {len(runs)} run(s), test {statistics.mean(accuracies):.2f}{spread}%, training "
              f"{min(seconds):.1f} to {max(seconds):.1f} s, {statistics.mean(seconds) / reference:.3f} of fast's")


if __name__ == "__main__":
    main()

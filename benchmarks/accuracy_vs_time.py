"""Test accuracy against training wall time, from committed run logs: the picture in the README.

    python benchmarks/accuracy_vs_time.py -o docs/accuracy-vs-time.png \\
        fast=benchmarks/results/fast-recipe-st-box/runs/561b1a0b94f9 \\
        accurate=benchmarks/results/bn48-32px-full-wider/runs/d6fa613c1e8e \\
        accurate-64=benchmarks/results/bn48-32px-full-wide-blur/runs/dd75e7c0c12c \\
        accurate-48=benchmarks/results/bn48-32px-full/runs/58b0a500bf24 \\
        regularised=benchmarks/results/idsia-32px-regularised/runs/96ef501f4169 \\
        paper=benchmarks/results/idsia-32px-original/runs/97fc12238373

Each ``LABEL=RUN_DIR`` is drawn from ``RUN_DIR/log.jsonl``: after each epoch, the
cumulative logged seconds (training plus per-epoch evaluation) against the test
accuracy. Needs matplotlib (the viz extra).
"""

from __future__ import annotations

import argparse
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stn_gtsrb.fileio import atomic_write  # noqa: E402
from stn_gtsrb.runs import read_log  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for spec in args.runs:
        label, run_dir = spec.split("=", 1)
        log = read_log(run_dir)
        minutes = [m / 60 for m in itertools.accumulate(r["seconds"] for r in log)]
        axis.plot(minutes, [r["test_acc"] for r in log], marker="o", markersize=3,
                  label=f"{label}: {log[-1]['test_acc']:.2f}% after {minutes[-1]:.0f} min")
        print(f"{label}: {len(log)} epochs, {minutes[-1]:.1f} min, final test accuracy {log[-1]['test_acc']:.2f}%")
    axis.set(xscale="log", xlabel="training wall time, minutes (log scale; 2 CPU cores)",
             ylabel="test accuracy (%)", ylim=(97, 100), title="GTSRB test accuracy against training time")
    axis.axhline(99.0, color="grey", linewidth=0.8, linestyle="--")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    print(f"wrote {atomic_write(args.output, lambda temp: figure.savefig(temp, format='png', dpi=100))}")


if __name__ == "__main__":
    main()

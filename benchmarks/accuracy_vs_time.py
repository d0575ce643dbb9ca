"""Accuracy against training wall time, from committed run logs: the pictures in docs/results.md and docs/speed.md.

    python benchmarks/accuracy_vs_time.py -o docs/accuracy-vs-time.png \\
        fast=benchmarks/results/fast-full-seeds/runs/561b1a0b94f9 \\
        accurate=benchmarks/results/accurate-96-full-seeds/runs/d6fa613c1e8e \\
        accurate-64=benchmarks/archive/results/accurate-64-blur-full-seeds/runs/dd75e7c0c12c \\
        accurate-48=benchmarks/archive/results/accurate-48-full/runs/58b0a500bf24 \\
        regularised=benchmarks/results/regularised-idsia/runs/96ef501f4169 \\
        paper=benchmarks/results/original-idsia-legacy-norm/runs/97fc12238373
    python benchmarks/accuracy_vs_time.py --training-seconds --ylim 95 -o docs/speed-curves.png \\
        minute=benchmarks/results/speed-curves/runs/d188a57dceff \\
        minute=benchmarks/results/speed-curves/runs/5dbd6c88852e \\
        fast=benchmarks/results/speed-curves/runs/26ca8a31c053 \\
        fast=benchmarks/results/speed-curves/runs/a9ba6313aca2 \\
        accurate=benchmarks/results/speed-curves/runs/c96a606e6bd0 \\
        accurate=benchmarks/results/speed-curves/runs/bea77488036c

Each ``LABEL=RUN_DIR`` is drawn from ``RUN_DIR/log.jsonl``: after each epoch, the cumulative logged
seconds (training plus per-epoch evaluation; with ``--training-seconds`` the training steps alone)
against the accuracy logged then: test accuracy (solid line) where the run scored the test set that
epoch, validation accuracy (dashed) for a run trained with ``--val``. Runs under one label share a colour.
Each line of the log names the run's device where its ``result.json`` records one.
Needs matplotlib (the viz extra).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stn_gtsrb.fileio import atomic_write  # noqa: E402
from stn_gtsrb.runs import read_log, read_result  # noqa: E402

CURVES = {"test_acc": ("test", "-"), "val_acc": ("validation", "--")}  # logged key -> (name, line style)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--training-seconds", action="store_true",
                        help="count the training steps alone, not the evaluation after each epoch")
    parser.add_argument("--ylim", type=float, default=97, help="lowest accuracy shown (default: 97)")
    args = parser.parse_args()
    clock = "train_seconds" if args.training_seconds else "seconds"
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = {}
    for spec in args.runs:
        label, run_dir = spec.split("=", 1)
        colour = colours.setdefault(label, f"C{len(colours)}")
        log = read_log(run_dir)
        elapsed = list(itertools.accumulate(r[clock] for r in log))
        for key, (name, style) in CURVES.items():
            points = [(s, r[key]) for s, r in zip(elapsed, log, strict=True) if r.get(key) is not None]
            if not points:
                continue
            seconds, accuracy = zip(*points, strict=True)
            axis.plot(seconds, accuracy, style, color=colour, marker="o", markersize=3,
                      label=f"{label}, {name}: {accuracy[-1]:.2f}% after {seconds[-1]:.0f} s")
            device = (read_result(Path(run_dir)) or {}).get("device")
            print(f"{label} ({run_dir}): {name} after {len(points)} of {len(log)} epochs; final {accuracy[-1]:.2f}% "
                  f"after {seconds[-1]:.1f} s ({clock})" + (f" on {device}" if device else ""))
    what = "training steps alone" if args.training_seconds else "training plus evaluation"
    axis.set(xscale="log", xlabel=f"wall time, seconds ({what}; log scale; 2 CPU cores)",
             ylabel="accuracy (%)", ylim=(args.ylim, 100), title="GTSRB accuracy against training time")
    axis.axhline(99.0, color="grey", linewidth=0.8, linestyle=":")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    print(f"wrote {atomic_write(args.output, lambda temp: figure.savefig(temp, format='png', dpi=100))}")


if __name__ == "__main__":
    main()

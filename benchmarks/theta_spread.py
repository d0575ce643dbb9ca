"""Whether each transformer of saved models still works: the spread of its θ over unjittered training images,
and the fraction of each of its loc-net's activation layers whose units never fire on them.

    python benchmarks/theta_spread.py pretrained \\
        benchmarks/results/accurate-robust-val-passes/runs/0b995fd1ac09 \\
        benchmarks/results/accurate-robust-val-jitter/runs/24aed9a8c4a4 > benchmarks/theta_spread.log

The same figure training logs after each epoch (``theta_spread`` in log.jsonl, evaluation.py): per
transformer, the standard deviation of its θ over the first 256 training images, averaged over θ's
entries. 0 means its localisation net gives every image the same map. Then, per activation layer of that
loc-net (conv1, conv2, fc), the fraction of units that output nothing above 0 for any of those images: a
ReLU unit that never fires passes no gradient (evaluation.silent_units). Reads no test image.
"""

from __future__ import annotations

import argparse

from stn_gtsrb.data import load_tensors
from stn_gtsrb.evaluation import PROBE_IMAGES, silent_units, stopped_transformers, theta_spread
from stn_gtsrb.predictor import load_predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="run directories, checkpoints, or pretrained")
    args = parser.parse_args()
    for source in args.models:
        predictor = load_predictor(source)
        network, normalizer = predictor.torch_model("theta_spread")
        images = load_tensors(predictor.image_size)["train"].images[:PROBE_IMAGES]  # the model's own size
        spread = theta_spread(network, normalizer(images))
        silent = silent_units(network, normalizer(images))
        stopped = stopped_transformers(spread)
        print(f"{source}: " + ", ".join(f"before block {p}: {s:.4f} (units never firing per loc-net layer: "
                                        + " ".join(f"{f:.2f}" for f in silent[p]) + ")" for p, s in spread.items())
              + (f"; stopped: {', '.join(stopped)}" if stopped else ""))


if __name__ == "__main__":
    main()

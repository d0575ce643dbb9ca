"""Whether each transformer of saved models still works: the spread of its θ over unjittered training images.

    python benchmarks/theta_spread.py pretrained \\
        benchmarks/results/accurate-robust-val-passes/runs/0b995fd1ac09 \\
        benchmarks/results/accurate-robust-val-jitter/runs/24aed9a8c4a4 > benchmarks/theta_spread.log

The same figure training logs after each epoch (``theta_spread`` in log.jsonl, evaluation.py): per
transformer, the standard deviation of its θ over the first 256 training images, averaged over θ's
entries. 0 means its localisation net gives every image the same map. Reads no test image.
"""

from __future__ import annotations

import argparse

from stn_gtsrb.data import load_tensors
from stn_gtsrb.evaluation import PROBE_IMAGES, stopped_transformers, theta_spread
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
        stopped = stopped_transformers(spread)
        print(f"{source}: " + ", ".join(f"before block {p}: {s:.4f}" for p, s in spread.items())
              + (f"; stopped: {', '.join(stopped)}" if stopped else ""))


if __name__ == "__main__":
    main()

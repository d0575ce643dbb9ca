"""Seconds per epoch of the paper configuration (``--recipe paper``) on a GPU, through the real trainer.

    python benchmarks/gpu_epoch.py --source DIR --epochs 14 | tee benchmarks/gpu_epoch.log

Trains the recipe for ``--epochs`` epochs in a temporary run directory with
``--precision auto`` (bf16 on a GPU that supports it), channels-last and,
with ``--compile``, torch.compile, and prints each epoch's log line and the
total training seconds (per-epoch evaluation included). Runs on any device;
the figures that matter are from a GPU.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from stn_gtsrb import TrainConfig, train
from stn_gtsrb.recipes import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    cfg = TrainConfig.from_dict({**load_recipe("paper"), "epochs": args.epochs, "batch_size": args.batch_size})
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, {name}; paper recipe, {args.epochs} epochs, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(cfg, run_dir, device=args.device, compile=args.compile, data_dir=args.data_dir,
                       source=args.source, progress=False)
    print(f"total {result['seconds']:.1f} s for {args.epochs} epochs ({result['seconds'] / args.epochs:.1f} s/epoch), "
          f"final test accuracy {result['test_acc']:.2f}%, precision {result['precision']}")


if __name__ == "__main__":
    main()

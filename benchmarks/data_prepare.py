"""Benchmark the data layer: first ``prepare`` from the archives, then cached loads.

    python benchmarks/data_prepare.py --source DIR --size 32 | tee benchmarks/data_prepare.log

Targets: first prepare <= 30 s, cached load <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from stn_gtsrb import DataLocation, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="folder or URL with the three archives")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--loads", type=int, default=5, help="number of timed cached loads")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads")
    with tempfile.TemporaryDirectory() as data_dir:
        start = time.perf_counter()
        location = DataLocation.resolve(data_dir, args.source)
        path = data.prepare(args.size, location, show_progress=False)
        first = time.perf_counter() - start
        print(f"first prepare (size {args.size}): {first:.2f} s -> {os.path.getsize(path) / 2**20:.0f} MiB cache")
        loads = []
        for _ in range(args.loads):
            start = time.perf_counter()
            official = data.load_tensors(args.size, location)
            loads.append(time.perf_counter() - start)
        print(f"cached load: median {statistics.median(loads):.3f} s, max {max(loads):.3f} s "
              f"over {args.loads} loads ({len(official['train'])} train + {len(official['test'])} test images)")


if __name__ == "__main__":
    main()

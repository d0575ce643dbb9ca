"""Make the weights shipped with the package from a finished run, and measure them.

    python benchmarks/pretrained.py RUN_DIR | tee benchmarks/pretrained.log

Exports the run's final checkpoint (``last.pt``) as float16 safetensors into
``src/stn_gtsrb/pretrained/``, evaluates that file on the whole test set, and
writes beside it a JSON record of the measured accuracy, the run it came from
and the commands that reproduce it (the README quotes that record).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stn_gtsrb import evaluate, export
from stn_gtsrb.checkpoints import DEFAULT_PRETRAINED, LAST, PRETRAINED, PRETRAINED_DIR, SUFFIX
from stn_gtsrb.fileio import write_text
from stn_gtsrb.runs import read_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished run directory")
    parser.add_argument("--name", default=DEFAULT_PRETRAINED,
                        help=f"which pretrained model's file to make (default: {DEFAULT_PRETRAINED})")
    args = parser.parse_args()
    target = PRETRAINED_DIR / f"{PRETRAINED[args.name]}{SUFFIX}"
    path = export(args.run / LAST, target, half=True, overwrite=True)
    print(f"exported {args.run / LAST} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    start = time.perf_counter()
    result = evaluate(path, "test", device="cpu")
    logged = read_log(args.run)[-1]["test_acc"]
    print(f"test accuracy of the shipped file: {result['accuracy']:.4f}% ({result['correct']}/{result['total']}), "
          f"{time.perf_counter() - start:.0f} s; the run logged {logged:.4f}% in float32")
    record = {"test_acc": result["accuracy"], "correct": result["correct"], "total": result["total"],
              "epoch": result["epoch"], "run": str(args.run), "float32_test_acc": logged,
              "config": json.loads((args.run / "config.json").read_text()),
              "reproduce": f"python benchmarks/pretrained.py {args.run} --name {args.name}; "
                           f"stn-gtsrb eval --pretrained {args.name}"}
    written = write_text(path.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    print(f"wrote {written}")


if __name__ == "__main__":
    main()

"""Seeds of the same recipe side by side: each cell's test accuracy per seed, its mean ± std, and each
other cell's paired margin against the first (the same seed's difference).

    python benchmarks/seeds_report.py benchmarks/results/accurate-96-full-seeds \\
        benchmarks/results/accurate-96-full-ablation benchmarks/results/accurate-96-full-seeds-3-5 \\
        > benchmarks/results/accurate-96-full-seeds-3-5/seeds_report.log

Reads every finished run (``runs/*/result.json``) under the given results folders. A cell is a config
without its seed (configs saved under older option names compare as they load); cells are listed in
the order the folders first show them, and labelled by the options in which they differ. Unfinished
runs are not counted; the lines name the seeds each cell has.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from stn_gtsrb.config import TrainConfig


def finished_runs(folders: list[Path]) -> list[tuple[dict, dict]]:
    """(config as it loads, result) of every finished run, in folder then run order."""
    runs = []
    for folder in folders:
        for path in sorted(folder.glob("runs/*/result.json")):
            result = json.loads(path.read_text())
            if result.get("test_acc") is not None:
                runs.append((TrainConfig.from_saved(result["config"]).to_dict(), result))
    return runs


def spread(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, metavar="RESULTS_DIR")
    args = parser.parse_args()
    cells: dict[str, dict[int, dict]] = {}  # cell key -> seed -> result
    configs: dict[str, dict] = {}
    for config, result in finished_runs(args.folders):
        key = json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)
        configs.setdefault(key, config)
        cells.setdefault(key, {})[config["seed"]] = result
    differing = [k for k in TrainConfig().to_dict()
                 if k != "seed" and len({json.dumps(c[k]) for c in configs.values()}) > 1]
    labels = {key: " ".join(f"{k}={json.dumps(configs[key][k])}" for k in differing) or "(all)" for key in cells}
    print(f"finished runs under: {', '.join(str(f) for f in args.folders)}")
    for key, seeds in cells.items():
        accs = [seeds[s]["test_acc"] for s in sorted(seeds)]
        print(f"\n{labels[key]}: {spread(accs)} over {len(accs)} seed(s)")
        for seed in sorted(seeds):
            r = seeds[seed]
            print(f"  seed {seed}: {r['test_acc']:.4f}%  ({r['epochs']} epochs, {r['seconds']:.0f} s, "
                  f"{r['precision']})")
    first, *others = cells
    for key in others:
        common = sorted(set(cells[first]) & set(cells[key]))
        if not common:
            continue
        margins = [cells[first][s]["test_acc"] - cells[key][s]["test_acc"] for s in common]
        print(f"\nmargin of {labels[first]} over {labels[key]}, paired by seed ({len(common)} seed(s)):")
        for seed, margin in zip(common, margins, strict=True):
            print(f"  seed {seed}: {margin:+.4f} points")
        std = statistics.stdev(margins) if len(margins) > 1 else 0.0
        print(f"  mean {statistics.mean(margins):+.2f} ± {std:.2f} points")


if __name__ == "__main__":
    main()

"""The `robust` recipe's seeds on test, with and without its transformer, against the robust targets.

    python benchmarks/robust_seeds.py benchmarks/results/robust-full-seeds \\
        benchmarks/results/robust-full-seeds-robustness > benchmarks/results/robust-full-seeds/robust_seeds.log

Reads every finished run (``runs/*/result.json``: clean test accuracy after its final epoch) under
RESULTS_DIR, and every ``robustness.json`` under ROBUSTNESS_DIR (the test images, at least the target
levels), whose models are matched to runs by their run directory's name. Per arm (with the
transformer, without: ``locnet2`` empty) it prints each seed's figure at every target, then the mean ±
sample standard deviation over the seeds it has, and whether seed 1 and the mean reach each target. The
mirror column counts images taken for their mirror image (keep left for keep right and the like) at 45°
of rotation. A seed whose robustness report is missing has its clean figure only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from stn_gtsrb.config import TrainConfig

# The targets, on test (percent, except the straightening slope): (transform, level) -> at least this.
TARGETS = {("clean", None): 99.55, ("rotation", 30.0): 99.0, ("rotation", 45.0): 95.0, ("shift", 0.25): 98.5,
           ("scale", 0.6): 97.0, ("tilt", 60.0): 92.0, ("combined", 0.6): 97.0, ("combined", 0.8): 90.0,
           ("slope", None): 0.8}
MIRROR_AT = ("rotation", 45.0)  # the level whose mirror-image errors are listed


def label(target: tuple[str, float | None]) -> str:
    transform, level = target
    return transform if level is None else f"{transform} {level:g}"


def figures(result: dict, report: dict | None, model: str | None) -> dict:
    """target label -> figure of one run (clean from its result, the rest from its robustness report),
    and "mirror" -> its mirror-image errors at MIRROR_AT."""
    out = {"clean": result["test_acc"]}
    if report is None:
        return out
    rows = {(r["transform"], r["level"]): r for r in report["robustness"] if r["model"] == model}
    for target in TARGETS:
        if target in rows:
            out[label(target)] = rows[target]["accuracy"]
    slopes = [m["slope"] for m in report.get("straightening", {}).get("models", []) if m["model"] == model]
    if slopes:
        out["slope"] = slopes[0]
    if MIRROR_AT in rows:
        out["mirror"] = rows[MIRROR_AT].get("mirror_errors")
    return out


def reports(robustness: Path) -> dict[str, tuple[dict, str]]:
    """Run directory name -> (the robustness.json that scored it, its model's name there), from every
    robustness.json under ``robustness``."""
    found = {}
    for path in sorted(robustness.rglob("robustness.json")):
        report = json.loads(path.read_text())
        found.update({Path(m["source"]).name: (report, m["name"]) for m in report["models"]})
    return found


def load(results: Path, robustness: Path) -> dict[str, dict[int, dict]]:
    """arm ("transformer", "none") -> seed -> figures, for every finished run."""
    scored = reports(robustness)
    arms: dict[str, dict[int, dict]] = {}
    for path in sorted(results.glob("runs/*/result.json")):
        result = json.loads(path.read_text())
        if result.get("test_acc") is None:
            continue
        cfg = TrainConfig.from_saved(result["config"])
        report, model = scored.get(path.parent.name, (None, None))
        arm = "transformer" if cfg.transformers else "none"
        arms.setdefault(arm, {})[cfg.seed] = figures(result, report, model)
    return arms


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def formatted(column: str, value) -> str:
    """A table cell: a slope to 3 decimals, a count as it is, a percentage to 2 decimals, nothing if missing."""
    if value is None:
        return ""
    return f"{value:.3f}" if column == "slope" else f"{value}" if column == "mirror" else f"{value:.2f}"


def table(seeds: dict[int, dict]) -> list[str]:
    columns = [label(target) for target in TARGETS] + ["mirror"]
    lines = ["| seed | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 1) + "|"]
    for seed in sorted(seeds):
        lines.append(f"| {seed} | " + " | ".join(formatted(c, seeds[seed].get(c)) for c in columns) + " |")
    means = []
    for column in columns:
        values = [s[column] for s in seeds.values() if s.get(column) is not None]
        means.append(mean_std(values) + f" ({len(values)})" if values else "")
    lines.append("| mean ± std (seeds) | " + " | ".join(means) + " |")
    return lines


def verdicts(seeds: dict[int, dict]) -> list[str]:
    lines = []
    for target, goal in TARGETS.items():
        name = label(target)
        values = [s[name] for s in seeds.values() if s.get(name) is not None]
        if not values:
            continue
        one = seeds.get(1, {}).get(name)
        mean = statistics.mean(values)
        said = [f"seed 1 {one:.3f} {'reaches' if one >= goal else 'misses'}" if one is not None else "no seed 1",
                f"the mean of {len(values)} {mean:.3f} {'reaches' if mean >= goal else 'misses'}"]
        lines.append(f"{name} ≥ {goal:g}: " + ", ".join(said))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("robustness", type=Path)
    args = parser.parse_args()
    arms = load(args.results, args.robustness)
    if not arms:
        print(f"robust_seeds.py: error: no finished runs under {args.results}", file=sys.stderr)
        sys.exit(2)
    for arm in ("transformer", "none"):
        if arm not in arms:
            continue
        print(f"\n{'with the transformer' if arm == 'transformer' else 'without a transformer'} "
              f"(seeds {', '.join(map(str, sorted(arms[arm])))}):\n")
        print("\n".join(table(arms[arm])))
        print("\n" + "\n".join(verdicts(arms[arm])))
    if "transformer" in arms and "none" in arms:
        common = sorted(set(arms["transformer"]) & set(arms["none"]))
        print(f"\nwhat the transformer adds, paired by seed ({len(common)} seed(s)), points:")
        for target in TARGETS:
            name = label(target)
            pairs = [arms["transformer"][s][name] - arms["none"][s][name] for s in common
                     if arms["transformer"][s].get(name) is not None and arms["none"][s].get(name) is not None]
            if pairs and name != "slope":
                print(f"  {name}: {mean_std(pairs)} ({len(pairs)})")


if __name__ == "__main__":
    main()

"""The transform families compared on validation, and the decision rule of
``benchmarks/grids/fast-transform-families-val.toml`` applied to them.

    python benchmarks/families_report.py benchmarks/results/fast-transform-families-val \\
        benchmarks/results/fast-transform-families-val-robustness \\
        --figure docs/transform-families.png > benchmarks/results/fast-transform-families-val/families_report.log

Reads each finished run's ``result.json`` under RESULTS_DIR (its final-epoch validation accuracy) and,
per split, ``ROBUSTNESS_DIR/val-seed-<N>/robustness.json``, whose models are matched to runs by their
run directory's name. A run's family is its ``--transform``, or ``none`` when it has no transformer.
The tilt score is the mean accuracy over the tilt levels 10-60 degrees. For reporting only, each
distortion's score (the mean accuracy over its distorted levels) and the share of the held-out tracks
given one class throughout. Nothing here reads a test figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stn_gtsrb.config import TrainConfig  # noqa: E402
from stn_gtsrb.robustness_report import distortion_scores  # noqa: E402

FAMILIES = ("affine", "projective", "tps", "none")
CHALLENGERS = ("projective", "tps")
TILT_SCORED = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0)
CLEAN_MARGIN = 0.10  # points of mean clean validation accuracy, rule (a); also the most rule (b) may lose
TILT_MARGIN = 1.0  # points of mean tilt score, rule (b)


def family(cfg: TrainConfig) -> str:
    return cfg.transform if any(cfg.transformers.values()) else "none"


def load_runs(results: Path) -> dict[tuple[int, str], dict]:
    """(val seed, family) -> {"id", "clean"} of every finished validation run."""
    runs = {}
    for path in sorted(results.glob("runs/*/result.json")):
        result = json.loads(path.read_text())
        if result.get("val_acc") is None:
            continue
        cfg = TrainConfig.from_saved(result["config"])
        runs[cfg.val_seed, family(cfg)] = {"id": path.parent.name, "clean": result["val_acc"]}
    return runs


def add_robustness(runs: dict[tuple[int, str], dict], robustness: Path) -> None:
    """Add each run's tilt curve (level -> accuracy), tilt score, every distortion's score and its
    track stability (tracks given one class, %) from its split's robustness.json."""
    for (split, _), run in runs.items():
        path = robustness / f"val-seed-{split}" / "robustness.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        names = {Path(m["source"]).name: m["name"] for m in report["models"]}
        if run["id"] not in names:
            continue
        model = names[run["id"]]
        rows = [row for row in report["robustness"] if row["model"] == model]
        curve = {row["level"]: row["accuracy"] for row in rows if row["transform"] == "tilt"}
        run["tilt_curve"] = curve
        run["tilt"] = statistics.mean(curve[level] for level in TILT_SCORED)
        run["scores"] = distortion_scores(report, model)
        run["one_class"] = next((m["one_prediction"] for m in report.get("stability", {}).get("models", [])
                                 if m["model"] == model), None)


def mean(values: list[float]) -> float:
    return statistics.mean(values)


def beats_affine(runs: dict, splits: list[int], challenger: str) -> tuple[bool, str]:
    """The registered rule: (a) clean accuracy, or (b) tilt without losing clean accuracy."""
    clean = [runs[s, challenger]["clean"] - runs[s, "affine"]["clean"] for s in splits]
    rule_a = mean(clean) >= CLEAN_MARGIN and sum(d > 0 for d in clean) >= 2
    why = f"clean {mean(clean):+.2f} points on average, higher on {sum(d > 0 for d in clean)} of {len(splits)}"
    if all("tilt" in runs[s, f] for s in splits for f in (challenger, "affine")):
        tilt = [runs[s, challenger]["tilt"] - runs[s, "affine"]["tilt"] for s in splits]
        rule_b = all(d > 0 for d in tilt) and mean(tilt) >= TILT_MARGIN and mean(clean) >= -CLEAN_MARGIN
        why += f"; tilt {mean(tilt):+.2f} points on average, higher on {sum(d > 0 for d in tilt)} of {len(splits)}"
    else:
        rule_b = False
        why += "; tilt not measured"
    return rule_a or rule_b, why


def figure(runs: dict, splits: list[int], path: Path) -> None:
    """Tilt accuracy against the angle, each family's mean over the splits."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in FAMILIES:
        curves = [runs[s, name]["tilt_curve"] for s in splits if "tilt_curve" in runs.get((s, name), {})]
        if not curves:
            continue
        levels = sorted(curves[0])
        ax.plot(levels, [mean([c[level] for c in curves]) for level in levels], marker="o", label=name)
    ax.set_xlabel("tilt, degrees off-axis")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"The fast recipe's transformer families under tilt ({len(splits)} splits)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, metavar="RESULTS_DIR")
    parser.add_argument("robustness", type=Path, metavar="ROBUSTNESS_DIR")
    parser.add_argument("--figure", type=Path, help="write the tilt curves here (PNG)")
    args = parser.parse_args()
    runs = load_runs(args.results)
    add_robustness(runs, args.robustness)
    splits = sorted({s for s, f in runs if all((s, g) in runs for g in FAMILIES)})
    print(f"finished runs under {args.results}; splits with all four families: {splits or 'none'}")
    print("\n| val seed | family | run | clean val acc (%) | tilt score (%) |\n| --- | --- | --- | --- | --- |")
    for (split, name), run in sorted(runs.items(), key=lambda item: (item[0][0], FAMILIES.index(item[0][1]))):
        tilt = f"{run['tilt']:.2f}" if "tilt" in run else "-"
        print(f"| {split} | {name} | {run['id']} | {run['clean']:.2f} | {tilt} |")
    if not splits:
        return
    print("\n| family | mean clean (%) | mean tilt (%) | clean minus none | tilt minus none |")
    print("| --- | --- | --- | --- | --- |")
    for name in FAMILIES:
        clean = mean([runs[s, name]["clean"] for s in splits])
        control = mean([runs[s, name]["clean"] - runs[s, "none"]["clean"] for s in splits])
        tilted = [runs[s, name]["tilt"] for s in splits if "tilt" in runs[s, name]]
        tilt_text = f"{mean(tilted):.2f}" if len(tilted) == len(splits) else "-"
        gains = [runs[s, name]["tilt"] - runs[s, "none"]["tilt"] for s in splits
                 if "tilt" in runs[s, name] and "tilt" in runs[s, "none"]]
        gain_text = f"{mean(gains):+.2f}" if len(gains) == len(splits) else "-"
        print(f"| {name} | {clean:.2f} | {tilt_text} | {control:+.2f} | {gain_text} |")
    distortions = [name for name in runs[splits[0], "affine"].get("scores", {})
                   if all(name in runs[s, f].get("scores", {}) for s in splits for f in FAMILIES)]
    if distortions:
        print("\nfor reporting: each distortion's mean accuracy over its distorted levels and the splits (%),"
              " minus the net without a transformer; tracks given one class throughout (%)")
        print(f"| family | {' | '.join(distortions)} | one class |")
        print("| --- |" + " --- |" * (len(distortions) + 1))
        for name in FAMILIES:
            cells = []
            for distortion in distortions:
                score = mean([runs[s, name]["scores"][distortion] for s in splits])
                gain = mean([runs[s, name]["scores"][distortion] - runs[s, "none"]["scores"][distortion]
                             for s in splits])
                cells.append(f"{score:.2f} ({gain:+.2f})")
            stable = [runs[s, name]["one_class"] for s in splits if runs[s, name].get("one_class") is not None]
            cells.append(f"{mean(stable):.1f}" if len(stable) == len(splits) else "-")
            print(f"| {name} | {' | '.join(cells)} |")
    print("\ndecision rule:")
    winners = []
    for challenger in CHALLENGERS:
        wins, why = beats_affine(runs, splits, challenger)
        print(f"  {challenger} {'beats' if wins else 'does not beat'} affine: {why}")
        winners += [challenger] if wins else []
    if winners:
        best = max(winners, key=lambda name: mean([runs[s, name]["clean"] for s in splits]))
        print(f"  winner: {best}; it goes on to the accurate recipe against affine")
    else:
        print("  no family beats affine: affine stays and no accurate run follows")
    if args.figure:
        figure(runs, splits, args.figure)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()

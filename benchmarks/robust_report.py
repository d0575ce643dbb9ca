"""The robust grid on validation, and the decision rule of ``benchmarks/grids/fast-robust-val.toml`` applied.

    python benchmarks/robust_report.py benchmarks/results/fast-robust-val \\
        benchmarks/results/fast-robust-val-robustness \\
        --reference benchmarks/results/fast-transform-families-val \\
                    benchmarks/results/fast-transform-families-val-robustness \\
        > benchmarks/results/fast-robust-val/robust_report.log
    python benchmarks/robust_report.py benchmarks/results/fast-robust-val \\
        benchmarks/results/fast-robust-val-robustness \\
        --levers benchmarks/results/fast-robust-val-levers benchmarks/results/fast-robust-val-levers-robustness \\
        > benchmarks/results/fast-robust-val-levers/robust_report.log
    python benchmarks/robust_report.py benchmarks/results/fast-robust-val \\
        benchmarks/results/fast-robust-val-robustness --straightening \\
        --levers benchmarks/results/fast-robust-val-straighten \\
                 benchmarks/results/fast-robust-val-straighten-robustness \\
        > benchmarks/results/fast-robust-val-straighten/robust_report.log
    python benchmarks/robust_report.py benchmarks/results/fast-robust-val-graded \\
        benchmarks/results/fast-robust-val-graded-robustness \\
        --against conv2-passes2-content-scale --min-clean-gain 0.5 --max-score-loss 0.5 \\
        > benchmarks/results/fast-robust-val-graded/robust_report.log
    python benchmarks/robust_report.py benchmarks/results/fast-robust-val-leaky \\
        benchmarks/results/fast-robust-val-leaky-robustness \\
        --against conv2-passes2-content-scale --min-clean-gain -0.3 --max-score-loss 0.5 \\
        > benchmarks/results/fast-robust-val-leaky/robust_report.log
    python benchmarks/robust_report.py benchmarks/results/fast-robust-val-straighten-graded \\
        benchmarks/results/fast-robust-val-straighten-graded-robustness \\
        --against conv2-passes2-content-scale-graded-leaky --min-clean-gain 0.2 --max-score-loss 0.5 \\
        > benchmarks/results/fast-robust-val-straighten-graded/robust_report.log
    python benchmarks/robust_report.py benchmarks/results/fast-robust-val-calm \\
        benchmarks/results/fast-robust-val-calm-robustness \\
        --against conv2-passes2-content-scale-graded-leaky --min-clean-gain 0.2 --max-score-loss 0.5 \\
        > benchmarks/results/fast-robust-val-calm/robust_report.log

Reads each finished run's ``result.json`` under RESULTS_DIR (its final-epoch validation accuracy) and, per
split, ``ROBUSTNESS_DIR/val-seed-<N>/robustness.json``, whose models are matched to runs by their run
directory's name. The robustness score is the mean of five distortion means: rotation 0-45°, scale
0.6-1.4, shift 0-0.25, tilt 0-60° and combined 0-0.8, each the mean accuracy over its levels in that
range. ``--against CELL`` judges every other cell of RESULTS_DIR against CELL by a grid's two margins (the
graded and leaky grids' rules). ``--reference`` adds, for reading only, the `fast` recipe's affine runs of
another grid on the same splits (its own, narrower jitter). The θ spread is each run's final-epoch
``theta_spread`` (log.jsonl; 0: its transformer gives every image the same map), where it was logged.
Nothing here reads a test figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from stn_gtsrb.config import TrainConfig
from stn_gtsrb.runs import read_log

RANGES = {"rotation": (0, 45), "scale": (0.6, 1.4), "shift": (0, 0.25), "tilt": (0, 60), "combined": (0, 0.8)}
TRANSFORMER_CELLS = ("conv2", "image", "image-rst")
CLEAN_MARGIN = 0.30  # points of mean clean accuracy a winner may lose to the best transformer cell
FINALIST_MARGIN = 1.0  # points of robustness score within which another cell is a finalist too
LEVER_GAIN = 0.5  # points of robustness score a lever must add to the finalist (fast-robust-val-levers.toml)
SLOPE_ADOPT = 0.5  # mean straightening slope that adopts a lever at equal robustness (--straightening)


def cell(cfg: TrainConfig) -> str:
    """Where the transformer sits (image, conv2, none), then what differs from fast-robust-val's cells:
    ``-rst`` for rotation + scale + translation, ``-lrX`` for a loc-net lr multiplier other than 0.1,
    ``-Nep`` for other than 4 epochs, ``-straightenW`` for a straightening term, ``-passesK`` for a repeated
    transformer, ``-content-scale`` for the content's scale jitter, ``-graded`` for a graded jitter, ``-calmN``
    for N calm epochs, ``-leaky`` for leaky loc-nets."""
    name = "image" if cfg.st else "conv2" if cfg.locnet2 else "none"
    name += "-rst" if cfg.rot else ""
    name += f"-lr{cfg.locnet_lr_mult:g}" if cfg.locnet_lr_mult != 0.1 else ""
    name += f"-straighten{cfg.straighten:g}" if cfg.straighten else ""
    name += f"-passes{cfg.passes}" if cfg.passes > 1 else ""
    name += "-content-scale" if cfg.jitter_content_scale else ""
    name += "-graded" if cfg.jitter_graded else ""
    name += f"-calm{cfg.jitter_calm_epochs}" if cfg.jitter_calm_epochs else ""
    name += "-leaky" if cfg.locnet_act == "leaky" else ""
    return name + (f"-{cfg.epochs}ep" if cfg.epochs != 4 else "")


def score(report: dict, model: str) -> tuple[float, dict[str, float]]:
    """The robustness score of ``model`` in a robustness.json and its five distortion means."""
    means = {}
    for transform, (low, high) in RANGES.items():
        rows = [r["accuracy"] for r in report["robustness"] if r["model"] == model and r["transform"] == transform
                and low <= r["level"] <= high]
        means[transform] = statistics.mean(rows)
    return statistics.mean(means.values()), means


def load(results: Path, robustness: Path, name=cell) -> dict[tuple[int, str], dict]:
    """(val seed, cell) -> {"id", "clean", "score", "means", "slope", "spread"} of every finished run with a
    report; "spread" is the smallest final-epoch θ spread of its transformers (None where not logged)."""
    runs = {}
    for path in sorted(results.glob("runs/*/result.json")):
        result = json.loads(path.read_text())
        cfg = TrainConfig.from_saved(result["config"])
        report_path = robustness / f"val-seed-{cfg.val_seed}" / "robustness.json"
        if result.get("val_acc") is None or not report_path.exists():
            continue
        report = json.loads(report_path.read_text())
        models = {Path(m["source"]).name: m["name"] for m in report["models"]}
        if path.parent.name not in models:
            continue
        model = models[path.parent.name]
        total, means = score(report, model)
        slopes = [m["slope"] for m in report.get("straightening", {}).get("models", []) if m["model"] == model]
        spread = (read_log(path.parent) or [{}])[-1].get("theta_spread", {})
        runs[cfg.val_seed, name(cfg)] = {"id": path.parent.name, "clean": result["val_acc"], "score": total,
                                         "means": means, "slope": slopes[0] if slopes else None,
                                         "spread": min(spread.values()) if spread else None}
    return runs


def mean_of(runs: dict, name: str, key: str, splits: list[int]) -> float:
    return statistics.mean(runs[split, name][key] for split in splits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("robustness", type=Path)
    parser.add_argument("--reference", type=Path, nargs=2, metavar=("RESULTS", "ROBUSTNESS"))
    parser.add_argument("--levers", type=Path, nargs=2, metavar=("RESULTS", "ROBUSTNESS"),
                        help="a levers grid on the same splits, judged against the finalist by its own rule")
    parser.add_argument("--straightening", action="store_true",
                        help="fast-robust-val-straighten.toml's rule: a lever whose region turns with the sign is "
                             "adopted at equal robustness too")
    parser.add_argument("--against", metavar="CELL", help="judge the other cells against this one by the margins")
    parser.add_argument("--min-clean-gain", type=float, default=0.0,
                        help="with --against: points of mean clean accuracy a cell must add (negative: may lose)")
    parser.add_argument("--max-score-loss", type=float, default=0.0,
                        help="with --against: points of mean robustness score a cell may lose")
    args = parser.parse_args()
    runs = load(args.results, args.robustness)
    lever_runs = load(*args.levers) if args.levers else {}
    levers = sorted({name for _, name in lever_runs})
    runs.update(lever_runs)
    splits = sorted({split for split, _ in runs})
    others = sorted({name for _, name in runs} - {*TRANSFORMER_CELLS, "none"}) if args.against else []
    names = [n for n in dict.fromkeys((*TRANSFORMER_CELLS, "none", *levers, *others))
             if all((s, n) in runs for s in splits)]
    judged = [n for n in names if n != args.against]  # before --reference's cell, which is for reading only
    if args.reference:
        reference = load(*args.reference, name=lambda cfg: "fast" if cfg.locnet2 and cfg.transform == "affine"
                         and not cfg.st else "other")
        runs.update({key: value for key, value in reference.items() if key[1] == "fast" and key[0] in splits})
        names += ["fast"] if all((s, "fast") in runs for s in splits) else []
    print(f"splits (val seeds): {splits}")
    print("| cell | clean val acc per split | mean clean | score per split | mean score | rotation | scale | shift "
          "| tilt | combined | slope per split | θ spread per split |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        per = [runs[s, name] for s in splits]
        means = {t: statistics.mean(r["means"][t] for r in per) for t in RANGES}
        slopes, spreads = (", ".join("-" if r[key] is None else f"{r[key]:.{digits}f}" for r in per)
                           for key, digits in (("slope", 3), ("spread", 4)))
        clean, scores = (", ".join(f"{r[key]:.2f}" for r in per) for key in ("clean", "score"))
        print(f"| {name} | {clean} | {mean_of(runs, name, 'clean', splits):.2f} | {scores} | "
              f"{mean_of(runs, name, 'score', splits):.2f} | " + " | ".join(f"{means[t]:.2f}" for t in RANGES)
              + f" | {slopes} | {spreads} |")
    unfinished = [n for n in dict.fromkeys((*levers, *others)) if n not in names]
    if unfinished:  # a run of it never finished (diverged): the cell is out, as the grids' rules say
        print(f"\nout, a run of theirs never finished: {', '.join(unfinished)} (finished: "
              + "; ".join(f"{n} val seed {s} clean {runs[s, n]['clean']:.2f}, score {runs[s, n]['score']:.2f}, "
                          f"slope {'-' if runs[s, n]['slope'] is None else format(runs[s, n]['slope'], '.3f')}"
                          for n in unfinished for s in splits if (s, n) in runs)
              + ")")
    if args.against:
        if args.against not in names:
            parser.error(f"--against {args.against}: no such cell with every split finished ({', '.join(names)})")
        judge_against(runs, splits, args.against, judged, args.min_clean_gain, args.max_score_loss)
        return
    if levers:
        judge_levers(runs, splits, [n for n in levers if n in names], "conv2", args.straightening)
        return
    candidates = [n for n in TRANSFORMER_CELLS if n in names]
    best_clean = max(mean_of(runs, n, "clean", splits) for n in candidates)
    ranked = sorted(candidates, key=lambda n: -mean_of(runs, n, "score", splits))
    winner = next(n for n in ranked if mean_of(runs, n, "clean", splits) >= best_clean - CLEAN_MARGIN)
    finalists = [n for n in ranked if n == winner or (
        mean_of(runs, n, "score", splits) >= mean_of(runs, winner, "score", splits) - FINALIST_MARGIN
        and mean_of(runs, n, "clean", splits) >= mean_of(runs, winner, "clean", splits) - CLEAN_MARGIN)]
    print(f"\nranked by mean robustness score: {', '.join(ranked)}; best mean clean accuracy {best_clean:.2f}")
    print(f"winner: {winner}; finalists: {', '.join(finalists)}")
    if "none" in names:
        for name in candidates:
            gains = [(runs[s, name]["clean"] - runs[s, "none"]["clean"],
                      runs[s, name]["score"] - runs[s, "none"]["score"]) for s in splits]
            print(f"{name} minus none, per split (clean, score): "
                  + "; ".join(f"{c:+.2f}, {r:+.2f}" for c, r in gains))


def judge_levers(runs: dict, splits: list[int], levers: list[str], finalist: str, straightening: bool) -> None:
    """fast-robust-val-levers.toml's rule: a lever is adopted if it adds LEVER_GAIN to the finalist's mean
    robustness score and loses at most CLEAN_MARGIN of its mean clean accuracy; the highest score wins. A
    longer schedule (a cell named ``-Nep``) is measured, not adopted by this rule. ``straightening``
    (fast-robust-val-straighten.toml's rule) also adopts a lever of mean slope at least SLOPE_ADOPT whose
    score is at most CLEAN_MARGIN below the finalist's, at the same clean margin."""
    score, clean = (mean_of(runs, finalist, key, splits) for key in ("score", "clean"))
    adoptable = [n for n in levers if not n.endswith("ep")]  # more epochs: measured, weighed against its time

    def straightens(name: str) -> bool:
        slopes = [runs[s, name]["slope"] for s in splits]
        return (straightening and None not in slopes and statistics.mean(slopes) >= SLOPE_ADOPT
                and mean_of(runs, name, "score", splits) >= score - CLEAN_MARGIN)

    adopted = [n for n in adoptable if (mean_of(runs, n, "score", splits) >= score + LEVER_GAIN or straightens(n))
               and mean_of(runs, n, "clean", splits) >= clean - CLEAN_MARGIN]
    print(f"\nthe finalist {finalist}: mean clean {clean:.2f}, mean score {score:.2f}")
    for name in levers:
        print(f"{name}: clean {mean_of(runs, name, 'clean', splits) - clean:+.2f}, "
              f"score {mean_of(runs, name, 'score', splits) - score:+.2f} against the finalist")
    best = max(adopted, key=lambda n: mean_of(runs, n, "score", splits)) if adopted else None
    print(f"adopted: {', '.join(adopted) or 'none'}; the lever that wins: {best or 'none'} (longer schedules, "
          f"measured only: {', '.join(n for n in levers if n not in adoptable) or 'none'})")


def judge_against(runs: dict, splits: list[int], reference: str, cells: list[str], min_clean_gain: float,
                  max_score_loss: float) -> None:
    """A grid's rule of two margins: a cell is adopted if its mean clean accuracy is at least the reference's
    plus ``min_clean_gain`` and its mean robustness score at least the reference's minus ``max_score_loss``;
    of several, the one of highest mean clean accuracy wins."""
    clean, score = (mean_of(runs, reference, key, splits) for key in ("clean", "score"))
    print(f"\nthe reference {reference}: mean clean {clean:.2f}, mean score {score:.2f}; a cell is adopted at a "
          f"clean gain of at least {min_clean_gain:+.2f} and a score loss of at most {max_score_loss:.2f}")
    adopted = []
    for name in cells:
        gain = mean_of(runs, name, "clean", splits) - clean
        loss = score - mean_of(runs, name, "score", splits)
        passes = gain >= min_clean_gain and loss <= max_score_loss
        adopted += [name] if passes else []
        print(f"{name}: clean {gain:+.2f}, score {-loss:+.2f} against the reference: "
              f"{'adopted' if passes else 'not adopted'}")
    if len(adopted) > 1:
        print(f"the cell that wins: {max(adopted, key=lambda n: mean_of(runs, n, 'clean', splits))}")


if __name__ == "__main__":
    main()

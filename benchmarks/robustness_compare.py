"""Models measured by separate ``stn-gtsrb robustness`` runs, put side by side.

    cd benchmarks/results/robustness && python ../../robustness_compare.py \\
        shipped=shipped-accurate-96,shipped-accurate-96-tilt tps=accurate-96-tps \\
        -o accurate-96-tps-vs-shipped > accurate-96-tps-vs-shipped.log

Each argument is ``LABEL=DIR[,DIR...]``: one model, whose rows are gathered from the ``robustness.json``
of each DIR (each holding that model alone; a level measured twice must give the same count; its
stability and straightening figures come from the first DIR that has them). All must share the split,
seed, images, levels and stability tracks, and have straightening figures all or none. Writes the usual
robustness.json, .md and .png with the models under their labels, and prints each distortion's score
(the mean accuracy over its distorted levels), every level's difference from the first model, in
images, and each transformer's straightening slope.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stn_gtsrb.errors import StnError
from stn_gtsrb.robustness import TRANSFORMS
from stn_gtsrb.robustness_report import check_output, distortion_scores, write_results

SHARED = ("split", "seed", "n")  # what every merged result must agree on


def load(directory: Path) -> dict:
    """The robustness.json in ``directory``, which must hold one model; an older report gets the fields
    it lacked."""
    result = json.loads((directory / "robustness.json").read_text())
    if len(result["models"]) != 1:
        raise StnError(f"{directory}: holds {len(result['models'])} models; give directories of one")
    result.setdefault("split", "test")  # older reports scored the test images, with affine transformers
    result["models"] = [{"transform": "affine", **model} for model in result["models"]]
    return result


def check_shared(reports: dict[Path, dict]) -> None:
    """StnError unless every report scored the same images: the same split, seed and count."""
    first_dir, first = next(iter(reports.items()))
    for directory, report in reports.items():
        for key in SHARED:
            if report[key] != first[key]:
                raise StnError(f"{directory}: {key} {report[key]} differs from {first[key]} in {first_dir}")


def gather(label: str, reports: dict[Path, dict]) -> dict:
    """One model's rows, description and stability from its ``reports`` (directory -> robustness.json),
    the model renamed ``label``."""
    first = next(iter(reports.values()))
    merged = {key: first[key] for key in SHARED} | {"model": {**first["models"][0], "name": label}}
    rows: dict[tuple[str, float], dict] = {}
    for directory, result in reports.items():
        for row in result["robustness"]:
            key = row["transform"], row["level"]
            if key in rows and rows[key]["correct"] != row["correct"]:
                raise StnError(f"{directory}: {key[0]} {key[1]:g} gives {row['correct']} correct, "
                               f"not {rows[key]['correct']} as before")
            rows[key] = {**row, "model": label}
        for section in ("stability", "straightening"):
            if result.get(section) and section not in merged:
                merged[section] = relabel(result[section], result["models"][0]["name"], label)
    merged["rows"] = rows
    return merged


def relabel(section: dict, name: str, label: str) -> dict:
    """A report's per-model ``section`` (stability, straightening) keeping model ``name``'s figures, as
    ``label``."""
    return {**section, "models": [{**m, "model": label} for m in section["models"] if m["model"] == name]}


def combine(models: dict[str, dict]) -> dict:
    """One result of ``measure``'s shape holding every gathered model (their images already checked)."""
    first = next(iter(models.values()))
    levels = {transform: sorted({level for t, level in first["rows"] if t == transform})
              for transform in TRANSFORMS if any(t == transform for t, _ in first["rows"])}
    for label, model in models.items():
        if set(model["rows"]) != set(first["rows"]):
            raise StnError(f"{label}: measured at other levels than {next(iter(models))}")
        if (model.get("stability") or {}).get("tracks") != (first.get("stability") or {}).get("tracks"):
            raise StnError(f"{label}: its stability tracks differ from {next(iter(models))}'s")
    rows = [model["rows"][t, level] for t in levels for level in levels[t] for model in models.values()]
    stability = first.get("stability") and {**first["stability"], "models": [
        m for model in models.values() for m in model["stability"]["models"]]}
    result = {**{key: first[key] for key in SHARED}, "models": [model["model"] for model in models.values()],
              "levels": levels, "robustness": rows, "stability": stability}
    turned = {label: model.get("straightening") for label, model in models.items()}
    if any(turned.values()):
        shape = next({"angles": s["angles"], "images": s["images"]} for s in turned.values() if s)
        for label, section in turned.items():
            if not section or {"angles": section["angles"], "images": section["images"]} != shape:
                raise StnError(f"{label}: no straightening figures at {shape['images']} images turned by "
                               f"{shape['angles'][0]:g} to {shape['angles'][-1]:g} degrees, as the others have")
        result["straightening"] = {**shape, "models": [m for s in turned.values() for m in s["models"]]}
    return result


def summary(result: dict) -> list[str]:
    """Each distortion's score per model, and each level's accuracy and difference from the first model."""
    names = [m["name"] for m in result["models"]]
    base = names[0]
    scores = {name: distortion_scores(result, name) for name in names}
    cells = {(r["transform"], r["level"], r["model"]): r for r in result["robustness"]}
    lines = [f"{result['n']} {result['split']} images, seed {result['seed']}; score = mean accuracy over the "
             "distorted levels (%)", "", "| distortion | " + " | ".join(names) + " | "
             + " | ".join(f"{name} - {base}" for name in names[1:]) + " |", "|" + " --- |" * (2 * len(names))]
    for transform in result["levels"]:
        if transform in scores[base]:
            lines.append(f"| {transform} | " + " | ".join(f"{scores[n][transform]:.2f}" for n in names) + " | "
                         + " | ".join(f"{scores[n][transform] - scores[base][transform]:+.2f}" for n in names[1:])
                         + " |")
    for name in names[1:]:
        lines += ["", f"{name} against {base}, level by level: accuracy (%) and images gained (+) or lost (-)", "",
                  "| distortion | level | " + base + " | " + name + " | images |", "|" + " --- |" * 5]
        for transform, levels in result["levels"].items():
            for level in levels:
                a, b = cells[transform, level, base], cells[transform, level, name]
                lines.append(f"| {transform} | {level:g} | {a['accuracy']:.2f} | {b['accuracy']:.2f} | "
                             f"{b['correct'] - a['correct']:+d} |")
    turned = (result.get("straightening") or {}).get("models", [])
    lines += [""] * bool(turned) + [f"straightening of {m['model']}'s transformer before block {m['position']}: "
                                    f"slope {m['slope']:.3f}, scatter {m['scatter']:.2f} degrees" for m in turned]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", metavar="LABEL=DIR[,DIR...]")
    parser.add_argument("-o", "--out", type=Path, required=True, help="directory for the side-by-side report")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    args = parser.parse_args()
    try:
        pairs = [spec.split("=", 1) for spec in args.models]
        if any(len(pair) != 2 or not all(pair) for pair in pairs):
            raise StnError("each model is LABEL=DIR[,DIR...]")
        check_output(args.out, args.overwrite)
        specs = {label: [Path(directory) for directory in dirs.split(",")] for label, dirs in pairs}
        reports = {directory: load(directory) for dirs in specs.values() for directory in dirs}
        check_shared(reports)
        result = combine({label: gather(label, {d: reports[d] for d in dirs}) for label, dirs in specs.items()})
    except (StnError, OSError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(summary(result)))
    for path in write_results(result, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

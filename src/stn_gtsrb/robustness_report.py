"""``stn-gtsrb robustness``: models side by side under distortions (robustness.py), along tracks
(stability.py) and turned by known angles (straightening.py), written as robustness.json, robustness.md
and robustness.png.

The images are the official test split or, with ``split="val"``, the
validation split (the held-out tracks) that every model was trained without,
so that choosing among models never looks at the test set; or a seeded subset
of ``n`` of them. Stability uses the tracks given by id, else the validation
tracks of the first model trained with ``--val``, and says for each model how
many of them it trained on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .archives import DataLocation
from .classes import CLASS_NAMES, MIRROR_PAIRS
from .config import TrainConfig
from .data import GTSRBTensors, Normalizer, load_tensors, select_split, validation_tracks
from .errors import StnError
from .fileio import atomic_write, write_text
from .models import ConvNet
from .predictor import Predictor, load_predictor, pretrained_name, source_path
from .robustness import TRANSFORMS, UNDISTORTED, UNITS, check_levels, robustness_rows
from .stability import stability
from .straightening import ANGLES, IMAGES, straightening

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # the viz extra is not installed: check_output says so
    plt = None

OUTPUTS = ("robustness.json", "robustness.md", "robustness.png")
SPLIT_NAMES = {"test": "test images", "val": "validation images (the held-out tracks)"}


@dataclass
class Subject:
    """One model under study: its name in the tables, where it came from, and its Predictor (PyTorch: the
    stability and straightening figures hook its transformers)."""

    name: str
    source: str
    predictor: Predictor

    @property
    def cfg(self) -> TrainConfig:
        return self.predictor.config

    def torch_model(self) -> tuple[ConvNet, Normalizer]:
        return self.predictor.torch_model("robustness")

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "transformers": sorted(self.cfg.transformers),
                "transform": self.cfg.transform_spec, "image_size": self.cfg.image_size}


def load_subjects(sources: list[str], device: str = "auto", best: bool = False) -> list[Subject]:
    """Load each model argument (a run directory, checkpoint, weights file, or a pretrained source), named by
    its directory or file name (a pretrained model: its source), made unique."""
    if not sources:
        raise StnError("give at least one model: a run directory, a checkpoint, a weights file or --pretrained")
    subjects, taken = [], set()
    for source in sources:
        predictor = load_predictor(source, best=best and not pretrained_name(source), device=device)
        predictor.torch_model("robustness")  # refused before any work for an ONNX file
        path = source_path(source)
        name = source if pretrained_name(source) else (path.name if path.is_dir() else path.stem)
        name = next(candidate for candidate in [name] + [f"{name}#{i}" for i in range(2, len(sources) + 2)]
                    if candidate not in taken)
        taken.add(name)
        subjects.append(Subject(name, source, predictor))
    return subjects


def check_output(out_dir: Path, overwrite: bool) -> None:
    """StnError before any work if the results could not be written, or would replace earlier ones."""
    if plt is None:
        raise StnError("robustness.png needs matplotlib: pip install 'stn-gtsrb[viz]'")
    existing = [name for name in OUTPUTS if (out_dir / name).exists()]
    if existing and not overwrite:
        raise StnError(f"{out_dir / existing[0]} exists: use --overwrite to replace it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StnError(f"cannot create {out_dir}: {error.strerror or error}") from None
    if not os.access(out_dir, os.W_OK):
        raise StnError(f"cannot write to {out_dir}: permission denied")


def _subset(images: GTSRBTensors, n: int | None, seed: int, split: str) -> torch.Tensor:
    if n is not None and not 0 < n <= len(images):
        raise StnError(f"--n must be between 1 and {len(images)} (the {split} images), got {n}")
    return torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]


def _scored_split(subjects: list[Subject], official: dict, split: str) -> GTSRBTensors:
    """The images the models are scored on: the test split, or the validation split all of them held out."""
    if split == "test":
        return official["test"]
    if split != "val":
        raise StnError(f"unknown split {split!r}; valid: val, test")
    held_out = {(s.cfg.val_seed, s.cfg.val_tracks) for s in subjects}
    without = [s.name for s in subjects if not s.cfg.val]
    if without:
        raise StnError(f"--split val needs models trained with --val; {without[0]} was trained without one")
    if len(held_out) > 1:
        raise StnError("--split val needs models that held out the same validation tracks; these differ in "
                       "--val-seed or --val-tracks: " + ", ".join(f"{s.name} ({s.cfg.val_seed}, {s.cfg.val_tracks})"
                                                                  for s in subjects))
    return select_split(official, "val", *held_out.pop())


def _tracks(subjects: list[Subject], train: GTSRBTensors, tracks: list[int] | None) -> tuple[list[int], str]:
    """The tracks to study and where they come from."""
    count = int(train.tracks.max()) + 1
    if tracks is not None:
        bad = [t for t in tracks if not 0 <= t < count]
        if not tracks or bad:
            raise StnError(f"--tracks must be training track ids from 0 to {count - 1}, "
                           f"got {bad[0] if bad else 'none'}")
        return tracks, "the tracks given"
    with_val = [s for s in subjects if s.cfg.val]
    if not with_val:
        return [], ""
    cfg = with_val[0].cfg
    chosen = validation_tracks(train, cfg.val_seed, cfg.val_tracks).tolist()
    return chosen, f"the validation tracks of {with_val[0].name}"


def _trained_on(cfg: TrainConfig, train: GTSRBTensors, tracks: list[int]) -> int:
    """How many of ``tracks`` the run of ``cfg`` trained on (all of them, without --val)."""
    held_out = set(validation_tracks(train, cfg.val_seed, cfg.val_tracks).tolist()) if cfg.val else set()
    return sum(track not in held_out for track in tracks)


def measure(subjects: list[Subject], levels: dict, n: int | None = None, seed: int = 0,
            tracks: list[int] | None = None, location: DataLocation | None = None, download: bool = False,
            progress: bool = False, split: str = "test") -> dict:
    """Robustness rows for every model on ``split`` (test or val) and, where tracks are known, their
    stability; a JSON-ready dict."""
    check_levels(levels)
    rows, stable, chosen, origin, straight = [], [], [], "", []
    for size in sorted({s.cfg.image_size for s in subjects}):
        official = load_tensors(size, location, download)
        scored, group = _scored_split(subjects, official, split), [s for s in subjects if s.cfg.image_size == size]
        index = _subset(scored, n, seed, split)
        chosen, origin = _tracks(subjects, official["train"], tracks)
        rows += robustness_rows({s.name: s.predictor.predict for s in group}, scored.images[index],
                                scored.labels[index], levels, seed, progress)
        for subject in group:
            for position, figures in straightening(*subject.torch_model(), scored.images[index[:IMAGES]]).items():
                straight.append({"model": subject.name, "position": position, **figures})
        for subject in group if chosen else []:
            figures = stability(*subject.torch_model(), official["train"], chosen)
            stable.append({"model": subject.name, "trained_on": _trained_on(subject.cfg, official["train"], chosen),
                           **figures})
    order = {s.name: i for i, s in enumerate(subjects)}
    rows.sort(key=lambda r: (TRANSFORMS.index(r["transform"]), r["level"], order[r["model"]]))
    stable.sort(key=lambda r: order[r["model"]])
    straight.sort(key=lambda r: (order[r["model"]], r["position"]))
    return {"split": split, "seed": seed, "n": len(index), "models": [s.describe() for s in subjects],
            "levels": {name: list(values) for name, values in levels.items()}, "robustness": rows,
            "stability": {"tracks": chosen, "origin": origin, "models": stable} if chosen else None,
            "straightening": {"angles": list(ANGLES), "images": min(IMAGES, len(index)), "models": straight}}


def distortion_scores(result: dict, model: str) -> dict[str, float]:
    """Each distortion's score for ``model`` in a result of ``measure``: its mean accuracy (%) over the
    distortion's levels other than the undistorted one."""
    scored: dict[str, list[float]] = {}
    for row in result["robustness"]:
        if row["model"] == model and row["level"] != UNDISTORTED[row["transform"]]:
            scored.setdefault(row["transform"], []).append(row["accuracy"])
    return {name: sum(values) / len(values) for name, values in scored.items()}


# ---------------------------------------------------------------- outputs

def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def _accuracy_table(result: dict, transform: str) -> list[str]:
    names = [m["name"] for m in result["models"]]
    cells = {(r["level"], r["model"]): f"{r['accuracy']:.2f}" for r in result["robustness"]
             if r["transform"] == transform}
    levels = sorted({level for level, _ in cells})
    return [f"## {transform} ({UNITS[transform]})", "",
            *_table(["level", *names], [[f"{level:g}", *(cells[level, name] for name in names)] for level in levels]),
            ""]


def _mirror_table(result: dict) -> list[str]:
    """Per rotation level and model, how many images were taken for their mirror image."""
    names = [m["name"] for m in result["models"]]
    cells = {(r["level"], r["model"]): r["mirror_errors"] for r in result["robustness"]
             if r["transform"] == "rotation" and "mirror_errors" in r}
    if not cells:
        return []
    pairs = ", ".join(f"{CLASS_NAMES[a]} / {CLASS_NAMES[b]}" for a, b in MIRROR_PAIRS)
    levels = sorted({level for level, _ in cells})
    return ["## Mirror images under rotation", "",
            f"Images taken for their mirror image ({pairs}), per rotation level (degrees).", "",
            *_table(["level", *names], [[f"{level:g}", *(cells[level, name] for name in names)] for level in levels]),
            ""]


def _stability_tables(stable: dict) -> list[str]:
    lines = ["## Track stability", "",
             f"On {len(stable['tracks'])} training tracks ({stable['origin']}), every frame of each.", ""]
    lines += _table(["model", "of these tracks, trained on", "frame accuracy (%)", "tracks given one class (%)",
                     "class changes per track"],
                    [[m["model"], m["trained_on"], f"{m['accuracy']:.2f}", f"{m['one_prediction']:.1f}",
                      f"{m['changes']:.2f}"] for m in stable["models"]])
    rows = [[m["model"], position, f"{t['input_variation']:.4f}", f"{t['output_variation']:.4f}", f"{t['ratio']:.3f}",
             f"{100 * t['centre_spread']:.2f}", f"{100 * t['scale_spread']:.2f}"]
            for m in stable["models"] for position, t in m["transformers"].items()]
    if rows:
        lines += ["", "Per transformer (before conv block *position*): variation of its input and output maps over "
                      "the frames, and the spread of its sampled region.", ""]
        lines += _table(["model", "position", "input variation", "output variation", "output / input",
                         "centre spread (% of side)", "scale spread (%)"], rows)
    return lines + [""]


def markdown(result: dict) -> str:
    """robustness.md: one accuracy table per distortion, then the stability tables."""
    lines = ["# Geometric robustness", "",
             f"Accuracy (%) on {result['n']} GTSRB {SPLIT_NAMES[result['split']]} (seed {result['seed']}), "
             "distorted before each model's own normalisation, edge pixels replicated. Models: "
             + ", ".join(f"`{m['name']}` ({m['source']}; transformers before blocks {m['transformers'] or 'none'}"
                         + (f", {m['transform']}" if m["transformers"] else "") + ")"
                         for m in result["models"]) + ".", ""]
    for transform in TRANSFORMS:
        if transform in result["levels"]:
            lines += _accuracy_table(result, transform)
    lines += _mirror_table(result)
    if result["stability"]:
        lines += _stability_tables(result["stability"])
    else:
        lines += ["No track stability: no model was trained with --val, and no --tracks were given.", ""]
    if result.get("straightening", {}).get("models"):
        lines += _straightening_table(result["straightening"])
    return "\n".join(lines)


def _straightening_table(straight: dict) -> list[str]:
    angles = straight["angles"]
    return ["## Straightening", "",
            f"The first {straight['images']} of these images turned by {angles[0]:g} to {angles[-1]:g} degrees: "
            "the slope of each transformer's region turn on the content's turn (1: the region turns with the "
            "sign; 0: it does not turn) and the scatter about that line.", "",
            *_table(["model", "position", "slope", "scatter (degrees)"],
                    [[m["model"], m["position"], f"{m['slope']:.3f}", f"{m['scatter']:.2f}"]
                     for m in straight["models"]]), ""]


def plot(result: dict, path: Path) -> Path:
    """robustness.png: accuracy against level, one panel per distortion, one line per model."""
    transforms = [t for t in TRANSFORMS if t in result["levels"]]
    straight = result.get("straightening", {}).get("models", [])
    panels = len(transforms) + bool(straight)
    figure, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.6), squeeze=False)
    for axis, transform in zip(axes[0][:len(transforms)], transforms, strict=True):
        for model in result["models"]:
            rows = [r for r in result["robustness"] if r["transform"] == transform and r["model"] == model["name"]]
            axis.plot([r["level"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=model["name"])
        axis.set(title=transform, xlabel=UNITS[transform], ylabel=f"{result['split']} accuracy (%)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if straight:
        axis, angles = axes[0][-1], result["straightening"]["angles"]
        axis.plot(angles, angles, color="grey", linestyle="--", label="ideal (slope 1)")
        for m in straight:
            axis.plot(angles, m["mean_turn"], marker="o", label=f"{m['model']} @{m['position']} ({m['slope']:.2f})")
        axis.set(title="straightening", xlabel="sign turned by (degrees)", ylabel="region turned by (degrees)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    written = atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=100))
    plt.close(figure)
    return written


def write_results(result: dict, out_dir: Path) -> list[Path]:
    """Write robustness.json, robustness.md and robustness.png in ``out_dir`` (each atomically)."""
    out_dir = Path(out_dir)
    return [write_text(out_dir / "robustness.json", json.dumps(result, indent=1) + "\n"),
            write_text(out_dir / "robustness.md", markdown(result)), plot(result, out_dir / "robustness.png")]

"""Scoring saved models on a split: one model, a committee, test-time augmentation.

Every model is loaded and run through a Predictor (predictor.py), so any source it takes, ONNX files
included, can be scored. :func:`evaluate` gives one model's accuracy on a split, with the epoch and
the figure its run logged. ``stn-gtsrb eval RUN RUN ...`` scores a committee: each model classifies the
split's raw images through its own normaliser, and the softmax probabilities
of all models are averaged. ``--tta`` averages, per model, over ``TTA_VIEWS``:
the image itself, shifted by 5 % of its side in four directions, and scaled by
0.9 and 1.1 (edge pixels replicated, as robustness.py distorts). Both are
reported as rows of their own, never as a single model's accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .archives import DataLocation, resolve_location
from .data import load_tensors, select_split
from .errors import StnError
from .evaluation import require_val_if_asked
from .geometry import content_thetas
from .predictor import Predictor, load_predictor
from .robustness import resample

TTA_VIEWS = ((1.0, 0.0, 0.0), *((1.0, 0.05, k * math.pi / 2) for k in range(4)), (0.9, 0.0, 0.0), (1.1, 0.0, 0.0))
"""(content scale, shift as a fraction of the side, shift direction in radians) of each test-time view."""


def view(images: torch.Tensor, scale: float, shift: float, direction: float) -> torch.Tensor:
    """uint8 ``images`` ``(N, C, S, S)`` with their content scaled and shifted (uint8, same shape)."""
    n = len(images)
    return resample(images, content_thetas(torch.zeros(n), torch.full((n,), scale), torch.full((n,), shift),
                                           torch.full((n,), direction)))


def model_probabilities(predictor: Predictor, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Probabilities ``(N, classes)`` of one model on uint8 ``images``, averaged over ``TTA_VIEWS`` with ``tta``."""
    views = TTA_VIEWS if tta else TTA_VIEWS[:1]
    return sum(predictor.probabilities(view(images, *v)) for v in views) / len(views)


def _identity(data) -> tuple[torch.Tensor, ...]:
    """What makes two models' splits the same images: labels, tracks and frames, in order."""
    return data.labels, data.tracks, data.frames


SPLITS = ("train", "val", "test")


def split_data(predictor: Predictor, split: str, location: DataLocation | None, download: bool = False):
    """The uint8 images of ``split`` as the predictor's run defined it (its validation tracks); StnError for a
    validation split of a run trained without one, or an unknown split."""
    if split not in SPLITS:
        raise StnError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    cfg = predictor.config
    require_val_if_asked(cfg, split)
    return select_split(load_tensors(cfg.image_size, location, download), split, cfg.val_seed, cfg.val_tracks)


def evaluate(path: Path | str, split: str = "test", device: str = "auto", location: DataLocation | None = None,
             download: bool = False, precision: str | None = None, best: bool = False, *, data_dir=None,
             source=None) -> dict:
    """Accuracy of one model (a run directory's final model, ``best``: its best.pt; a .pt, .safetensors or
    .onnx file; a pretrained source) on a split, in ``precision`` (default: the one its metrics were
    measured in, else fp32), with the data in ``location`` (default: :meth:`DataLocation.resolve` of
    ``data_dir`` and ``source``, a convenience)."""
    location = resolve_location(location, data_dir, source)
    predictor = load_predictor(path, best=best, precision=precision, device=device)
    data = split_data(predictor, split, location, download)
    correct = int((predictor.predict(data.images) == data.labels).sum())
    return {"split": split, "accuracy": 100.0 * correct / len(data.labels), "correct": correct,
            "total": len(data.labels), "epoch": predictor.epoch,
            "logged": (predictor.metrics or {}).get(f"{split}_acc"), "precision": predictor.precision}


def evaluate_ensemble(paths: list[Path | str], split: str = "test", tta: bool = False, device: str = "auto",
                      location: DataLocation | None = None, download: bool = False, best: bool = False,
                      precision: str = "fp32") -> dict:
    """Accuracy of the committee of ``paths`` (one path: a single model, e.g. with ``tta``) on a split; any
    source :func:`predictor.load_predictor` takes, ONNX files included."""
    if not paths:
        raise StnError("give at least one model")
    total, first = 0.0, None
    for path in paths:
        predictor = load_predictor(path, best=best, precision=precision, device=device)
        data = split_data(predictor, split, location, download)
        if first is not None and not all(torch.equal(a, b) for a, b in zip(first, _identity(data), strict=True)):
            raise StnError(f"{path} was validated on other images than the first model: a committee needs one split")
        first = first or _identity(data)
        total = total + model_probabilities(predictor, data.images, tta)
    labels = first[0]
    correct = int((total.argmax(1) == labels).sum())
    return {"split": split, "accuracy": 100.0 * correct / len(labels), "correct": correct, "total": len(labels),
            "models": [str(p) for p in paths], "tta": tta, "views": len(TTA_VIEWS) if tta else 1,
            "precision": predictor.precision}

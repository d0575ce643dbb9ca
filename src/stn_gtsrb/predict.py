"""Classifying image files with a trained model: ``stn-gtsrb predict``.

Any image Pillow reads (PNG, JPEG, PPM, ...) of any size is resized to the
model's input size exactly as the training data was, normalised with the
statistics stored in the checkpoint, and classified; the result is the top-k
classes with names and softmax probabilities. Unreadable files are reported
one by one and do not stop the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .classes import CLASS_NAMES
from .data import decode_resized
from .errors import StnError


@dataclass
class Prediction:
    """Top-k classes of one file: ``top = [(class id, probability), ...]``, most likely first."""

    file: str
    top: list[tuple[int, float]] = field(default_factory=list)
    transformers: list[dict] = field(default_factory=list)  # each transformer's theta and region (as serve's)

    def to_dict(self) -> dict:
        return {"file": self.file, "top": top_entries(self.top), "transformers": self.transformers}


def top_entries(top: list[tuple[int, float]]) -> list[dict]:
    """``[(class id, probability), ...]`` as the JSON list ``[{"class", "name", "probability"}, ...]``."""
    return [{"class": c, "name": CLASS_NAMES[c], "probability": p} for c, p in top]


def read_images(paths: list[Path | str], size: int) -> tuple[list[str], torch.Tensor, list[str]]:
    """(readable file names, uint8 images ``(N, 3, size, size)``, one error line per unreadable file)."""
    names, images, errors = [], [], []
    for path in paths:
        try:
            images.append(torch.from_numpy(decode_resized(path, size).copy()).permute(2, 0, 1))
            names.append(str(path))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            reason = (str(error) or type(error).__name__).splitlines()[0]
            errors.append(f"cannot read image {path}: {reason}")
    stacked = torch.stack(images) if images else torch.empty(0, 3, size, size, dtype=torch.uint8)
    return names, stacked, errors


def check_top_k(top_k: int) -> None:
    if not 1 <= top_k <= len(CLASS_NAMES):
        raise StnError(f"--top-k must be between 1 and {len(CLASS_NAMES)}, got {top_k}")


def top_classes(probabilities: torch.Tensor, top_k: int) -> list[list[tuple[int, float]]]:
    """Top-k (class id, probability) lists of ``probabilities`` ``(N, 43)``; StnError for a bad ``top_k``."""
    check_top_k(top_k)
    values, classes = probabilities.topk(top_k, dim=1)
    return [list(zip(c.tolist(), v.tolist(), strict=True)) for c, v in zip(classes, values, strict=True)]


def format_table(predictions: list[Prediction]) -> str:
    lines = [f"{'file':<32} {'rank':>4} {'class':>5}  {'probability':>11}  name"]
    for prediction in predictions:
        for rank, (class_id, probability) in enumerate(prediction.top, 1):
            lines.append(f"{prediction.file if rank == 1 else '':<32} {rank:>4} {class_id:>5}  "
                         f"{probability:>11.4f}  {CLASS_NAMES[class_id]}")
    return "\n".join(lines)

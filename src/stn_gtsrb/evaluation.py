"""Evaluation, in one place: class scores, accuracy, and a saved model's accuracy on a split.

``eval``, ``train`` (per epoch), ``plot``, ``report`` and ``predict`` all score
images through :func:`predict` / :func:`probabilities`, in batches of
``EVAL_BATCH``, in eval mode, with the model's training mode restored after.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .archives import DataLocation, resolve_location
from .checkpoints import load_checkpoint, model_from_checkpoint
from .config import TrainConfig
from .data import Normalizer
from .device_data import load_device_data
from .errors import StnError
from .runtime import Runtime, autocast_for

EVAL_BATCH = 500  # images per forward pass when evaluating


@torch.no_grad()
def _batched(model: torch.nn.Module, images: torch.Tensor, head, precision: str, batch: int) -> torch.Tensor:
    """``head(float32 logits)`` of each batch of ``images``, concatenated; the model in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    with autocast_for(images.device, precision):
        out = torch.cat([head(model(images[i:i + batch]).float()) for i in range(0, len(images), batch)])
    model.train(was_training)
    return out


def probabilities(model: torch.nn.Module, images: torch.Tensor, precision: str = "fp32",
                  batch: int = EVAL_BATCH) -> torch.Tensor:
    """Softmax class probabilities ``(N, classes)`` for normalised ``images`` ``(N, 3, S, S)``."""
    return _batched(model, images, lambda logits: logits.softmax(1), precision, batch)


def predict(model: torch.nn.Module, images: torch.Tensor, precision: str = "fp32",
            batch: int = EVAL_BATCH) -> torch.Tensor:
    """Predicted class ids ``(N,)`` for normalised ``images`` ``(N, 3, S, S)``."""
    return _batched(model, images, lambda logits: logits.argmax(1), precision, batch)


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str = "fp32") -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (predict(model, images, precision) == labels).sum().item() / len(labels)


def require_val_if_asked(cfg: TrainConfig, split: str) -> None:
    """StnError if ``split`` is the validation split of a run trained without one."""
    if split == "val" and not cfg.val:
        raise StnError("this run was trained without --val, so it has no validation split")


def evaluate(path: Path | str, split: str = "test", device: str = "auto", location: DataLocation | None = None,
             download: bool = False, precision: str | None = None, best: bool = False, *, data_dir=None,
             source=None) -> dict:
    """Accuracy of a checkpoint, weights file or run directory (its final model; ``best``: its best.pt)
    on a split, in ``precision`` (default: the one its metrics were measured in, else fp32), with the data
    in ``location`` (default: :meth:`DataLocation.resolve` of ``data_dir`` and ``source``, a convenience)."""
    location = resolve_location(location, data_dir, source)
    checkpoint = load_checkpoint(path, best)
    model, cfg = model_from_checkpoint(checkpoint, str(path))
    require_val_if_asked(cfg, split)
    if split not in ("train", "val", "test"):
        raise StnError(f"unknown split {split!r}; valid: train, val, test")
    runtime = Runtime.resolve(device, precision or checkpoint["metrics"].get("precision", "fp32"))
    data = load_device_data(cfg, runtime.device, location, download,
                            normalizer=Normalizer.from_state_dict(checkpoint["normalizer"]), splits=(split,))
    images, labels = data.splits[split]
    _, forward = runtime.model(model)
    correct = (predict(forward, runtime.images(images), runtime.precision) == labels).sum().item()
    return {"split": split, "accuracy": 100.0 * correct / len(labels), "correct": correct, "total": len(labels),
            "epoch": checkpoint["epoch"], "logged": checkpoint["metrics"].get(f"{split}_acc"),
            "precision": runtime.precision}

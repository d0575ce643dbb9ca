"""Evaluation, in one place: class scores, accuracy, and a saved model's accuracy on a split.

``eval``, ``train`` (per epoch), ``plot``, ``report`` and ``predict`` all score
images through :func:`predict` / :func:`probabilities`, in batches of
``EVAL_BATCH``, in eval mode, with the model's training mode restored after.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoints import load_checkpoint, model_from_checkpoint
from .config import TrainConfig
from .data import Normalizer
from .device_data import load_device_data
from .errors import StnError
from .runtime import autocast_for, resolve_device

EVAL_BATCH = 500  # images per forward pass when evaluating


@torch.no_grad()
def _batched(model: torch.nn.Module, images: torch.Tensor, head, bf16: bool, batch: int) -> torch.Tensor:
    """``head(float32 logits)`` of each batch of ``images``, concatenated; the model in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    with autocast_for(images.device, bf16):
        out = torch.cat([head(model(images[i:i + batch]).float()) for i in range(0, len(images), batch)])
    model.train(was_training)
    return out


def probabilities(model: torch.nn.Module, images: torch.Tensor, bf16: bool = False,
                  batch: int = EVAL_BATCH) -> torch.Tensor:
    """Softmax class probabilities ``(N, classes)`` for normalised ``images`` ``(N, 3, S, S)``."""
    return _batched(model, images, lambda logits: logits.softmax(1), bf16, batch)


def predict(model: torch.nn.Module, images: torch.Tensor, bf16: bool = False, batch: int = EVAL_BATCH) -> torch.Tensor:
    """Predicted class ids ``(N,)`` for normalised ``images`` ``(N, 3, S, S)``."""
    return _batched(model, images, lambda logits: logits.argmax(1), bf16, batch)


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, bf16: bool = False) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (predict(model, images, bf16) == labels).sum().item() / len(labels)


def require_val_if_asked(cfg: TrainConfig, split: str) -> None:
    """StnError if ``split`` is the validation split of a run trained without one."""
    if split == "val" and not cfg.val:
        raise StnError("this run was trained without --val, so it has no validation split")


def evaluate(path: Path | str, split: str = "test", device: str = "auto", data_dir=None, source=None,
             download: bool = False, bf16: bool = False, best: bool = False) -> dict:
    """Accuracy of a checkpoint, weights file or run directory (its final model; ``best``: its best.pt)
    on a split."""
    checkpoint = load_checkpoint(path, best)
    model, cfg = model_from_checkpoint(checkpoint, str(path))
    require_val_if_asked(cfg, split)
    if split not in ("train", "val", "test"):
        raise StnError(f"unknown split {split!r}; valid: train, val, test")
    dev = resolve_device(device)
    data = load_device_data(cfg, dev, data_dir, source, download,
                            normalizer=Normalizer.from_state_dict(checkpoint["normalizer"]), splits=(split,))
    images, labels = data.splits[split]
    correct = (predict(model.to(dev), images, bf16) == labels).sum().item()
    return {"split": split, "accuracy": 100.0 * correct / len(labels), "correct": correct, "total": len(labels),
            "epoch": checkpoint["epoch"], "logged": checkpoint["metrics"].get(f"{split}_acc")}

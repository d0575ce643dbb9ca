"""Scoring a model in training: class scores and accuracy of normalised images on the device.

``train`` scores each epoch through :func:`accuracy`, in batches of ``EVAL_BATCH``, in eval mode, with
the model's training mode restored after, and checks through :func:`theta_spread` that each transformer
still gives different images different maps; :func:`silent_units` (benchmarks/theta_spread.py) gives the
fraction of each loc-net activation layer's units that never fire. Saved models are scored through a
Predictor (predictor.py; ``evaluate`` and committees in scoring.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .config import TrainConfig
from .errors import StnError
from .runtime import autocast_for

EVAL_BATCH = 500  # images per forward pass when evaluating
PROBE_IMAGES = 256  # training images (unjittered) whose maps measure each transformer's spread
STOPPED_SPREAD = 1e-6  # a spread below this: the transformer gives every image the same map


@contextmanager
def eval_mode(model: torch.nn.Module):
    """``model`` in eval mode inside the block, its training mode restored after (even on an error)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def _batched(model: torch.nn.Module, images: torch.Tensor, head, precision: str, batch: int) -> torch.Tensor:
    """``head(float32 logits)`` of each batch of ``images``, concatenated; the model in eval mode meanwhile."""
    with eval_mode(model), autocast_for(images.device, precision):
        return torch.cat([head(model(images[i:i + batch]).float()) for i in range(0, len(images), batch)])


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


@torch.no_grad()
def theta_spread(model: torch.nn.Module, images: torch.Tensor, precision: str = "fp32") -> dict[str, float]:
    """Per transformer position (a string, as the JSON log keeps it): the standard deviation of its θ over
    ``images``, averaged over θ's entries. Near 0, its localisation net gives every image the same map: it
    has stopped working (a layer of ReLUs that all output 0, say), and the network runs without it."""
    with eval_mode(model), autocast_for(images.device, precision):
        _, thetas = model(images, return_thetas=True)
    return {str(position): float(theta.float().flatten(1).std(0).mean()) for position, theta in thetas.items()}


@torch.no_grad()
def silent_units(model: torch.nn.Module, images: torch.Tensor) -> dict[str, list[float]]:
    """Per transformer position: for each activation layer of its localisation net, in order, the fraction of
    its units (channels) that output nothing above 0 for any of ``images``, in any pass. A ReLU unit off for
    every image passes no gradient and has died; a whole layer of them stops the transformer."""
    peaks: dict[torch.nn.Module, torch.Tensor] = {}

    def record(module, _, output):
        peak = output.float().transpose(0, 1).flatten(1).amax(1)
        peaks[module] = torch.maximum(peaks[module], peak) if module in peaks else peak

    layers = {position: transformer.loc.activations() for position, transformer in model.transformers.items()}
    hooks = [m.register_forward_hook(record) for found in layers.values() for m in found]
    try:
        with eval_mode(model):
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return {position: [float((peaks[m] <= 0).float().mean()) for m in found] for position, found in layers.items()}


def stopped_transformers(spread: dict[str, float]) -> list[str]:
    """The positions of :func:`theta_spread` whose transformer gives every image the same map."""
    return [position for position, value in spread.items() if value < STOPPED_SPREAD]


def require_val_if_asked(cfg: TrainConfig, split: str) -> None:
    """StnError if ``split`` is the validation split of a run trained without one."""
    if split == "val" and not cfg.val:
        raise StnError("this run was trained without --val, so it has no validation split")

"""The tensors a run works on: its training split and its normalised splits on the device.

The whole normalised dataset lives on the device as one float tensor per split
(airbench-style): the trainer and the evaluators take batches by index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .archives import DataLocation
from .config import TrainConfig
from .data import GTSRBTensors, Normalizer, fit_normalizer, load_tensors, select_split
from .errors import StnError


@dataclass
class DeviceData:
    """Normalised tensors on the device: ``splits[name] = (images float (N,3,S,S), labels (N,))``."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    normalizer: Normalizer
    training: GTSRBTensors  # the training split as loaded (uint8, on the CPU), for callbacks that draw it


def training_split(cfg: TrainConfig, official: dict[str, GTSRBTensors]) -> GTSRBTensors:
    """The images the model trains on: (train or train_without_val), optionally a seeded subset."""
    train = select_split(official, "train_without_val" if cfg.val else "train", cfg.val_seed, cfg.val_tracks)
    if cfg.n:
        if cfg.n > len(train):
            raise StnError(f"-n {cfg.n} is larger than the training split ({len(train)} images)")
        train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.n])
    return train


def load_device_data(cfg: TrainConfig, device: torch.device, location: DataLocation | None = None, download=False,
                     normalizer: Normalizer | None = None, splits=("train", "val", "test")) -> DeviceData:
    """Load, split, normalise (fitting on the training split unless given) and move to ``device``."""
    official = load_tensors(cfg.image_size, location, download)
    train = training_split(cfg, official)
    if normalizer is None:
        normalizer = fit_normalizer(train.images, cfg.norm, cfg.per_channel_norm, cfg.lnorm,
                                    cfg.legacy_norm)
    chosen = {"train": train, "test": official["test"]}
    if cfg.val:
        chosen["val"] = select_split(official, "val", cfg.val_seed, cfg.val_tracks)
    return DeviceData({name: (normalizer(t.images.to(device)), t.labels.to(device))
                       for name, t in chosen.items() if name in splits}, normalizer, train)

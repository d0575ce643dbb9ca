"""Weights files: a trained model in one safetensors file, and the model shipped with the package.

A weights file holds the model's state dict as ``model.<name>`` (float16 when
exported with ``half=True``; the fixed normalisation kernels are not part of
it) and the normaliser's tensors as ``normalizer.<name>`` (float32); its string
metadata holds the training config, the epoch and the metrics as JSON. ``read_weights`` returns
the dict shape of a training checkpoint (without optimiser state, parameters
back in float32), so every command that takes a checkpoint takes a weights file.

The package ships one such file, the two-transformer IDSIA-like net
(``PRETRAINED``), which ``create_model("idsia", pretrained=True)`` and the
``--pretrained`` option of the CLI load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import StnError
from .fileio import atomic_write

WEIGHTS_FORMAT = "1"
SUFFIX = ".safetensors"
PRETRAINED = {"idsia": "idsia-2st-32px"}  # network name -> file stem under stn_gtsrb/pretrained/
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def pretrained_path(net: str = "idsia") -> Path:
    """The shipped weights file of network ``net``."""
    if net not in PRETRAINED:
        raise StnError(f"no pretrained weights for network {net!r}; available: {', '.join(PRETRAINED)}")
    path = PRETRAINED_DIR / f"{PRETRAINED[net]}{SUFFIX}"
    if not path.exists():
        raise StnError(f"pretrained weights {path} are missing from this installation")
    return path


def export_weights(checkpoint: dict, path: Path | str, half: bool = True) -> Path:
    """Write a training checkpoint's model and normaliser as a weights file (atomically)."""
    def stored(value: torch.Tensor) -> torch.Tensor:
        return (value.half() if half and value.is_floating_point() else value).contiguous()

    normalizer = checkpoint["normalizer"]
    tensors = {f"model.{name}": stored(value) for name, value in checkpoint["model"].items()}
    tensors |= {f"normalizer.{name}": value.contiguous() for name, value in normalizer.items()
                if isinstance(value, torch.Tensor)}
    metadata = {"format": WEIGHTS_FORMAT, "config": json.dumps(checkpoint["config"]),
                "epoch": str(checkpoint["epoch"]), "metrics": json.dumps(checkpoint["metrics"]),
                "normalizer": json.dumps({k: v for k, v in normalizer.items() if not isinstance(v, torch.Tensor)})}
    return atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def read_weights(path: Path | str) -> dict:
    """A weights file as a checkpoint-shaped dict: config, model, normalizer, epoch, metrics."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except Exception as error:  # safetensors raises several kinds for a bad file
        raise StnError(f"{path} is not a readable weights file: {str(error).splitlines()[0]}") from None
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise StnError(f"{path} is not a stn-gtsrb weights file of format {WEIGHTS_FORMAT}")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {name[len(prefix):]: value.float() if value.is_floating_point() else value
                for name, value in tensors.items() if name.startswith(prefix)}

    return {"config": json.loads(metadata["config"]), "model": part("model."),
            "normalizer": {**json.loads(metadata["normalizer"]), **part("normalizer.")},
            "epoch": int(metadata["epoch"]), "metrics": json.loads(metadata["metrics"])}

"""Where and how tensors are computed: the device and the autocast precision."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .errors import StnError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; other names are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}
    if name not in available:
        raise StnError(f"unknown device {name!r}; valid: auto, cpu, cuda, mps")
    if not available[name]:
        raise StnError(f"device {name!r} is not available on this machine")
    return torch.device(name)


def autocast_for(device: torch.device, bf16: bool):
    """bfloat16 autocast on ``device`` when ``bf16``, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

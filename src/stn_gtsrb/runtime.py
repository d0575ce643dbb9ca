"""Where and how tensors are computed: the device, the autocast precision and the memory layout.

``precision="auto"`` uses bfloat16 autocast where the device runs it fast and
float32 elsewhere: on CUDA where torch reports bf16 support; on a CPU where
torch reports AVX512-BF16 or AMX-BF16 (``torch.cpu.get_capabilities()``).
A CPU without them emulates bf16: on an AVX-512 CPU without AVX512-BF16 the
paper net trains 2.3× *slower* in bf16 than in fp32 (channels-last, batch 50)
(docs/speed.md). Evaluation runs in the training precision.
"""

from __future__ import annotations

import platform
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import StnError

PRECISIONS = ("auto", "fp32", "bf16")
LAYOUTS = ("auto", "channels_last", "contiguous")


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


SPEED_FLAGS = ("amx_bf16", "avx512_bf16", "avx512_f", "avx2")  # the CPU features that set training speed here


def device_name(device: torch.device) -> str:
    """What the device is, for logs: a GPU's name, or the CPU's model name (Linux's /proc/cpuinfo, else what
    the platform reports), which of ``SPEED_FLAGS`` it has, and how many threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    except OSError:
        model = ""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    flags = " ".join(flag for flag in SPEED_FLAGS if caps.get(flag))
    return (f"{model or platform.processor() or 'an unnamed CPU'}{f' ({flags})' if flags else ''}, "
            f"{torch.get_num_threads()} threads")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 autocast runs fast on ``device`` (torch's own queries; see the module docstring)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``fp32`` or ``bf16``: ``auto`` per :func:`bf16_is_fast`; ``bf16`` where autocast cannot use it is refused."""
    if name not in PRECISIONS:
        raise StnError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if name == "bf16" and device.type not in ("cpu", "cuda"):
        raise StnError(f"--precision bf16 needs a CPU or CUDA device, not {device.type}")
    return name


def resolve_layout(name: str, device: torch.device) -> torch.memory_format:
    """The memory format of images and weights: ``auto`` is channels-last on CPU and CUDA (faster for
    these convolutions on both, see docs/speed.md), contiguous elsewhere."""
    if name not in LAYOUTS:
        raise StnError(f"--layout must be one of {', '.join(LAYOUTS)}, got {name!r}")
    channels_last = name == "channels_last" or (name == "auto" and device.type in ("cpu", "cuda"))
    return torch.channels_last if channels_last else torch.contiguous_format


def autocast_for(device: torch.device, precision: str):
    """bfloat16 autocast on ``device`` for precision ``bf16``, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def rng_state(device: torch.device) -> dict:
    """The RNG states a resumed run needs: the CPU's, and the CUDA devices' when training on CUDA."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state) -> None:
    """Restore :func:`rng_state` (or a bare CPU state saved by stn-gtsrb 0.1)."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class Runtime:
    """How a run computes: its device, autocast precision (``fp32``/``bf16``), memory layout and whether
    the model is compiled (torch.compile). :meth:`resolve` turns the user's options into one."""

    device: torch.device
    precision: str
    layout: torch.memory_format
    compile: bool = False

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto", layout: str = "auto",
                compile: bool = False) -> "Runtime":
        dev = resolve_device(device)
        return cls(dev, resolve_precision(precision, dev), resolve_layout(layout, dev), compile)

    def model(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
        """Move ``model`` to the device and layout; return it and the module to call (compiled or itself).
        Checkpoints save the first, whose state-dict keys compiling does not change."""
        model = model.to(self.device, memory_format=self.layout)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        return model, (torch.compile(model, dynamic=False) if self.compile else model)  # one graph per batch size

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ``(N, C, H, W)`` on the device in the run's layout."""
        return images.to(self.device).contiguous(memory_format=self.layout)

    def autocast(self):
        return autocast_for(self.device, self.precision)

    def describe(self) -> str:
        layout = "channels-last" if self.layout == torch.channels_last else "contiguous"
        return f"device {self.device}, {self.precision}, {layout}" + (", compiled" if self.compile else "")

"""One way to load and run a trained model: :func:`load_predictor` and the :class:`Predictor` it returns.

A source is a run directory (its final model; ``best``: its best.pt), a ``.pt`` checkpoint, a
``.safetensors`` weights file, an ``.onnx`` file, ``"pretrained"`` (the default pretrained model) or
``"pretrained:NAME"`` (the pretrained model NAME; :func:`pretrained_source` makes either). A
Predictor takes uint8 images ``(N, 3, S, S)`` at its ``image_size``, normalises them as its model
was trained, and gives class probabilities and each transformer's θ, through PyTorch (on a device,
in a precision) or through onnxruntime (on the CPU, in float32). ``predict``, ``eval``, ``serve``,
``robustness`` and committees all run models through it.

An option that does not apply to a back end is refused with a one-line error, never ignored:
``best`` needs a run directory, and an ONNX file runs on the CPU in float32 and has no feature maps
to hook (:meth:`Predictor.torch_model` names what needs a PyTorch model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .checkpoints import DEFAULT_PRETRAINED, load_checkpoint, pretrained_path, trained_from_checkpoint
from .classes import NUM_CLASSES
from .config import TrainConfig
from .data import Normalizer
from .errors import StnError
from .evaluation import EVAL_BATCH
from .models import ConvNet
from .onnx_export import OnnxClassifier
from .runtime import Runtime, autocast_for

PRETRAINED = "pretrained"  # a source naming the default pretrained model; "pretrained:NAME" names another
PYTORCH, ONNX = "pytorch", "onnx"

Tracer = Callable[[torch.Tensor], tuple[torch.Tensor, dict[int, torch.Tensor]]]
# uint8 images (N, 3, S, S) -> (probabilities (N, 43), {transformer position: theta (N, ...)}), float32 on the CPU


@dataclass
class Predictor:
    """A loaded model and how to run it (see the module docstring)."""

    tracer: Tracer  # one batch through the model
    config: TrainConfig
    network: ConvNet  # the PyTorch model (eval mode, on its device), or an ONNX file's structure alone
    name: str  # the file or directory name, or the pretrained source ("pretrained", "pretrained:NAME")
    kind: str  # PYTORCH or ONNX
    normalizer: Normalizer | None = None  # PyTorch back end
    precision: str = "fp32"
    epoch: int | None = None
    metrics: dict | None = None  # the last epoch's log record (not kept in ONNX files)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def trace(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """uint8 ``images`` ``(N, 3, S, S)`` -> (probabilities ``(N, 43)``, {position: theta ``(N, ...)``}),
        float32 on the CPU, in batches of ``EVAL_BATCH``."""
        parts = [self.tracer(images[i:i + EVAL_BATCH]) for i in range(0, len(images), EVAL_BATCH)]
        if not parts:
            return torch.empty(0, NUM_CLASSES), {}
        return (torch.cat([p for p, _ in parts]),
                {position: torch.cat([thetas[position] for _, thetas in parts]) for position in parts[0][1]})

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, 43)`` of uint8 ``images``."""
        return self.trace(images)[0]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class ids ``(N,)`` of uint8 ``images``."""
        return self.probabilities(images).argmax(1)

    def torch_model(self, purpose: str) -> tuple[ConvNet, Normalizer]:
        """(the PyTorch model, its normaliser); StnError naming ``purpose`` for an ONNX file."""
        if self.kind != PYTORCH:
            raise StnError(f"{purpose} needs a PyTorch model (a run directory, .pt or .safetensors), "
                           f"not the ONNX file {self.name}")
        return self.network, self.normalizer

    def info(self) -> dict:
        """JSON-ready description: config, parameter count, recorded accuracy (percent, per split)."""
        metrics = self.metrics or {}
        return {"name": self.name, "kind": self.kind, "image_size": self.image_size,
                "parameters": sum(p.numel() for p in self.network.parameters()),
                "transformers": sorted(int(p) for p in self.network.transformers),
                "epoch": self.epoch, "metrics": self.metrics,
                "accuracy": {split: metrics[f"{split}_acc"] for split in ("val", "test") if f"{split}_acc" in metrics},
                "config": self.config.to_dict()}


def torch_tracer(model: ConvNet, normalizer: Normalizer, precision: str,
                 layout: torch.memory_format = torch.contiguous_format) -> Tracer:
    """The tracer of a PyTorch model in eval mode, its normaliser, an autocast precision and the memory
    layout of the images it is given (the model's own)."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def trace(images: torch.Tensor):
        x = normalizer(images.to(device)).contiguous(memory_format=layout)  # in float32, as training normalised
        with autocast_for(device, precision):
            logits, thetas, _ = model.trace(x)
        return logits.float().softmax(1).cpu(), {p: theta.float().cpu() for p, theta in thetas.items()}

    return trace


def pretrained_source(name: str = DEFAULT_PRETRAINED) -> str:
    """The source naming the pretrained model ``name``."""
    return PRETRAINED if name == DEFAULT_PRETRAINED else f"{PRETRAINED}:{name}"


def pretrained_name(source: Path | str) -> str | None:
    """The pretrained model a source names, or None for a file or directory."""
    text = str(source)
    if text == PRETRAINED:
        return DEFAULT_PRETRAINED
    return text[len(PRETRAINED) + 1:] if text.startswith(PRETRAINED + ":") else None


def source_path(source: Path | str) -> Path:
    """The file or directory a source names (a pretrained model's: its weights file)."""
    name = pretrained_name(source)
    return pretrained_path(name) if name else Path(source)


def load_predictor(source: Path | str, *, best: bool = False, precision: str | None = "fp32",
                   device: str = "cpu") -> Predictor:
    """A Predictor of ``source`` (see the module docstring); StnError for a source or option that does not fit.
    ``precision`` None: the one the model's recorded metrics were measured in (else fp32)."""
    path = source_path(source)
    name = str(source) if pretrained_name(source) else path.name
    if path.suffix == ".onnx":
        if best:
            raise StnError("--best picks a checkpoint in a run directory, not an ONNX file")
        if precision not in ("fp32", "auto", None):
            raise StnError(f"an ONNX file runs in float32 (onnxruntime), not --precision {precision}")
        if device not in ("cpu", "auto"):
            raise StnError(f"an ONNX file runs on the CPU (onnxruntime), not on --device {device}")
        classifier = OnnxClassifier(path)
        return Predictor(classifier.trace, classifier.config, classifier.config.network(), name, ONNX)
    if best and pretrained_name(source):
        raise StnError("--best picks a checkpoint in a run directory, not a pretrained model")
    checkpoint = load_checkpoint(path, best)
    model, cfg, normalizer = trained_from_checkpoint(checkpoint, str(path), device)
    runtime = Runtime.resolve(device, precision or checkpoint["metrics"].get("precision", "fp32"))
    model, _ = runtime.model(model)
    return Predictor(torch_tracer(model, normalizer, runtime.precision, runtime.layout), cfg, model, name, PYTORCH,
                     normalizer, runtime.precision, checkpoint["epoch"], checkpoint["metrics"])

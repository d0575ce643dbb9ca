"""One uploaded image through a model, with what its transformers see: the engine behind ``stn-gtsrb serve``.

A request's image (any format Pillow reads, any size, at most ``max_pixels``
pixels) is resized to the model's input size as ``predict`` resizes it, then
distorted as ``robustness`` distorts test images (uint8, before the model's own
normalisation): its content turned by ``rotation`` degrees (clockwise on screen),
drawn at ``scale`` times its size and moved by ``shift_x``, ``shift_y`` of the
side (right and down). The model gives the class probabilities and, for each
transformer, θ (its own, in transformer.py's convention for its family) and the
sampled region on the input, as ``plot`` draws it (visualize.py's Region: the
composed θ where the chain composes, its four corners and its warped outline in
input pixels; corners top-left, top-right, bottom-right, bottom-left).

A model is a run directory, a ``.pt`` checkpoint or a ``.safetensors`` weights
file (run by PyTorch), or an ``.onnx`` file (run by onnxruntime; its graph
outputs every transformer's θ, so it is shown alike). Work is split in three
steps so that a server can batch the middle one: :func:`prepare` (decode and
distort one image), :meth:`Served.trace` (a batch through the model) and
:func:`describe` (one image's answer as JSON-ready data).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from .checkpoints import load_checkpoint, trained_from_checkpoint
from .config import TrainConfig
from .data import decode_resized
from .errors import StnError
from .geometry import content_thetas
from .models import ConvNet
from .onnx_export import OnnxClassifier
from .predict import top_classes, top_entries
from .robustness import LIMITS, resample
from .transformer import FRAME_CORNERS, OUTLINE_SAMPLES, outline
from .visualize import DOT_COLOURS, enlarge, image_regions, to_pixels

ROTATION = (-LIMITS["rotation"][1], LIMITS["rotation"][1])  # degrees
SCALE = LIMITS["scale"]  # content size factor
SHIFT = (-LIMITS["shift"][1], LIMITS["shift"][1])  # fraction of the side, per axis
MAX_UPLOAD_MB, MAX_MEGAPIXELS = 10, 50  # a server's default limits on a request body and an image's pixels
MAX_PIXELS = MAX_MEGAPIXELS * 10**6  # checked on the image's header, so a decompression bomb is refused
MAX_BATCH = 16  # a server's default limit on the requests run in one forward pass

Tracer = Callable[[torch.Tensor], tuple[torch.Tensor, dict[int, torch.Tensor]]]
# uint8 images (N, 3, S, S) -> (probabilities (N, 43), {transformer position: theta (N, ...)})


class ImageTooLarge(StnError):
    """An upload of more pixels than allowed (a decompression bomb, or just too big)."""


@dataclass(frozen=True)
class Distortion:
    """A test-time distortion of one image (see the module docstring); the identity by default."""

    rotation: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    def check(self) -> "Distortion":
        """``self`` if every value is finite and in range; else StnError naming the first that is not."""
        for name, (low, high) in (("rotation", ROTATION), ("scale", SCALE), ("shift_x", SHIFT), ("shift_y", SHIFT)):
            value = getattr(self, name)
            if not low <= value <= high:  # NaN fails both comparisons
                raise StnError(f"{name} must lie in [{low:g}, {high:g}], got {value}")
        return self

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``images`` ``(N, 3, S, S)`` distorted (uint8, same shape); the identity returns them as they are."""
        if self == Distortion():
            return images
        one = torch.ones(len(images))
        theta = content_thetas(one * self.rotation, one * self.scale, one * math.hypot(self.shift_x, self.shift_y),
                               one * math.atan2(self.shift_y, self.shift_x))
        return resample(images, theta)


@dataclass
class Served:
    """A loaded model: its tracer, config, and what is known of it (for ``GET /api/model``)."""

    trace: Tracer
    config: TrainConfig
    network: ConvNet  # the model's structure: its parameter count and the transformers its regions go through
    name: str  # the file or directory name, or "pretrained"
    kind: str  # "pytorch" or "onnx"
    epoch: int | None = None
    metrics: dict | None = None  # the last epoch's log record (not kept in ONNX files)

    def info(self) -> dict:
        """JSON-ready description: config, parameter count, recorded accuracy (percent, per split)."""
        metrics = self.metrics or {}
        return {"name": self.name, "kind": self.kind, "image_size": self.config.image_size,
                "parameters": sum(p.numel() for p in self.network.parameters()),
                "transformers": sorted(int(p) for p in self.network.transformers),
                "epoch": self.epoch, "metrics": self.metrics,
                "accuracy": {split: metrics[f"{split}_acc"] for split in ("val", "test") if f"{split}_acc" in metrics},
                "config": self.config.to_dict()}


def torch_tracer(model, normalizer) -> Tracer:
    """The tracer of a PyTorch model in eval mode and its normaliser."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def trace(images: torch.Tensor):
        logits, thetas, _ = model.trace(normalizer(images.to(device)))
        return logits.float().softmax(1).cpu(), {p: theta.float().cpu() for p, theta in thetas.items()}

    return trace


def load_served(path: Path | str, name: str | None = None, device: str = "cpu", best: bool = False) -> Served:
    """A model to serve: an ``.onnx`` file, or anything ``load_trained`` takes; ``name`` overrides its shown name."""
    path = Path(path)
    name = name or path.name
    if path.suffix == ".onnx":
        if best:
            raise StnError("--best picks a checkpoint in a run directory, not an ONNX file")
        classifier = OnnxClassifier(path)
        return Served(classifier.trace, classifier.config, classifier.config.network(), name, "onnx")
    checkpoint = load_checkpoint(path, best)
    model, cfg, normalizer = trained_from_checkpoint(checkpoint, str(path), device)
    return Served(torch_tracer(model, normalizer), cfg, model, name, "pytorch", checkpoint["epoch"],
                  checkpoint["metrics"])


def decode(data: bytes, size: int, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Uploaded bytes -> uint8 ``(3, size, size)``; StnError with one line if they are no readable image."""
    if not data:
        raise StnError("the image is empty")
    try:
        array = decode_resized(io.BytesIO(data), size, max_pixels)
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"the image is too large: {str(error).splitlines()[0]}") from None
    except Image.UnidentifiedImageError:
        raise StnError("cannot read the image: not in a format Pillow reads") from None
    except (OSError, ValueError, SyntaxError) as error:
        reason = (str(error) or type(error).__name__).splitlines()[0]
        raise StnError(f"cannot read the image: {reason}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def prepare(data: bytes, size: int, distortion: Distortion, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Uploaded bytes -> the distorted model input, uint8 ``(3, size, size)``."""
    return distortion.apply(decode(data, size, max_pixels)[None])[0]


def png_data_url(image: torch.Tensor) -> str:
    """uint8 or 0..1 float ``(3, H, W)`` -> ``data:image/png;base64,...``."""
    buffer = io.BytesIO()
    enlarge(image, 1).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{channel:02x}" for channel in rgb)


def describe(image: torch.Tensor, probabilities: torch.Tensor, thetas: dict[int, torch.Tensor], network: ConvNet,
             distortion: Distortion, top_k: int = 5, view: bool = False) -> dict:
    """One image's answer: ``top`` (as ``predict --json``), the distortion, and per transformer (in order of
    position) its ``theta``, its ``region`` (the composed θ onto the input, or None where a thin-plate
    spline breaks the composition), its ``corners`` and ``outline`` (the border of its output frame,
    ``OUTLINE_SAMPLES`` points per side) in input pixels, and the colour ``plot`` draws it in; with
    ``view``, ``input`` and each transformer's ``view`` as PNG data URLs.

    image: the distorted uint8 input ``(3, S, S)``; probabilities ``(43,)``; thetas {position: theta of one
    image}; network: the model's structure (its transformers map the points).
    """
    size = image.shape[-1]
    regions = image_regions(network, {p: theta[None] for p, theta in thetas.items()})
    transformers = []
    for index, position in enumerate(sorted(thetas)):
        region = regions[position]
        matrix = region.matrix
        entry = {"position": position, "colour": hex_colour(DOT_COLOURS[index % len(DOT_COLOURS)]),
                 "theta": thetas[position].tolist(), "region": None if matrix is None else matrix[0].tolist(),
                 "corners": to_pixels(region.points(FRAME_CORNERS)[0], size).tolist(),
                 "outline": to_pixels(region.points(outline(OUTLINE_SAMPLES))[0], size).tolist()}
        if view:
            entry["view"] = png_data_url(region.view(image[None].float() / 255)[0])
        transformers.append(entry)
    answer = {"top": top_entries(top_classes(probabilities[None], top_k)[0]), "image_size": size,
              "distortion": asdict(distortion), "transformers": transformers}
    if view:
        answer["input"] = png_data_url(image)
    return answer

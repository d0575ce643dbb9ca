"""One uploaded image through a model, with what its transformers see: the engine behind ``stn-gtsrb serve``.

A request's image (any format Pillow reads, any size, at most ``max_pixels``
pixels) is resized to the model's input size as ``predict`` resizes it, then
distorted as ``robustness`` distorts test images (uint8, before the model's own
normalisation): its content turned by ``rotation`` degrees (clockwise on screen),
drawn at ``scale`` times its size and moved by ``shift_x``, ``shift_y`` of the
side (right and down). The model gives the class probabilities and, for each
transformer, θ (its own, in its family's convention, families.py) and the
sampled region on the input, as ``plot`` draws it (visualize.py's Region: the
composed θ where the chain composes, its four corners and its warped outline in
input pixels; corners top-left, top-right, bottom-right, bottom-left).

A model is a :class:`predictor.Predictor` (PyTorch or onnxruntime; an ONNX
graph outputs every transformer's θ, so it is shown alike). Work is split in
three steps so that a server can batch the middle one: :func:`prepare` (decode
and distort one image), :meth:`Predictor.trace` (a batch through the model) and
:func:`describe` (one image's answer as JSON-ready data).
"""

from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from .data import decode_resized
from .errors import StnError
from .geometry import FRAME_CORNERS, OUTLINE_SAMPLES, moved_content_thetas, outline
from .models import ConvNet
from .predict import top_classes, top_entries
from .robustness import LIMITS, resample
from .visualize import DOT_COLOURS, enlarge, image_regions, to_pixels

ROTATION = (-LIMITS["rotation"][1], LIMITS["rotation"][1])  # degrees
SCALE = LIMITS["scale"]  # content size factor
SHIFT = (-LIMITS["shift"][1], LIMITS["shift"][1])  # fraction of the side, per axis
MAX_UPLOAD_MB, MAX_MEGAPIXELS = 10, 50  # a server's default limits on a request body and an image's pixels
MAX_PIXELS = MAX_MEGAPIXELS * 10**6  # checked on the image's header, so a decompression bomb is refused
MAX_BATCH = 16  # a server's default limit on the requests run in one forward pass
STATIC = Path(__file__).parent / "static"  # the page's files, shared by serve and export --web
MAX_ACTIVE = 64  # a server's default limit on requests in progress (reading, decoding, waiting); beyond: 503

class ImageTooLarge(StnError):
    """An upload of more pixels than allowed (a decompression bomb, or just too big)."""


@dataclass(frozen=True)
class Distortion:
    """A test-time distortion of one image (see the module docstring); the identity by default."""

    rotation: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    def __post_init__(self) -> None:
        """StnError naming the first value that is not finite and in range."""
        for name, (low, high) in (("rotation", ROTATION), ("scale", SCALE), ("shift_x", SHIFT), ("shift_y", SHIFT)):
            value = getattr(self, name)
            if not low <= value <= high:  # NaN fails both comparisons
                raise StnError(f"{name} must lie in [{low:g}, {high:g}], got {value}")

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``images`` ``(N, 3, S, S)`` distorted (uint8, same shape); the identity returns them as they are."""
        if self == Distortion():
            return images
        return resample(images, self.thetas(len(images)))

    def thetas(self, n: int) -> torch.Tensor:
        """Its sampling thetas ``(n, 2, 3)``: :func:`geometry.moved_content_thetas`."""
        one = torch.ones(n)
        return moved_content_thetas(one * self.rotation, one * self.scale,
                                    2 * torch.tensor([[self.shift_x, self.shift_y]]).expand(n, 2))


def page(backend: str, footer: str) -> str:
    """The page (static/index.html) with its back end's script tags and its footer put in."""
    return (STATIC / "index.html").read_text().replace("<!-- backend -->", backend).replace("<!-- footer -->", footer)


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


def transformer_entries(network: ConvNet, thetas: dict[int, torch.Tensor], size: int,
                        image: torch.Tensor | None = None) -> list[dict]:
    """Per transformer of one image (in order of position): its ``theta``, its ``region`` (the composed θ
    onto the input, or None where a thin-plate spline breaks the composition), its ``corners`` and
    ``outline`` (the border of its output frame, ``OUTLINE_SAMPLES`` points per side) in pixels of the
    ``size``-pixel input, and the colour ``plot`` draws it in; with the uint8 ``image`` ``(3, S, S)``, each
    transformer's ``view`` as a PNG data URL. thetas: {position: theta of the image}."""
    regions = image_regions(network, {p: theta[None] for p, theta in thetas.items()})
    entries = []
    for index, position in enumerate(sorted(thetas)):
        region = regions[position]
        matrix = region.matrix
        entry = {"position": position, "colour": hex_colour(DOT_COLOURS[index % len(DOT_COLOURS)]),
                 "theta": thetas[position].tolist(), "region": None if matrix is None else matrix[0].tolist(),
                 "corners": to_pixels(region.points(FRAME_CORNERS)[0], size).tolist(),
                 "outline": to_pixels(region.points(outline(OUTLINE_SAMPLES))[0], size).tolist()}
        if image is not None:
            entry["view"] = png_data_url(region.view(image[None].float() / 255)[0])
        entries.append(entry)
    return entries


def describe(image: torch.Tensor, probabilities: torch.Tensor, thetas: dict[int, torch.Tensor], network: ConvNet,
             distortion: Distortion, top_k: int = 5, view: bool = False) -> dict:
    """One image's answer: ``top`` (as ``predict --json``), the distortion, ``transformers``
    (:func:`transformer_entries`, each with its ``view`` if ``view``) and, with ``view``, the ``input``
    as a PNG data URL.

    image: the distorted uint8 input ``(3, S, S)``; probabilities ``(43,)``; thetas {position: theta of one
    image}; network: the model's structure (its transformers map the points).
    """
    transformers = transformer_entries(network, thetas, image.shape[-1], image if view else None)
    answer = {"top": top_entries(top_classes(probabilities[None], top_k)[0]), "image_size": image.shape[-1],
              "distortion": asdict(distortion), "transformers": transformers}
    if view:
        answer["input"] = png_data_url(image)
    return answer

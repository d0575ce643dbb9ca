"""Deployment: a trained model as one ONNX graph, and classifying with it through onnxruntime.

The graph takes float32 images ``(N, 3, S, S)``, RGB values 0–255, N dynamic,
and holds the whole pipeline: global normalisation, local contrast
normalisation, the network and its transformers. Output 0 is ``logits``
``(N, 43)``; then ``theta<p>`` for each transformer position p, shaped as its
family's theta (families.py): ``(N, 2, 3)`` affine, ``(N, 3, 3)``
projective, ``(N, K², 2)`` thin-plate spline.

Opset 17, with each transformer's sampling grid built in the graph and sampled
by GridSample (opset 16): from an affine θ by a matrix product
(the affine family's ``onnx_grid``, ``F.affine_grid`` with ``align_corners=False``
to 1e-6; each family gives the grid form the export traces), from a homography by a matrix product and a division,
from a spline's control points by a product with its constant weights. Why not
AffineGrid: ONNX has it only from opset 20, and the TorchScript exporter used
here (it needs no package beyond torch and onnx) has no AffineGrid below 20;
GridSample at opset 16 and the matrix product run on every onnxruntime CPU
build that supports opset 17. The file's metadata holds the training config,
so ``predict -m FILE.onnx`` knows the image size and that it is one of ours.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .data import LOCAL_KERNEL, Normalizer
from .errors import StnError
from .fileio import atomic_write
from .models import ConvNet
from .normalization import contrastive_normalize

OPSET = 17
FORMAT_KEY, FORMAT = "stn_gtsrb_format", "1"
INPUT = "images"


class Deployed(nn.Module):
    """uint8-range float images ``(N, 3, S, S)`` -> (logits, theta per transformer), normalisation included."""

    def __init__(self, model: ConvNet, normalizer: Normalizer):
        super().__init__()
        self.model = copy.deepcopy(model).eval().float()
        shape = (1, -1, 1, 1) if normalizer.mean.dim() else ()
        self.register_buffer("mean", normalizer.mean.float().reshape(shape))
        self.register_buffer("std", normalizer.std.float().reshape(shape))
        self.local, self.legacy = normalizer.local, normalizer.legacy

    def forward(self, images: torch.Tensor):
        x = (images / 255 - self.mean) / self.std
        if self.local:
            x = contrastive_normalize(x, LOCAL_KERNEL, self.legacy)
        logits, thetas, _ = self.model.trace(x)
        return (logits, *(thetas[p] for p in sorted(thetas)))


def export_onnx(model: ConvNet, cfg: TrainConfig, normalizer: Normalizer, path: Path | str) -> Path:
    """Write ``model`` with its normaliser as an ONNX file (atomically); see the module docstring."""
    deployed = Deployed(model.cpu(), normalizer)
    positions = sorted(int(p) for p in model.transformers)
    outputs = ["logits", *(f"theta{p}" for p in positions)]
    example = torch.zeros(2, 3, cfg.image_size, cfg.image_size)

    def write(temp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(deployed, (example,), temp, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                              output_names=outputs, dynamic_axes={name: {0: "batch"} for name in [INPUT, *outputs]})
        _stamp(temp, cfg)

    return atomic_write(path, write)


def _stamp(path: str, cfg: TrainConfig) -> None:
    """Add our format marker and the training config to the ONNX file's metadata."""
    import onnx  # the onnx extra

    graph = onnx.load(path)
    for key, value in ((FORMAT_KEY, FORMAT), ("config", json.dumps(cfg.to_dict()))):
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, path)


class OnnxClassifier:
    """An exported model run by onnxruntime: ``probabilities(uint8 images (N, 3, S, S))`` -> ``(N, 43)``."""

    def __init__(self, path: Path | str):
        try:
            import onnxruntime
        except ImportError:
            raise StnError("ONNX models need onnxruntime: pip install 'stn-gtsrb[onnx]'") from None
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own kinds for a missing or malformed file
            raise StnError(f"{path} is not a readable ONNX model: {str(error).splitlines()[0]}") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        inputs = self.session.get_inputs()
        if metadata.get(FORMAT_KEY) != FORMAT or "config" not in metadata:
            raise StnError(f"{path} is not a stn-gtsrb ONNX model (export one with 'stn-gtsrb export RUN -o F.onnx')")
        if len(inputs) != 1 or inputs[0].name != INPUT or len(inputs[0].shape) != 4:
            raise StnError(f"{path} lacks the input {INPUT!r} of shape (N, 3, S, S) that predict feeds")
        self.config = TrainConfig.from_saved(json.loads(metadata["config"]))

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return self.trace(images)[0]

    def trace(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """uint8 images ``(N, 3, S, S)`` -> (probabilities ``(N, 43)``, {position: theta ``(N, 2, 3)``})."""
        names = [output.name for output in self.session.get_outputs()]
        outputs = dict(zip(names, self.session.run(names, {INPUT: images.float().numpy()}), strict=True))
        thetas = {int(name[len("theta"):]): torch.from_numpy(value) for name, value in outputs.items()
                  if name.startswith("theta")}
        return torch.from_numpy(outputs["logits"]).softmax(1), thetas

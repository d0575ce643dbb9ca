"""``stn-gtsrb export --web DIR``: the model in any browser, with no server: a static site running ONNX in WebAssembly.

The site (open ``index.html`` through any static web server)::

    index.html          the serve page (static/index.html) with the in-browser back end
    static/             the page's CSS, icon and JavaScript: app.js (the page, shared with serve) and
                        local.js (the back end: the model run by onnxruntime-web's wasm build)
    static/ort/         with ``--ort DIR``: onnxruntime-web's wasm files, copied from DIR (an npm
                        package's ``dist``); else the page loads them from a public CDN, pinned to
                        ``ORT_VERSION``, the script checked by its subresource-integrity hash
    model.onnx          :class:`WebGraph`: distortion, normalisation, the network and its regions
    model.json          class names, the model's record, the graph's inputs and outputs, the examples
    examples/*.png      test images with their classes (from the prepared data cache, when there is one)

One definition serves the server and the page: the graph distorts the input as ``serve`` does
(inference.Distortion: its content turned, scaled and shifted, edge pixels replicated, rounded to
uint8 values), normalises it as the model was trained, and draws each transformer's region as
``serve`` does (visualize.Region: corners and outline in input pixels, and the view). The page only
decodes the image into the model's input size and draws the answer. The wasm back end is used, not
WebGPU, whose GridSample has given wrong results. Regions are drawn for transformers whose maps
compose (affine, projective); a thin-plate-spline model is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .archives import DataLocation
from .classes import CLASS_NAMES
from .data import load_tensors
from .errors import StnError
from .fileio import atomic_write, write_text
from .geometry import FRAME_CORNERS, OUTLINE_SAMPLES, moved_content_thetas, outline, pixel_centres, sample, warp
from .inference import hex_colour, page
from .onnx_export import OPSET, Deployed
from .predictor import Predictor
from .visualize import DOT_COLOURS, image_regions, to_pixels

ORT_VERSION = "1.23.0"  # onnxruntime-web, from the npm registry
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")  # its wasm build
ORT_SRI = "sha384-Uvpo3KshAzID7bmsY+Pz2/tiNWwl6Y5XeDTPpktDx73e0o/1TdssZDScTVHxpLYv"  # of dist/ort.wasm.min.js
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
STATIC = Path(__file__).parent / "static"
PAGE_FILES = ("app.js", "local.js", "style.css", "favicon.svg")
EXAMPLES = 12  # test images shipped with the site
INPUTS = ("images", "distortion")


class WebGraph(nn.Module):
    """``images`` ``(N, 3, S, S)`` (RGB values 0-255, the model's input size) and ``distortion`` ``(N, 4)``
    (rotation in degrees clockwise, content scale, shift right and down as fractions of the side) ->
    ``probabilities`` ``(N, 43)``, ``input`` (the distorted images, 0-255), then per transformer p:
    ``corners<p>`` ``(N, 4, 2)`` and ``outline<p>`` ``(N, 4·16, 2)`` in input pixels, and ``view<p>``
    ``(N, 3, S, S)`` (0-255): what it looks at."""

    def __init__(self, model: nn.Module, normalizer, size: int):
        super().__init__()
        self.deployed = Deployed(model, normalizer)
        self.size = size
        self.positions = sorted(int(p) for p in self.deployed.model.transformers)
        spline = [t.family.name for t in self.deployed.model.transformers.values() if not t.family.composes]
        if spline:
            raise StnError(f"export --web draws the regions of transformers whose maps compose (affine, "
                           f"projective); this model has a {spline[0]} transformer")
        self.register_buffer("corners", FRAME_CORNERS.clone())
        self.register_buffer("outline", outline(OUTLINE_SAMPLES))
        self.register_buffer("centres", pixel_centres(size, size))

    def forward(self, images: torch.Tensor, distortion: torch.Tensor):
        theta = moved_content_thetas(distortion[:, 0], distortion[:, 1], 2 * distortion[:, 2:])
        distorted = warp(images, theta, padding="border").round().clamp(0, 255)  # as robustness.resample
        logits, *thetas = self.deployed(distorted)
        outputs = [logits.softmax(1), distorted]
        regions = image_regions(self.deployed.model, dict(zip(self.positions, thetas, strict=True)))
        for position in self.positions:
            region = regions[position]
            grid = region.points(self.centres).view(-1, self.size, self.size, 2)
            outputs += [to_pixels(region.points(self.corners), self.size),
                        to_pixels(region.points(self.outline), self.size), sample(distorted / 255, grid) * 255]
        return tuple(outputs)

    def output_names(self) -> list[str]:
        kinds = ("corners", "outline", "view")
        return ["probabilities", "input", *(f"{kind}{p}" for p in self.positions for kind in kinds)]


def export_graph(predictor: Predictor, path: Path) -> list[str]:
    """Write the predictor's :class:`WebGraph` as ONNX (atomically); return its output names."""
    model, normalizer = predictor.torch_model("export --web")
    size = predictor.image_size
    graph = WebGraph(model.cpu(), normalizer, size).eval()
    outputs = graph.output_names()
    example = (torch.zeros(2, 3, size, size), torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 2))

    def write(temp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(graph, example, temp, dynamo=False, opset_version=OPSET, input_names=list(INPUTS),
                              output_names=outputs,
                              dynamic_axes={name: {0: "batch"} for name in [*INPUTS, *outputs]})

    atomic_write(path, write)
    return outputs


def ort_integrity(path: Path) -> str:
    """The subresource-integrity hash (sha384) of a file."""
    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode("ascii")


def write_examples(folder: Path, size: int, location: DataLocation | None) -> list[dict]:
    """Save ``EXAMPLES`` test images, spread over the test set, as PNGs under ``folder/examples``; their
    entries for model.json. None without a prepared data cache."""
    try:
        test = load_tensors(size, location)["test"]
    except StnError:
        return []
    (folder / "examples").mkdir()
    entries = []
    for index in torch.linspace(0, len(test.labels) - 1, EXAMPLES).long().tolist():
        label = int(test.labels[index])
        name = f"examples/{index:05d}.png"
        Image.fromarray(test.images[index].permute(1, 2, 0).numpy()).save(folder / name)
        entries.append({"file": name, "index": index, "class": label, "name": CLASS_NAMES[label]})
    return entries


def site_page(ort: Path | None) -> str:
    """index.html: the serve page with the in-browser back end, onnxruntime-web local (``ort``) or from the CDN."""
    if ort is None:
        script = f'<script src="{ORT_CDN}ort.wasm.min.js" integrity="{ORT_SRI}" crossorigin="anonymous"></script>'
    else:
        script = '<script src="static/ort/ort.wasm.min.js"></script>'
    base = ORT_CDN if ort is None else "static/ort/"
    backend = f'{script}\n  <script>window.STN_ORT_BASE = "{base}";</script>\n  <script src="static/local.js"></script>'
    return page(backend, f"runs in this browser with onnxruntime-web {ORT_VERSION} (WebAssembly): no server")


def export_site(predictor: Predictor, folder: Path | str, ort: Path | str | None = None, overwrite: bool = False,
                location: DataLocation | None = None) -> dict:
    """Write the site for ``predictor`` into ``folder`` (module docstring), built aside and moved into place;
    ``ort``: a local onnxruntime-web ``dist`` folder to copy. Returns what it wrote: the folder, the
    number of files, the site's and the model's bytes, the number of examples."""
    folder, ort = Path(folder), Path(ort) if ort is not None else None
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise StnError(f"{folder} exists and is not empty: use --overwrite to replace it")
    if ort is not None:
        missing = [name for name in ORT_FILES if not (ort / name).is_file()]
        if missing:
            raise StnError(f"--ort {ort} lacks {', '.join(missing)}: give onnxruntime-web {ORT_VERSION}'s dist folder")
    building = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    (building / "static").mkdir(parents=True)
    try:
        for name in PAGE_FILES:
            shutil.copyfile(STATIC / name, building / "static" / name)
        if ort is not None:
            (building / "static" / "ort").mkdir()
            for name in ORT_FILES:
                shutil.copyfile(ort / name, building / "static" / "ort" / name)
        write_text(building / "index.html", site_page(ort))
        outputs = export_graph(predictor, building / "model.onnx")
        examples = write_examples(building, predictor.image_size, location)
        positions = sorted(int(p) for p in predictor.network.transformers)
        record = {"name": predictor.name, "image_size": predictor.image_size, "classes": list(CLASS_NAMES),
                  "colours": [hex_colour(DOT_COLOURS[i % len(DOT_COLOURS)]) for i in range(len(positions))],
                  "positions": positions,
                  "inputs": list(INPUTS), "outputs": outputs, "examples": examples,
                  "onnxruntime_web": {"version": ORT_VERSION, "from": "static/ort/" if ort else ORT_CDN},
                  "info": predictor.info()}
        write_text(building / "model.json", json.dumps(record, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
        building.rename(folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    files = [path for path in folder.rglob("*") if path.is_file()]
    return {"folder": folder, "files": len(files), "bytes": sum(path.stat().st_size for path in files),
            "model_bytes": (folder / "model.onnx").stat().st_size, "examples": len(examples)}

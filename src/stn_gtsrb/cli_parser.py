"""The ``stn-gtsrb`` command line's options: one argparse parser, its subcommands and their options.

The training options are generated from TrainConfig's fields (config.py), so
the CLI, config.json and grid files share their names. cli.py runs the commands.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from . import __version__
from .archives import DATA_DIR_ENV, SOURCE_ENV
from .checkpoints import DEFAULT_PRETRAINED, PRETRAINED
from .config import TrainConfig
from .inference import MAX_ACTIVE, MAX_BATCH, MAX_MEGAPIXELS, MAX_UPLOAD_MB
from .models import list_models, model_spec
from .recipes import list_recipes
from .robustness import DEFAULT_LEVELS, UNITS
from .runtime import LAYOUTS, PRECISIONS
from .web_export import ORT_VERSION

DESCRIPTION = "Spatial transformer networks on GTSRB: train, benchmark, explain."


SHORT_FLAGS = {"n": ("-n",), "epochs": ("-e",), "batch_size": ("-b",), "seed": ("-s",)}  # as main.lua


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"where downloads and caches go (default: ${DATA_DIR_ENV} or the user cache dir)")
    parser.add_argument("--source", default=None,
                        help=f"base URL or local folder holding the three archives "
                             f"(default: ${SOURCE_ENV} or the official URL)")


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")


def _add_runtime_options(parser: argparse.ArgumentParser, precision_default: str | None = "auto") -> None:
    _add_device(parser)
    parser.add_argument("--precision", default=precision_default,
                        help=f"{', '.join(PRECISIONS)}: autocast precision, auto = bf16 where the device runs it "
                             f"fast (default: {precision_default or 'the one the model was trained in'})")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field: bools become --x/--no-x flags (every switch is named for what it turns
    on), the rest typed values.

    Only the options given appear in the parsed namespace (default SUPPRESS), so that they
    can override a --recipe; the others take the recipe's values, then TrainConfig's defaults.
    """
    group = parser.add_argument_group("training configuration")
    group.add_argument("--recipe", default=None, metavar="NAME_OR_PATH",
                       help=f"start from a recipe: {', '.join(list_recipes())}, or a TOML file of these options; "
                            "options given here override it")
    group.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="start from a run's config.json (rerun that run: options it predates take the values it "
                            "was trained with); options given here override it")
    for f in dataclasses.fields(TrainConfig):
        flags = SHORT_FLAGS.get(f.name, ()) + ("--" + f.name.replace("_", "-"),)
        help_text = f"{f.metadata['help']} (default: {f.default!r})"
        if f.name == "net":
            help_text += "; registered: " + ", ".join(model_spec(name).summary() for name in list_models())
        if isinstance(f.default, bool):
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(*flags, type=type(f.default), default=argparse.SUPPRESS, metavar=f.name.upper(),
                               help=help_text)


BEST_HELP = "with a run directory: its best.pt (the epoch of best validation accuracy) instead of its final model"


def _add_pretrained(parser, what: str) -> None:
    parser.add_argument("--pretrained", nargs="?", const=DEFAULT_PRETRAINED, default=None, metavar="NAME",
                        help=f"{what}: NAME, one of {', '.join(PRETRAINED)} (alone: {DEFAULT_PRETRAINED})")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, nargs="?", default=None,
                        help="a run directory (its final model), a .pt checkpoint or a .safetensors weights file")
    _add_pretrained(parser, "use a model shipped with the package")
    parser.add_argument("--best", action="store_true", help=BEST_HELP)


def _add_picture_options(parser: argparse.ArgumentParser, kind: str) -> None:
    _add_model_options(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, help=f"{kind} file to write")
    parser.add_argument("--scale", type=int, default=4, help="enlargement factor (default: 4)")
    _add_data_options(parser)


def _add_serve_parser(commands) -> None:
    se = commands.add_parser("serve", help="a local web page and JSON API: the model and its transformers at work")
    which = se.add_mutually_exclusive_group()
    which.add_argument("-m", "--model", type=Path, default=None,
                       help="a run directory (its final model), a .pt checkpoint, a .safetensors weights file or an "
                            ".onnx file (run with onnxruntime) (default: the model shipped with the package)")
    _add_pretrained(which, "a model shipped with the package (the default)")
    se.add_argument("--best", action="store_true", help=BEST_HELP)
    se.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: all interfaces)")
    se.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: a free one)")
    se.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB,
                    help="largest request body, MB (default: %(default)s)")
    se.add_argument("--max-megapixels", type=float, default=MAX_MEGAPIXELS,
                    help="largest image, in millions of pixels, checked before decoding (default: %(default)s)")
    se.add_argument("--max-batch", type=int, default=MAX_BATCH,
                    help="most concurrent requests run in one forward pass (default: %(default)s; 1: one at a time)")
    se.add_argument("--max-requests", type=int, default=MAX_ACTIVE,
                    help="most requests in progress at once; one beyond is answered 503 (default: %(default)s)")
    _add_device(se)
    _add_data_options(se)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stn-gtsrb", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"stn-gtsrb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="fetch, check and cache the GTSRB archives")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    for name, text in (("prepare", "fetch and verify the archives, build the tensor cache"),
                       ("info", "counts per split and class, image size, checksums, cache location"),
                       ("verify", "check the archives against their checksums")):
        sub = data_commands.add_parser(name, help=text)
        _add_data_options(sub)
        if name != "verify":
            sub.add_argument("--size", type=int, default=32, help="image side in pixels (default: 32)")
        if name == "info":
            sub.add_argument("--val-tracks", type=int, default=1, help="validation tracks per class (default: 1)")
            sub.add_argument("--val-seed", type=int, default=1, help="seed choosing them (default: 1)")
        if name == "prepare":
            sub.add_argument("--rebuild", action="store_true", help="rebuild the cache even if it is current")

    tr = commands.add_parser("train", help="train a network")
    tr.add_argument("-o", "--output", type=Path, default=Path("runs/default"),
                    help="run directory (default: runs/default)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="discard a run already in --output")
    tr.add_argument("--script", action="store_true",
                    help="no progress bars; print the final accuracy (%%) alone as last line: validation with --val, "
                         "else test")
    tr.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                    help="stop (as on SIGTERM) once process PID is no longer this one's parent; "
                         "the benchmark runner passes its own")
    _add_runtime_options(tr)
    tr.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="same as --precision bf16")
    tr.add_argument("--layout", default="auto",
                    help=f"{', '.join(LAYOUTS)}: memory layout, auto = channels-last on CPU and CUDA (default: auto)")
    tr.add_argument("--compile", action="store_true", help="torch.compile the model (see the README's speed table)")
    tr.add_argument("--download", action="store_true", help="download the archives if they are missing")
    tr.add_argument("--record-st", default=None, metavar="K|tenths",
                    help="every K steps of epoch 1, or after each tenth of it (as the original's animation), draw "
                         "fixed images through the transformers (run dir: st_frames/*.png, st_epoch1.gif)")
    _add_data_options(tr)
    _add_config_options(tr)

    ev = commands.add_parser("eval", help="accuracy of a saved model, or of a committee of models")
    ev.add_argument("checkpoints", type=Path, nargs="*", metavar="checkpoint",
                    help="a run directory (its final model), a .pt checkpoint or a .safetensors weights file; "
                         "several: their committee (probabilities averaged)")
    _add_pretrained(ev, "a model shipped with the package (with others: one more member)")
    ev.add_argument("--best", action="store_true", help=BEST_HELP)
    ev.add_argument("--tta", action="store_true", help="test-time augmentation: average each model's probabilities "
                                                       "over the image, 4 shifts of 5%% and scales 0.9 and 1.1")
    ev.add_argument("--split", default="test", help="train, val or test (default: test)")
    _add_runtime_options(ev, precision_default=None)
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_data_options(ev)

    pl = commands.add_parser("plot", help="input images with the transformers' sampled regions and outputs")
    _add_picture_options(pl, "PNG")
    pl.add_argument("--split", default="test", help="train, val or test (default: test)")
    pl.add_argument("--count", type=int, default=8, help="number of random images (default: 8)")
    pl.add_argument("--indices", type=lambda text: [int(i) for i in text.split(",")], default=None,
                    help="comma-separated image indices instead of random ones")
    pl.add_argument("--seed", type=int, default=0, help="seed for the random images (default: 0)")

    an = commands.add_parser("animate", help="GIF of the transformers along the 30 frames of one sign's track")
    _add_picture_options(an, "GIF")
    which = an.add_mutually_exclusive_group(required=True)
    which.add_argument("--track", type=int, help="global training track id (0 to 1306)")
    which.add_argument("--class", dest="class_id", type=int,
                       help="class id: its validation track (runs with --val) or its first track")
    which.add_argument("--training", action="store_true",
                       help="instead, the frames recorded in epoch 1 by train --record-st")
    an.add_argument("--stride", type=int, default=1, help="with --training: keep every N-th frame (default: 1)")
    an.add_argument("--frame-ms", type=int, default=150, help="milliseconds per frame (default: 150)")

    rp = commands.add_parser("report", help="training curves and confusion matrix of a run, as PNG")
    rp.add_argument("run", type=Path, help="a run directory (its final model)")
    rp.add_argument("--best", action="store_true", help=BEST_HELP)
    rp.add_argument("-o", "--output", type=Path, default=None, help="directory for the PNGs (default: the run)")
    _add_device(rp)
    _add_data_options(rp)

    pr = commands.add_parser("predict", help="classify image files (any format and size) with a trained model")
    pr.add_argument("images", nargs="+", type=Path, help="image files")
    which = pr.add_mutually_exclusive_group()
    which.add_argument("-m", "--model", type=Path, default=None,
                       help="a run directory (its final model), a .pt checkpoint, a .safetensors weights file or an "
                            ".onnx file (run with onnxruntime) (default: the model shipped with the package)")
    _add_pretrained(which, "a model shipped with the package (the default)")
    pr.add_argument("--best", action="store_true", help=BEST_HELP)
    pr.add_argument("--top-k", type=int, default=5, help="classes listed per image (default: 5)")
    pr.add_argument("--json", action="store_true", help="print the predictions as JSON")
    pr.add_argument("--plot", type=Path, default=None, help="PNG: each image with its transformers' sampled regions")
    _add_device(pr)

    ex = commands.add_parser("export", help="write a trained model as a .safetensors weights file, an ONNX graph, "
                                            "or a static web site that runs it in any browser")
    _add_model_options(ex)
    written = ex.add_mutually_exclusive_group(required=True)
    written.add_argument("-o", "--output", type=Path,
                         help="the file to write: .safetensors (weights) or .onnx (the whole pipeline, "
                              "for onnxruntime)")
    written.add_argument("--web", type=Path, metavar="DIR",
                         help="write a static site into DIR: the page, the model as ONNX run by onnxruntime-web "
                              "(WebAssembly), example images; open DIR/index.html through any static web server")
    ex.add_argument("--ort", type=Path, metavar="DIR",
                    help=f"with --web: copy onnxruntime-web's wasm build from DIR (an npm package's dist folder) "
                         f"instead of loading it from a CDN (version {ORT_VERSION})")
    ex.add_argument("--full-precision", action="store_true",
                    help=".safetensors: keep float32 parameters (default: float16)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing file (or the site in DIR)")
    _add_data_options(ex)

    ro = commands.add_parser("robustness", help="models side by side: accuracy under rotation, scale, shift and "
                                                "tilt, and track stability")
    ro.add_argument("models", nargs="*", help="run directories (their final models), .pt checkpoints or "
                                              ".safetensors weights files")
    _add_pretrained(ro, "also a model shipped with the package (first)")
    ro.add_argument("--best", action="store_true", help=BEST_HELP)
    ro.add_argument("-o", "--output", type=Path, required=True,
                    help="directory for robustness.json, robustness.md and robustness.png")
    ro.add_argument("--split", default="test", choices=("test", "val"),
                    help="score the test images, or the validation tracks that the models (all trained with --val "
                         "and the same --val-seed and --val-tracks) held out, for choosing among them (default: test)")
    ro.add_argument("--n", type=int, default=None, help="a seeded random subset of N images (default: all)")
    ro.add_argument("--seed", type=int, default=0, help="seed of the subset and of the distortions' draws "
                                                        "(default: 0)")
    ro.add_argument("--tracks", default=None, metavar="IDS",
                    help="comma-separated training track ids for track stability (default: the validation tracks "
                         "of the first model trained with --val)")
    for name, levels in DEFAULT_LEVELS.items():
        ro.add_argument(f"--{name}", default=",".join(f"{v:g}" for v in levels), metavar="LEVELS",
                        help=f"comma-separated {name} levels, {UNITS[name]} (default: %(default)s)")
    ro.add_argument("--overwrite", action="store_true", help="replace earlier results in --output")
    _add_device(ro)
    ro.add_argument("--download", action="store_true", help="download the archives if they are missing")
    _add_data_options(ro)

    _add_serve_parser(commands)

    be = commands.add_parser("bench", help="train and score every cell of a grid of options",
                             usage="stn-gtsrb bench GRID -o DIR [options]  |  stn-gtsrb bench table DIR")
    be.add_argument("target", nargs="+", metavar="GRID | table DIR",
                    help="a grid file (TOML) to run, or 'table DIR' to rebuild DIR/results.md")
    be.add_argument("-o", "--output", type=Path, help="output directory (with GRID)")
    be.add_argument("--engine", default="local", help="local (default) or ray")
    be.add_argument("--workers", type=int, default=1, help="local engine: cells run side by side")
    be.add_argument("--repeats", type=int, default=None, help="seeds per cell (overrides the grid file)")
    be.add_argument("--dry-run", action="store_true", help="list the cells and stop")
    be.add_argument("--extend", action="store_true", help="add this grid to a directory holding another's")
    be.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    be.add_argument("--address", default=None, help="ray engine: cluster address (default: start a local Ray)")
    be.add_argument("--cpus-per-trial", type=int, default=1, help="ray engine: CPUs (and threads) per cell")
    be.add_argument("--storage", default=None, help="ray engine: Tune storage path (default: DIR/ray)")
    be.add_argument("--sort", default="auto", help="table order: auto (val when the runs have a validation split, "
                                                   "else test), val, test, time or none")
    _add_runtime_options(be)
    _add_data_options(be)
    return parser

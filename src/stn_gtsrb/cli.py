"""The ``stn-gtsrb`` command line.

    stn-gtsrb data prepare|info|verify   fetch, check and cache the dataset
    stn-gtsrb train [options]            train a network (options: TrainConfig's fields)
    stn-gtsrb eval RUN | --pretrained    accuracy of a saved (or the shipped) model on a split
    stn-gtsrb plot|animate|report ...    pictures of what the transformers learn, training reports
    stn-gtsrb predict IMAGE... [-m RUN]  top-k classes of image files (default: the shipped model)
    stn-gtsrb export RUN -o F.safetensors  a trained model as a weights file
    stn-gtsrb bench GRID -o DIR          train and score every cell of a grid (table DIR: redo the table)

Every user error (StnError) prints one line ``stn-gtsrb: error: ...`` and
exits with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import torch

from . import __version__, predict, report, visualize
from .archives import (
    ARCHIVES,
    DATA_DIR_ENV,
    SOURCE_ENV,
    default_data_dir,
    expected_hashes,
    fetch_archives,
    resolve_source,
)
from .bench import bench
from .checkpoints import export, load_trained, pretrained_path
from .config import TrainConfig
from .data import NUM_CLASSES, cache_path, load_tensors, prepare, select_split
from .engines import stop_with_parent
from .errors import StnError
from .evaluation import evaluate
from .results import write_table
from .train import train

SHORT_FLAGS = {"n": ("-n",), "epochs": ("-e",), "batch_size": ("-b",), "seed": ("-s",)}  # as main.lua


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"where downloads and caches go (default: ${DATA_DIR_ENV} or the user cache dir)")
    parser.add_argument("--source", default=None,
                        help=f"base URL or local folder holding the three archives "
                             f"(default: ${SOURCE_ENV} or the official URL)")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field: bools become flags, the rest typed values."""
    group = parser.add_argument_group("training configuration")
    for f in dataclasses.fields(TrainConfig):
        flags = SHORT_FLAGS.get(f.name, ()) + ("--" + f.name.replace("_", "-"),)
        help_text = f.metadata["help"]
        if f.type == "bool" or isinstance(f.default, bool):
            group.add_argument(*flags, action="store_true", help=help_text)
        else:
            group.add_argument(*flags, type=type(f.default), default=f.default, metavar=f.name.upper(),
                               help=f"{help_text} (default: {f.default!r})")


BEST_HELP = "with a run directory: its best.pt (the epoch of best validation accuracy) instead of its final model"


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, nargs="?", default=None,
                        help="a run directory (its final model), a .pt checkpoint or a .safetensors weights file")
    parser.add_argument("--pretrained", action="store_true", help="use the model shipped with the package")
    parser.add_argument("--best", action="store_true", help=BEST_HELP)


def _model_path(args: argparse.Namespace) -> Path:
    """The checkpoint named on the command line, or the shipped weights with --pretrained."""
    if args.pretrained == (args.checkpoint is not None):
        raise StnError("give a checkpoint (run directory, .pt or .safetensors file) or --pretrained, one of the two")
    return pretrained_path() if args.pretrained else args.checkpoint


def _add_picture_options(parser: argparse.ArgumentParser, kind: str) -> None:
    _add_model_options(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, help=f"{kind} file to write")
    parser.add_argument("--scale", type=int, default=4, help="enlargement factor (default: 4)")
    _add_data_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stn-gtsrb", description=__doc__.split("\n")[0])
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
    tr.add_argument("--eval", action="store_true", help="only evaluate the run in --output (its final model) on the "
                                                         "test split")
    tr.add_argument("--script", action="store_true", help="print the final test accuracy (%%) alone as last line")
    tr.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                    help="stop (as on SIGTERM) once process PID is no longer this one's parent; "
                         "the benchmark runner passes its own")
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    tr.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    tr.add_argument("--download", action="store_true", help="download the archives if they are missing")
    tr.add_argument("--record-st", type=int, default=0, metavar="K",
                    help="every K steps of epoch 1, draw fixed images through the transformers "
                         "(run dir: st_frames/*.png, st_epoch1.gif)")
    _add_data_options(tr)
    _add_config_options(tr)

    ev = commands.add_parser("eval", help="accuracy of a saved model")
    _add_model_options(ev)
    ev.add_argument("--split", default="test", help="train, val or test (default: test)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
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
    rp.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _add_data_options(rp)

    pr = commands.add_parser("predict", help="classify image files (any format and size) with a trained model")
    pr.add_argument("images", nargs="+", type=Path, help="image files")
    pr.add_argument("-m", "--model", type=Path, default=None,
                    help="a run directory (its final model), a .pt checkpoint or a .safetensors weights file "
                         "(default: the model shipped with the package)")
    pr.add_argument("--best", action="store_true", help=BEST_HELP)
    pr.add_argument("--top-k", type=int, default=5, help="classes listed per image (default: 5)")
    pr.add_argument("--json", action="store_true", help="print the predictions as JSON")
    pr.add_argument("--plot", type=Path, default=None, help="PNG: each image with its transformers' sampled regions")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    ex = commands.add_parser("export", help="write a trained model as a .safetensors weights file")
    ex.add_argument("checkpoint", type=Path, help="a run directory (its final model) or a .pt checkpoint")
    ex.add_argument("--best", action="store_true", help=BEST_HELP)
    ex.add_argument("-o", "--output", type=Path, required=True, help="the .safetensors file to write")
    ex.add_argument("--full-precision", action="store_true", help="keep float32 parameters (default: float16)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing file")

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
    be.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _add_data_options(be)
    return parser


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def cmd_data(args: argparse.Namespace) -> None:
    if args.data_command == "verify":
        paths, hashes = fetch_archives(args.source, args.data_dir, download=False)
        for role, path in paths.items():
            print(f"ok  {path}  {hashes[ARCHIVES[role]]}")
        return
    if args.data_command == "prepare":
        path = prepare(args.size, args.data_dir, args.source, download=True, rebuild=args.rebuild)
        print(f"cache ready: {path}")
        return
    official = load_tensors(args.size, args.data_dir, args.source)
    data_dir = args.data_dir or default_data_dir()
    source = resolve_source(args.source, data_dir)
    print(json.dumps({"source": source, "cache": str(cache_path(data_dir, args.size)), "image_size": args.size,
                      "archives": expected_hashes(source, data_dir)}, indent=2))
    splits = {name: select_split(official, name, args.val_seed, args.val_tracks)
              for name in ("train", "val", "train_without_val", "test")}
    print("split               images  tracks")
    for name, split in splits.items():
        print(f"{name:<18} {len(split):>7}  {len(split.tracks.unique()) if name != 'test' else '-':>6}")
    print("class " + " ".join(f"{c:>5}" for c in ("train", "test")))
    for c in range(NUM_CLASSES):
        print(f"{c:>5} " + " ".join(f"{int((splits[s].labels == c).sum()):>5}" for s in ("train", "test")))


def cmd_train(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends the run as Ctrl-C does: temporary files removed
    if args.eval:
        result = evaluate(args.output, "test", args.device, args.data_dir, args.source)
        print(f"test accuracy: {result['accuracy']:.2f}% ({result['correct']}/{result['total']})")
        if args.script:
            print(f"{result['accuracy']:.4f}")
        return
    if args.parent_pid is not None:
        stop_with_parent(args.parent_pid)
    cfg = _config_from_args(args)
    callbacks = []
    if args.record_st:
        callbacks.append(visualize.TrainingRecorder.for_run(cfg.validate(), args.record_st, args.output,
                                                            args.data_dir, args.source))
    result = train(cfg, args.output, device=args.device, resume=args.resume, overwrite=args.overwrite,
                   data_dir=args.data_dir, source=args.source, download=args.download, bf16=args.bf16,
                   progress=None if not args.script else False, callbacks=callbacks)
    print(f"final test accuracy: {result['test_acc']:.2f}% (run in {args.output})")
    if args.script:
        print(f"{result['test_acc']:.4f}")


def cmd_eval(args: argparse.Namespace) -> None:
    result = evaluate(_model_path(args), args.split, args.device, args.data_dir, args.source, best=args.best)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['split']} accuracy: {result['accuracy']:.2f}% ({result['correct']}/{result['total']}), "
              f"epoch {result['epoch']}")


def _print_err(text: str) -> None:
    print(text, file=sys.stderr)


def _check_scale(scale: int) -> None:
    if scale < 1:
        raise StnError(f"--scale must be at least 1, got {scale}")


def cmd_plot(args: argparse.Namespace) -> None:
    _check_scale(args.scale)
    picture = visualize.plot_checkpoint(_model_path(args), args.count, args.split, args.indices, args.seed,
                                        args.scale, args.data_dir, args.source, echo=_print_err, best=args.best)
    print(f"wrote {visualize.save_png(picture, args.output)} ({picture.width}x{picture.height})")


def cmd_animate(args: argparse.Namespace) -> None:
    _check_scale(args.scale)
    if args.training:
        frames = visualize.training_frames(_model_path(args), args.stride)
    else:
        frames = visualize.track_animation(_model_path(args), args.class_id, args.track, args.scale, args.data_dir,
                                           args.source, echo=_print_err, best=args.best)
    print(f"wrote {visualize.save_gif(frames, args.output, args.frame_ms)} ({len(frames)} frames)")


def cmd_report(args: argparse.Namespace) -> None:
    for path in report.report(args.run, args.output, args.data_dir, args.source, args.device, args.best):
        print(f"wrote {path}")


def cmd_predict(args: argparse.Namespace) -> int:
    model, cfg, normalizer = load_trained(args.model or pretrained_path(), args.device, args.best)
    names, images, errors = predict.read_images(args.images, cfg.image_size)
    for error in errors:
        _print_err(f"stn-gtsrb: error: {error}")
    tops = predict.predict_images(model, normalizer, images, args.top_k)
    predictions = [predict.Prediction(name, top) for name, top in zip(names, tops, strict=True)]
    print(json.dumps([p.to_dict() for p in predictions]) if args.json else predict.format_table(predictions))
    if args.plot and predictions:
        best = torch.tensor([p.top[0][0] for p in predictions])
        captions = [f"{Path(p.file).name}: {visualize.class_caption(p.top[0][0])} ({p.top[0][1]:.1%})"
                    for p in predictions]
        picture = visualize.plot_transforms(model, images, best, normalizer, captions=captions)
        _print_err(f"wrote {visualize.save_png(picture, args.plot)}")
    return 2 if errors else 0


def cmd_export(args: argparse.Namespace) -> None:
    path = export(args.checkpoint, args.output, half=not args.full_precision, overwrite=args.overwrite,
                  best=args.best)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def cmd_bench(args: argparse.Namespace) -> None:
    if args.target[0] == "table":
        if len(args.target) != 2:
            raise StnError("usage: stn-gtsrb bench table DIR")
        print(f"table: {write_table(Path(args.target[1]), args.sort)}")
        return
    if len(args.target) != 1 or args.output is None:
        raise StnError("usage: stn-gtsrb bench GRID -o DIR")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the sweep like Ctrl-C: its running cells too
    bench(args.target[0], args.output, engine=args.engine, workers=args.workers, repeats=args.repeats,
          dry_run=args.dry_run, extend=args.extend, retry_failed=args.retry_failed, address=args.address,
          cpus_per_trial=args.cpus_per_trial, storage=args.storage, sort=args.sort, data_dir=args.data_dir,
          source=args.source, device=args.device)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"data": cmd_data, "train": cmd_train, "eval": cmd_eval, "bench": cmd_bench,
                "plot": cmd_plot, "animate": cmd_animate, "report": cmd_report, "predict": cmd_predict,
                "export": cmd_export}
    try:
        return handlers[args.command](args) or 0
    except StnError as error:
        print(f"stn-gtsrb: error: {error.cli}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stn-gtsrb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())

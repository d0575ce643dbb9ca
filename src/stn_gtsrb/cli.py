"""The ``stn-gtsrb`` command line.

    stn-gtsrb data prepare|info|verify   fetch, check and cache the dataset
    stn-gtsrb train [options]            train a network (options: TrainConfig's fields)
    stn-gtsrb eval RUN_OR_CHECKPOINT     accuracy of a saved model on a split

Every user error (StnError) prints one line ``stn-gtsrb: error: ...`` and
exits with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from . import __version__
from .archives import ARCHIVES, default_data_dir, default_source, fetch_archives
from .config import TrainConfig
from .data import NUM_CLASSES, cache_path, load_tensors, prepare, select_split
from .errors import StnError
from .train import evaluate, train


SHORT_FLAGS = {"n": ("-n",), "epochs": ("-e",), "batch_size": ("-b",), "seed": ("-s",)}  # as main.lua


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"where downloads and caches go (default: ${'STN_GTSRB_DATA'} or {default_data_dir()})")
    parser.add_argument("--source", default=None,
                        help="base URL or local folder holding the three archives "
                             "(default: $STN_GTSRB_SOURCE or the official URL)")


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
        if name == "prepare":
            sub.add_argument("--rebuild", action="store_true", help="rebuild the cache even if it is current")

    tr = commands.add_parser("train", help="train a network",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("-o", "--output", type=Path, default=Path("runs/default"), help="run directory")
    tr.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="discard a run already in --output")
    tr.add_argument("--eval", action="store_true", help="only evaluate the run in --output on the test split")
    tr.add_argument("--script", action="store_true", help="print the final test accuracy (%%) alone as last line")
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    tr.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    tr.add_argument("--download", action="store_true", help="download the archives if they are missing")
    _add_data_options(tr)
    _add_config_options(tr)

    ev = commands.add_parser("eval", help="accuracy of a saved model")
    ev.add_argument("checkpoint", type=Path, help="a run directory (its best.pt) or a .pt checkpoint")
    ev.add_argument("--split", default="test", help="train, val or test (default: test)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_data_options(ev)
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
    info = {"source": args.source or default_source(),
            "cache": str(cache_path(args.data_dir or default_data_dir(), args.size)),
            "image_size": args.size,
            "archives": torch.load(cache_path(args.data_dir or default_data_dir(), args.size),
                                   weights_only=True)["key"]["archives"]}
    print(json.dumps(info, indent=2))
    splits = {name: select_split(official, name) for name in ("train", "val", "train_without_val", "test")}
    print("split               images  tracks")
    for name, split in splits.items():
        print(f"{name:<18} {len(split):>7}  {len(split.tracks.unique()) if name != 'test' else '-':>6}")
    print("class " + " ".join(f"{c:>5}" for c in ("train", "test")))
    for c in range(NUM_CLASSES):
        print(f"{c:>5} " + " ".join(f"{int((splits[s].labels == c).sum()):>5}" for s in ("train", "test")))


def cmd_train(args: argparse.Namespace) -> None:
    if args.eval:
        result = evaluate(args.output, "test", args.device, args.data_dir, args.source)
        print(f"test accuracy: {result['accuracy']:.2f}% ({result['correct']}/{result['total']})")
        if args.script:
            print(f"{result['accuracy']:.4f}")
        return
    cfg = _config_from_args(args)
    result = train(cfg, args.output, device=args.device, resume=args.resume, overwrite=args.overwrite,
                   data_dir=args.data_dir, source=args.source, download=args.download, bf16=args.bf16,
                   progress=None if not args.script else False)
    print(f"final test accuracy: {result['test_acc']:.2f}% (run in {args.output})")
    if args.script:
        print(f"{result['test_acc']:.4f}")


def cmd_eval(args: argparse.Namespace) -> None:
    result = evaluate(args.checkpoint, args.split, args.device, args.data_dir, args.source)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['split']} accuracy: {result['accuracy']:.2f}% ({result['correct']}/{result['total']}), "
              f"epoch {result['epoch']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"data": cmd_data, "train": cmd_train, "eval": cmd_eval}
    try:
        handlers[args.command](args)
    except StnError as error:
        print(f"stn-gtsrb: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stn-gtsrb: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``stn-gtsrb`` command line.

    stn-gtsrb data prepare|info|verify   fetch, check and cache the dataset
    stn-gtsrb train [options]            train a network (options: TrainConfig's fields)
    stn-gtsrb eval RUN | --pretrained    accuracy of a saved (or the shipped) model on a split
    stn-gtsrb eval RUN RUN ... [--tta]   accuracy of a committee; test-time augmentation
    stn-gtsrb plot|animate|report ...    pictures of what the transformers learn, training reports
    stn-gtsrb predict IMAGE... [-m RUN]  top-k classes of image files (default: the shipped model)
    stn-gtsrb export RUN -o F.safetensors|F.onnx  a trained model as a weights file or an ONNX graph
    stn-gtsrb bench GRID -o DIR          train and score every cell of a grid (table DIR: redo the table)
    stn-gtsrb robustness RUN... -o DIR   models side by side under rotation, scale, shift and tilt; track stability
    stn-gtsrb serve [-m MODEL]           a local web page and JSON API: the model and its transformers at work

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

from . import inference, predict, report, robustness_report, visualize
from .archives import ARCHIVES, DataLocation, expected_hashes, fetch_archives
from .bench import bench, plan
from .checkpoints import DEFAULT_PRETRAINED, PRETRAINED, export, pretrained_path
from .classes import NUM_CLASSES
from .cli_parser import build_parser
from .config import TrainConfig
from .data import cache_path, cached_tensors, load_tensors, prepare, select_split
from .engines import CellRuntime, Engine, stop_with_parent
from .errors import StnError
from .fileio import read_json
from .onnx_export import export_onnx
from .predictor import load_predictor, pretrained_source
from .recipes import load_recipe
from .results import write_table
from .robustness import DEFAULT_LEVELS
from .scoring import evaluate, evaluate_ensemble
from .train import train
from .web_export import export_site


def _model_path(args: argparse.Namespace) -> Path:
    """The checkpoint named on the command line, or the shipped weights with --pretrained."""
    if (args.pretrained is not None) == (args.checkpoint is not None):
        raise StnError("give a checkpoint (run directory, .pt or .safetensors file) or --pretrained, one of the two")
    return pretrained_path(_pretrained(args)) if args.pretrained else args.checkpoint


def _pretrained(args: argparse.Namespace) -> str | None:
    """The pretrained model that --pretrained names, or None without it; a path given to it is refused."""
    name = args.pretrained
    if name is not None and name not in PRETRAINED and Path(name).exists():
        raise StnError(f"--pretrained takes a pretrained model's name ({', '.join(PRETRAINED)}), not {name}: "
                       "give models before --pretrained")
    return name


def _model_source(args: argparse.Namespace) -> str | Path:
    """``-m MODEL``, else the pretrained model --pretrained names (the default one without either)."""
    return args.model or pretrained_source(_pretrained(args) or DEFAULT_PRETRAINED)


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe's or the config file's options (if any), overridden by those given on the command line."""
    if args.recipe and args.config:
        raise StnError("give --recipe or --config, not both")
    start = load_recipe(args.recipe) if args.recipe else {}
    if args.config:
        start = TrainConfig.from_saved(read_json(args.config, "config file")).to_dict()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig.from_dict({**start, **given})


def _location(args: argparse.Namespace) -> DataLocation:
    """The data location that ``--data-dir`` and ``--source`` (or their defaults) name."""
    return DataLocation.resolve(args.data_dir, args.source)


def cmd_data(args: argparse.Namespace) -> None:
    location = _location(args)
    if args.data_command == "verify":
        paths, hashes = fetch_archives(location, download=False)
        for role, path in paths.items():
            print(f"ok  {path}  {hashes[ARCHIVES[role]]}")
        return
    if args.data_command == "prepare":
        path = prepare(args.size, location, download=True, rebuild=args.rebuild)
        print(f"cache ready: {path}")
        return
    official = load_tensors(args.size, location)
    print(json.dumps({"source": location.source, "cache": str(cache_path(location.dir, args.size)),
                      "image_size": args.size, "archives": expected_hashes(location)}, indent=2))
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
    if args.parent_pid is not None:
        stop_with_parent(args.parent_pid)
    cfg = _config_from_args(args)
    callbacks = []
    if args.record_st:
        callbacks.append(visualize.TrainingRecorder.for_run(cfg.validate(), args.record_st, args.output))
    result = train(cfg, args.output, device=args.device, precision=args.precision, layout=args.layout,
                   compile=args.compile, resume=args.resume, overwrite=args.overwrite, location=_location(args),
                   download=args.download, progress=None if not args.script else False,
                   callbacks=callbacks)
    split = cfg.judged_split
    timing = (f" after {result['train_seconds']:.1f} s of training ({result['images_per_s']:.0f} images/s, "
              f"{result['precision']}, {result['device']})" if result.get("train_seconds") else "")
    print(f"final {'validation' if split == 'val' else 'test'} accuracy: {result[split + '_acc']:.2f}%{timing} "
          f"(run in {args.output})")
    if args.script:
        print(f"{result[split + '_acc']:.4f}")


def cmd_eval(args: argparse.Namespace) -> None:
    paths = ([pretrained_path(_pretrained(args))] if args.pretrained else []) + args.checkpoints
    if not paths:
        raise StnError("give a checkpoint (run directory, .pt or .safetensors file), several, or --pretrained")
    if len(paths) == 1 and not args.tta:
        result = evaluate(paths[0], args.split, args.device, _location(args), precision=args.precision,
                          best=args.best)
        what = f"epoch {result['epoch']}"
    else:
        result = evaluate_ensemble(paths, args.split, args.tta, args.device, _location(args), best=args.best,
                                   precision=args.precision or "fp32")
        what = (f"committee of {len(paths)} models" if len(paths) > 1 else "one model") + (
            f", test-time augmentation over {result['views']} views" if args.tta else "")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['split']} accuracy: {result['accuracy']:.2f}% ({result['correct']}/{result['total']}), {what}")


def _print_err(text: str) -> None:
    print(text, file=sys.stderr)


def _check_scale(scale: int) -> None:
    if scale < 1:
        raise StnError(f"--scale must be at least 1, got {scale}")


def cmd_plot(args: argparse.Namespace) -> None:
    _check_scale(args.scale)
    picture = visualize.plot_checkpoint(_model_path(args), args.count, args.split, args.indices, args.seed,
                                        args.scale, _location(args), echo=_print_err, best=args.best)
    print(f"wrote {visualize.save_png(picture, args.output)} ({picture.width}x{picture.height})")


def cmd_animate(args: argparse.Namespace) -> None:
    _check_scale(args.scale)
    if args.training:
        frames = visualize.training_frames(_model_path(args), args.stride)
    else:
        frames = visualize.track_animation(_model_path(args), args.class_id, args.track, args.scale, _location(args),
                                           echo=_print_err, best=args.best)
    print(f"wrote {visualize.save_gif(frames, args.output, args.frame_ms)} ({len(frames)} frames)")


def cmd_report(args: argparse.Namespace) -> None:
    for path in report.report(args.run, args.output, _location(args), args.device, args.best):
        print(f"wrote {path}")


def cmd_predict(args: argparse.Namespace) -> int:
    predictor = load_predictor(_model_source(args), best=args.best, device=args.device)
    torch_model = predictor.torch_model("--plot") if args.plot else None
    names, images, errors = predict.read_images(args.images, predictor.image_size)
    for error in errors:
        _print_err(f"stn-gtsrb: error: {error}")
    probabilities, thetas = predictor.trace(images)
    tops = predict.top_classes(probabilities, args.top_k)
    predictions = [predict.Prediction(name, top, inference.transformer_entries(
        predictor.network, {p: theta[i] for p, theta in thetas.items()}, predictor.image_size))
        for i, (name, top) in enumerate(zip(names, tops, strict=True))]
    print(json.dumps([p.to_dict() for p in predictions]) if args.json else predict.format_table(predictions))
    if args.plot and predictions:
        model, normalizer = torch_model
        best = torch.tensor([p.top[0][0] for p in predictions])
        captions = [f"{Path(p.file).name}: {visualize.class_caption(p.top[0][0])} ({p.top[0][1]:.1%})"
                    for p in predictions]
        picture = visualize.plot_transforms(model, images, best, normalizer, captions=captions)
        _print_err(f"wrote {visualize.save_png(picture, args.plot)}")
    return 2 if errors else 0


def cmd_export(args: argparse.Namespace) -> None:
    """The model as a weights file (.safetensors) or an ONNX graph (.onnx), by the output's suffix, or a site."""
    if args.ort is not None and args.web is None:
        raise StnError("--ort goes with --web: it is the onnxruntime-web the site uses")
    if args.web is not None:
        site = export_site(load_predictor(_model_path(args), best=args.best), args.web, args.ort, args.overwrite,
                           _location(args))
        examples = f"{site['examples']} example images" if site["examples"] else (
            "no example images (no prepared data cache: 'stn-gtsrb data prepare')")
        print(f"wrote {site['folder']}/: {site['files']} files, {site['bytes'] / 1e6:.1f} MB (the model "
              f"{site['model_bytes'] / 1e6:.1f} MB), {examples}; open index.html through a static web server")
        return
    if args.output.suffix == ".onnx":
        if args.output.exists() and not args.overwrite:
            raise StnError(f"{args.output} exists: use --overwrite to replace it")
        predictor = load_predictor(_model_path(args), best=args.best)
        model, normalizer = predictor.torch_model("export to ONNX")
        path = export_onnx(model, predictor.config, normalizer, args.output)
    else:
        path = export(_model_path(args), args.output, half=not args.full_precision, overwrite=args.overwrite,
                      best=args.best)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _numbers(text: str, kind: type, option: str) -> list:
    """A comma-separated list of ``kind`` from the command line; StnError naming ``option`` if it is not one."""
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise StnError(f"{option} must be comma-separated {kind.__name__} values, got {text!r}") from None


def cmd_robustness(args: argparse.Namespace) -> None:
    levels = {name: tuple(_numbers(getattr(args, name), float, f"--{name}")) for name in DEFAULT_LEVELS}
    tracks = _numbers(args.tracks, int, "--tracks") if args.tracks is not None else None
    robustness_report.check_output(args.output, args.overwrite)
    sources = ([pretrained_source(_pretrained(args))] if args.pretrained else []) + args.models
    subjects = robustness_report.load_subjects(sources, args.device, args.best)
    result = robustness_report.measure(subjects, levels, args.n, args.seed, tracks, _location(args), args.download,
                                       progress=sys.stderr.isatty(), split=args.split)
    for path in robustness_report.write_results(result, args.output):
        print(f"wrote {path}")


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
    if args.dry_run:
        plan(args.target[0], args.output, args.repeats, args.retry_failed)
        return
    engine = Engine(args.engine, args.workers, args.address, args.cpus_per_trial, args.storage)
    cell = CellRuntime(_location(args), args.device, args.precision)
    bench(args.target[0], args.output, engine, cell, repeats=args.repeats, extend=args.extend,
          retry_failed=args.retry_failed, sort=args.sort)


SERVE_EXTRA = ("fastapi", "starlette", "uvicorn", "python_multipart")  # the serve extra's modules


def cmd_serve(args: argparse.Namespace) -> None:
    """The web page and API; FastAPI and uvicorn are the serve extra, imported here only."""
    try:
        from . import serve
    except ImportError as missing:
        if missing.name not in SERVE_EXTRA:
            raise
        raise StnError(f"serve needs {missing.name}: pip install 'stn-gtsrb[serve]'") from None
    for option, value in (("--max-upload-mb", args.max_upload_mb), ("--max-megapixels", args.max_megapixels),
                          ("--max-batch", args.max_batch), ("--max-requests", args.max_requests)):
        if not value > 0:
            raise StnError(f"{option} must be positive, got {value}")
    serve.check_port(args.port)
    served = load_predictor(_model_source(args), best=args.best, device=args.device)
    try:
        cached = cached_tensors(served.config.image_size, _location(args))
    except StnError as problem:
        cached = None
        _print_err(f"stn-gtsrb: note: no random test images ({problem})")
    else:
        if cached is None:
            _print_err("stn-gtsrb: note: no prepared data cache, so no random test images "
                       "('stn-gtsrb data prepare')")
    app = serve.create_app(served, cached["test"] if cached else None, int(args.max_upload_mb * 2**20),
                           int(args.max_megapixels * 1e6), args.max_batch, max_active=args.max_requests)
    serve.run(app, args.host, args.port, echo=_print_err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"data": cmd_data, "train": cmd_train, "eval": cmd_eval, "bench": cmd_bench,
                "plot": cmd_plot, "animate": cmd_animate, "report": cmd_report, "predict": cmd_predict,
                "export": cmd_export, "robustness": cmd_robustness, "serve": cmd_serve}
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

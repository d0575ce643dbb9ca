"""Training throughput: precision × layout × batch (× torch.compile), trainer against a bare loop.

    python benchmarks/trainer_throughput.py --source DIR | tee benchmarks/trainer_throughput-CPU.log

The paper's two-transformer IDSIA-like net at 32 px (``--recipe paper``: cnn
150,200,300,350, loc-nets 200,300,200 on the input and 150,150,150 before conv3),
SGD lr 0.01, on real training images. For each mode the package's
``train_epoch`` and the plainest loop (index, forward, loss, backward, step) run
in that same mode from the same weights on the same batches, alternately (trainer,
bare, trainer, bare, ...); the median images/s of each is reported, with their ratio. ``--compile`` adds
torch.compile rows: the first pass (compilation included) and the steady state.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import time

import torch
import torch.nn.functional as F

from stn_gtsrb import DataLocation, TrainConfig, create_model
from stn_gtsrb.device_data import load_device_data
from stn_gtsrb.recipes import load_recipe
from stn_gtsrb.runtime import Runtime, autocast_for
from stn_gtsrb.train import build_optimizer, train_epoch


def bare_epoch(model, optimizer, images, labels, order, batch_size, precision):
    """The plainest loop: index, forward, loss, backward, step."""
    for start in range(0, len(labels), batch_size):
        index = order[start:start + batch_size]
        with autocast_for(images.device, precision):
            loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(kind: str, runtime: Runtime, cfg: TrainConfig, initial, images, labels, prepared=None) -> float:
    """Images/s of one pass over ``images`` by the trainer or the bare loop, from ``initial``'s weights
    (or on ``prepared`` = (model, forward, optimizer), to time a compiled model's later passes)."""
    model, forward = prepared[:2] if prepared else runtime.model(copy.deepcopy(initial))
    optimizer = prepared[2] if prepared else build_optimizer(cfg, model)
    x = runtime.images(images)
    sync(runtime.device)
    start = time.perf_counter()
    if kind == "trainer":
        train_epoch(forward, optimizer, cfg, x, labels, epoch=1, step=0, precision=runtime.precision)
    else:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + 1))
        bare_epoch(forward, optimizer, x, labels, order.to(x.device), cfg.batch_size, runtime.precision)
    sync(runtime.device)
    return len(labels) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--images", type=int, default=400, help="training images per timed pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", default="50,128")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--layouts", default="contiguous,channels_last")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile in the auto precision, channels-last")
    args = parser.parse_args()
    base = TrainConfig.from_dict({**load_recipe("paper"), "n": args.images, "epochs": 1})
    device = Runtime.resolve(args.device).device
    images, labels = load_device_data(base, device, DataLocation.resolve(args.data_dir, args.source),
                                      splits=("train",)).splits["train"]
    torch.manual_seed(base.seed)
    initial = create_model(base.net, **base.model_options())
    print(f"device {device}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"paper recipe (idsia 2-ST, 32 px), {len(labels)} images per pass, median of {args.repeats}")
    auto = Runtime.resolve(args.device).precision
    print(f"auto precision here: {auto}")
    print("| batch | precision | layout | compile | trainer (img/s) | bare loop (img/s) | trainer / bare |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for batch, precision, layout in itertools.product([int(b) for b in args.batches.split(",")],
                                                      args.precisions.split(","), args.layouts.split(",")):
        cfg = TrainConfig.from_dict({**base.to_dict(), "batch_size": batch})
        runtime = Runtime.resolve(args.device, precision, layout)
        timed("bare", runtime, cfg, initial, images, labels)  # warm-up
        times = [{kind: timed(kind, runtime, cfg, initial, images, labels) for kind in ("trainer", "bare")}
                 for _ in range(args.repeats)]
        speeds = {kind: statistics.median(t[kind] for t in times) for kind in ("trainer", "bare")}
        print(f"| {batch} | {precision} | {layout} | no | {speeds['trainer']:.1f} | {speeds['bare']:.1f} | "
              f"{speeds['trainer'] / speeds['bare']:.3f} |", flush=True)
        if args.compile and precision == auto and layout == "channels_last":
            runtime = Runtime.resolve(args.device, precision, layout, compile=True)
            model, forward = runtime.model(copy.deepcopy(initial))
            prepared = (model, forward, build_optimizer(cfg, model))
            first = timed("trainer", runtime, cfg, initial, images, labels, prepared)
            steady = statistics.median(timed("trainer", runtime, cfg, initial, images, labels, prepared)
                                       for _ in range(args.repeats))
            print(f"| {batch} | {precision} | {layout} | yes: first pass {first:.1f} img/s (compiling), "
                  f"then | {steady:.1f} | - | - |", flush=True)


if __name__ == "__main__":
    main()

"""Trainer throughput against a bare PyTorch loop (same model, same batches).

    python benchmarks/trainer_throughput.py --source ../shared/gtsrb | tee benchmarks/trainer_throughput.log

Default: the two-transformer IDSIA-like net at 32 px (``--cnn 150,200,300,350``,
loc-nets 200,300,200 on the input and 150,150,150 before conv3), batch 50,
SGD lr 0.01. Both loops start from the same weights and see the same batches;
runs alternate (trainer, bare, trainer, ...) and the median images/s of each is
compared. Goal: trainer / bare >= 0.95.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F

from stn_gtsrb import TrainConfig, create_model
from stn_gtsrb.device_data import load_device_data
from stn_gtsrb.runtime import resolve_device
from stn_gtsrb.train import build_optimizer, train_epoch


def bare_epoch(model, optimizer, images, labels, order, batch_size):
    """The plainest loop: index, forward, loss, backward, step."""
    for start in range(0, len(labels), batch_size):
        index = order[start:start + batch_size]
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--images", type=int, default=1000, help="training images per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    cfg = TrainConfig(net="idsia", cnn="150,200,300,350", st=True, locnet="200,300,200", locnet3="150,150,150",
                      n=args.images, epochs=1, batch_size=50, lr=0.01)
    device = resolve_device(args.device)
    images, labels = load_device_data(cfg, device, args.data_dir, args.source, splits=("train",)).splits["train"]
    torch.manual_seed(cfg.seed)
    initial = create_model(cfg.net, **cfg.model_options()).to(device)
    print(f"device {device}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; idsia 2-ST 32 px, "
          f"{len(labels)} images per pass, batch {cfg.batch_size}")

    def timed(kind: str) -> float:
        model = copy.deepcopy(initial)
        optimizer = build_optimizer(cfg, model)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        if kind == "trainer":
            train_epoch(model, optimizer, cfg, images, labels, epoch=1, step=0)
        else:
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + 1))
            bare_epoch(model, optimizer, images, labels, order.to(device), cfg.batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return len(labels) / (time.perf_counter() - start)

    timed("bare")  # warm-up
    speeds = {"trainer": [], "bare": []}
    for _ in range(args.repeats):
        for kind in speeds:
            speeds[kind].append(timed(kind))
            print(f"  {kind:<8} {speeds[kind][-1]:7.1f} images/s")
    trainer, bare = (statistics.median(speeds[k]) for k in ("trainer", "bare"))
    print(f"median: trainer {trainer:.1f} images/s, bare loop {bare:.1f} images/s, ratio {trainer / bare:.3f}")


if __name__ == "__main__":
    main()

"""The training loop: optimiser, learning-rate schedule, epochs, checkpoints, resume.

The whole normalised dataset lives on the device (device_data.py). Each epoch
draws a permutation (and, with the ``jitter_*`` options, random augmentations:
augment.py) from a generator seeded by ``(seed, epoch)`` and takes
batches by index, so no DataLoader or per-image Python work is in the loop,
and a resumed run sees exactly the batches an uninterrupted one would.

What a run leaves on disk is described in runs.py. The loop knows nothing of
pictures: callers watch it through ``callbacks`` (see :class:`Step`), e.g. the
epoch-1 recorder of visualize.py.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import runs
from .archives import DataLocation, resolve_location
from .augment import CALM_CEILING, EpochJitter
from .checkpoints import make_checkpoint
from .config import TrainConfig
from .consistency import straightening_loss
from .data import GTSRBTensors, Normalizer
from .device_data import load_device_data
from .ema import WeightAverage
from .errors import StnError
from .evaluation import PROBE_IMAGES, accuracy, stopped_transformers, theta_spread
from .models import ConvNet, count_parameters
from .runtime import Runtime, autocast_for, device_name, rng_state, set_rng_state
from .whitening import whiten


@dataclass
class Step:
    """What a step callback is shown: the model being trained and where the loop is."""

    model: ConvNet
    normalizer: Normalizer  # the run's input normaliser (uint8 images -> model inputs)
    training: GTSRBTensors  # the run's training split (uint8 images, on the CPU) as the trainer holds it
    epoch: int  # 1-based
    done: int  # steps done in this epoch: 0 before the first, ``total`` after the last
    total: int  # steps in this epoch


Callback = Callable[[Step], None]
FINITE_CHECK_EVERY = 10  # steps between checks that the loss is finite


# ---------------------------------------------------------------- optimisation

def build_optimizer(cfg: TrainConfig, model: ConvNet) -> torch.optim.Optimizer:
    """The chosen optimiser with two parameter groups: network, and loc-nets (lr × locnet_lr_mult).

    ``sgd`` is Torch7's ``optim.sgd``: with momentum m its velocity is ``v ← m·v + (1 − m)·g``
    (dampening = momentum, Torch7's default; the first step takes ``v = g``, as both libraries do).
    ``nesterov`` needs zero dampening, in Torch7 as in PyTorch.
    """
    loc_ids = {id(p) for p in model.localisation_parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in loc_ids], "lr_mult": 1.0},
              {"params": [p for p in model.parameters() if id(p) in loc_ids], "lr_mult": cfg.locnet_lr_mult}]
    groups = [g for g in groups if g["params"]]
    common = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, dampening=cfg.momentum, **common)
    if cfg.optimizer == "nesterov":
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True, **common)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, **common)
    return torch.optim.RMSprop(groups, momentum=cfg.momentum, **common)


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Base lr at a global step: warm-up × schedule factor × Torch-style decay ``1 / (1 + step·lr_decay)``."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "step":
        factor = cfg.gamma ** (step // steps_per_epoch // cfg.step_epochs)
    elif cfg.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * step / total))
    elif cfg.schedule == "linear":
        factor = 1 - step / total
    else:
        factor = 1.0
    warm = cfg.warmup * total
    if step < warm:
        factor *= (step + 1) / warm
    return cfg.lr * factor / (1 + step * cfg.lr_decay)


class Diverged(StnError):
    """The training loss became NaN or infinite."""


def _check_finite(losses: torch.Tensor, first: int, epoch: int, lr: float) -> None:
    """Diverged naming the first step whose loss is not finite, if any; ``losses[i]`` is step ``first + i``
    (one host-device sync per check, not per step)."""
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        raise Diverged(f"training diverged: the loss is not finite at epoch {epoch}, step {first + int(bad[0])} "
                       f"(lr {lr:g}); try a lower learning rate")


def train_epoch(model, optimizer, cfg: TrainConfig, images, labels, epoch: int, step: int,
                precision: str = "fp32", progress: bool = False, on_step=None,
                ema: WeightAverage | None = None) -> tuple[float, float, int]:
    """One pass over the data in a permutation seeded by (seed, epoch); returns (loss, acc %, step).

    ``on_step(done, total)``, if given, is called before the first step and after every step;
    ``ema``, if given, is updated after every optimiser step.
    Raises :class:`Diverged` within ``FINITE_CHECK_EVERY`` steps of a non-finite loss.
    """
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    calm = epoch > cfg.epochs - cfg.jitter_calm_epochs
    jitter = EpochJitter.draw(len(labels), cfg.jitter_rot, cfg.jitter_scale, cfg.jitter_shift, cfg.jitter_blur,
                              generator, images.device, tilt_deg=cfg.jitter_tilt,
                              content_scale=cfg.jitter_content_scale, graded=cfg.jitter_graded,
                              ceiling=CALM_CEILING if calm else 1.0)
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    losses = torch.zeros(steps_per_epoch, device=images.device)  # per step, weighted by the batch size
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    first_step, checked = step, 0
    model.train()
    bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not progress,
               unit="batch")
    if on_step:
        on_step(0, steps_per_epoch)
    for done, start in enumerate(range(0, len(labels), cfg.batch_size), 1):
        lr = learning_rate(cfg, step, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        index = order[start:start + cfg.batch_size]
        batch = slice(start, start + cfg.batch_size)
        x, y = jitter.apply(images[index], batch), labels[index]
        with autocast_for(images.device, precision):
            logits, thetas = model(x, return_thetas=True)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if cfg.straighten:
                loss = loss + cfg.straighten * straightening_loss(model, images[index], thetas, jitter.matrices(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update()
        losses[done - 1] = loss.detach().float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        step += 1
        if done % FINITE_CHECK_EVERY == 0 or done == steps_per_epoch:
            _check_finite(losses[checked:done], first_step + checked + 1, epoch, lr)
            checked = done
        bar.update()
        if on_step:
            on_step(done, steps_per_epoch)
    bar.close()
    return losses.sum().item() / len(labels), 100.0 * correct.item() / len(labels), step


# ---------------------------------------------------------------- a whole run

def scored_splits(cfg: TrainConfig) -> tuple[str, ...]:
    """The splits a run loads: with ``--val`` the validation split and never the test set, which stays blind
    while choosing; without it the test set, scored after the final epoch (every epoch with ``--test-curve``)."""
    return ("train", cfg.judged_split)


def train(cfg: TrainConfig, output: Path | str, *, device: str = "auto", precision: str = "auto",
          layout: str = "auto", compile: bool = False, resume: bool = False, overwrite: bool = False,
          location: DataLocation | None = None, data_dir=None, source=None, download: bool = False,
          progress: bool | None = None, callbacks: Sequence[Callback] = (),
          echo: Callable[[str], None] = print) -> dict:
    """Train ``cfg`` in run directory ``output``; return the result record (also in result.json).

    ``device``, ``precision``, ``layout`` and ``compile`` say how to compute (runtime.py); the
    result and every log record name the precision used. ``location`` says where the data is (default:
    :meth:`DataLocation.resolve` of ``data_dir`` and ``source``, a convenience for one). Each of
    ``callbacks`` is called with a :class:`Step` before the first and after every training step.
    """
    cfg.validate()
    location = resolve_location(location, data_dir, source)
    runtime = Runtime.resolve(device, precision, layout, compile)
    with runs.locked_run(Path(output)) as run_dir:
        checkpoint = runs.open_run(cfg, run_dir, resume, overwrite)
        if checkpoint is not None and runs.read_result(run_dir) is not None:
            echo(f"{run_dir} is already finished")
            return runs.read_result(run_dir)
        data = load_device_data(cfg, runtime.device, location, download, splits=scored_splits(cfg))
        runs.write_config(run_dir, cfg)  # only now: a start that fails to load the data leaves no run behind
        return _train_epochs(cfg, run_dir, runtime, data, checkpoint,
                             sys.stderr.isatty() if progress is None else progress, callbacks, echo)


def _restore(run_dir: Path, checkpoint: dict | None, model, optimizer, echo) -> tuple[int, int, float | None]:
    """Load a checkpoint's state (if any) and trim the log to it; return (first epoch, step, best)."""
    first_epoch, step, best = 1, 0, None
    if checkpoint is not None:
        model.load_state_dict(checkpoint.get("train_model", checkpoint["model"]))  # raw weights, if --ema
        optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_state(checkpoint["rng"])
        first_epoch, step, best = checkpoint["epoch"] + 1, checkpoint["step"], checkpoint["best"]
        echo(f"resuming {run_dir} at epoch {first_epoch}")
    dropped = runs.trim_log(run_dir, first_epoch)
    if dropped:  # e.g. a run whose last.pt was lost: its logged epochs are trained again
        echo(f"{run_dir}: no checkpoint holds the last {dropped} logged epoch(s); training from epoch {first_epoch}")
    return first_epoch, step, best


def _train_epochs(cfg: TrainConfig, run_dir: Path, runtime: Runtime, data, checkpoint: dict | None,
                  progress: bool, callbacks: Sequence[Callback], echo) -> dict:
    torch.manual_seed(cfg.seed)
    model, forward = runtime.model(cfg.network())
    optimizer = build_optimizer(cfg, model)
    first_epoch, step, best = _restore(run_dir, checkpoint, model, optimizer, echo)
    setup = time.perf_counter()
    if cfg.whiten and step == 0:  # a fresh run: the first conv starts whitened, timed as epoch 1's training
        whiten(model.blocks[0][0], data.splits["train"][0], torch.Generator().manual_seed(cfg.seed))
    setup = time.perf_counter() - setup
    ema = WeightAverage(model, cfg.ema, updates=step) if cfg.ema else None
    if ema is not None and checkpoint is not None:
        ema.model.load_state_dict(checkpoint["model"])
    evaluated = ema.model if ema is not None else forward  # the model scored and saved
    splits = {name: (runtime.images(images), labels) for name, (images, labels) in data.splits.items()}
    train_x, train_y = splits["train"]
    echo(f"{cfg.net} {cfg.widths}, {count_parameters(model):,} parameters, {len(train_y):,} training images, "
         f"{runtime.describe()}")
    started = time.perf_counter() - sum(r["seconds"] for r in runs.read_log(run_dir))
    for epoch in range(first_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = learning_rate(cfg, step, math.ceil(len(train_y) / cfg.batch_size))

        def on_step(done: int, total: int, epoch: int = epoch) -> None:
            for callback in callbacks:
                callback(Step(model, data.normalizer, data.training, epoch, done, total))

        loss, train_acc, step = train_epoch(forward, optimizer, cfg, train_x, train_y, epoch, step,
                                            runtime.precision, progress, on_step=on_step if callbacks else None,
                                            ema=ema)
        train_seconds, setup = time.perf_counter() - t0 + setup, 0.0
        record = {"epoch": epoch, "train_loss": loss, "train_acc": train_acc}
        if cfg.val:
            record["val_acc"] = accuracy(evaluated, *splits["val"], precision=runtime.precision)
        elif cfg.test_curve or epoch == cfg.epochs:
            record["test_acc"] = accuracy(evaluated, *splits["test"], precision=runtime.precision)
        if cfg.transformers:
            record["theta_spread"] = theta_spread(evaluated, train_x[:PROBE_IMAGES], runtime.precision)
        record.update(lr=lr, seconds=time.perf_counter() - t0, train_seconds=train_seconds,
                      images_per_s=len(train_y) / train_seconds, precision=runtime.precision)
        improved = cfg.val and (best is None or record["val_acc"] > best)  # the test set never chooses
        best = record["val_acc"] if improved else best
        state = make_checkpoint(cfg, ema.model if ema is not None else model, optimizer, data.normalizer, epoch,
                                step, record, best, rng_state(runtime.device),
                                train_model=model if ema is not None else None)
        runs.save_epoch(run_dir, record, state, improved)
        echo(runs.format_record(record))
        for position in stopped_transformers(record.get("theta_spread", {})):
            echo(f"warning: the transformer before block {position} gives every image the same map: its "
                 "localisation net has stopped learning (--locnet-act leaky, or a lower --lr or --locnet-lr-mult, "
                 "may keep it alive)")

    log = runs.read_log(run_dir)
    scores = runs.judged_scores(cfg, log[-1])
    timed = [r["train_seconds"] for r in log if "train_seconds" in r]  # the training steps alone (not scoring)
    trained = sum(timed) if len(timed) == len(log) else None  # None: epochs logged before it was recorded
    result = {**scores, "best_val_acc": best, "epochs": cfg.epochs, "seconds": time.perf_counter() - started,
              "train_seconds": trained, "images_per_s": len(train_y) * len(log) / trained if trained else None,
              "precision": runtime.precision, "device": device_name(runtime.device),
              "parameters": count_parameters(model), "config": cfg.to_dict()}
    runs.write_result(run_dir, result)
    return result

"""Training and evaluation: the loop, run directories, checkpoints, resume.

The whole normalised dataset lives on the device as one float tensor; each
epoch draws a permutation (and, with the ``jitter_*`` options, one random
similarity transform per image, applied to each batch on the device with the
transformer's sampler) from a generator seeded by ``(seed, epoch)`` and takes
batches by index, so no DataLoader or per-image Python work is in the loop,
and a resumed run sees exactly the batches an uninterrupted one would.

A run directory holds::

    config.json    the resolved TrainConfig
    log.jsonl      one record per epoch (losses, accuracies in %, lr, seconds, images/s)
    last.pt        checkpoint after the latest epoch (model, optimiser, RNG, step, ...)
    best.pt        checkpoint of the best epoch (validation accuracy, else test)
    result.json    written when the run is finished

Checkpoints are plain dicts of tensors, numbers, strings, lists and dicts,
loadable with ``torch.load(path, weights_only=True)``; every file is written
atomically. One process at a time may use a run directory (a file lock).
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import filelock
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import TrainConfig
from .data import GTSRBTensors, Normalizer, fit_normalizer, load_tensors, select_split
from .errors import StnError
from .fileio import read_json, save_torch, write_text
from .models import ConvNet, create_model
from .transformer import random_thetas, warp
from .weights import SUFFIX, export_weights, read_weights

CHECKPOINT_FORMAT = 1
EVAL_BATCH = 500  # images per forward pass when evaluating
CONFIG_FILE, LOG_FILE, RESULT_FILE = "config.json", "log.jsonl", "result.json"
LAST, BEST = "last.pt", "best.pt"


# ---------------------------------------------------------------- small helpers

def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; other names are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if name not in available:
        raise StnError(f"unknown device {name!r}; valid: auto, cpu, cuda, mps")
    if not available[name]:
        raise StnError(f"device {name!r} is not available on this machine")
    return torch.device(name)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- data on the device

@dataclass
class DeviceData:
    """Normalised tensors on the device: ``splits[name] = (images float (N,3,S,S), labels (N,))``."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    normalizer: Normalizer


def training_split(cfg: TrainConfig, official: dict[str, GTSRBTensors]) -> GTSRBTensors:
    """The images the model trains on: (train or train_without_val), optionally a seeded subset."""
    train = select_split(official, "train_without_val" if cfg.val else "train", cfg.seed)
    if cfg.n:
        if cfg.n > len(train):
            raise StnError(f"-n {cfg.n} is larger than the training split ({len(train)} images)")
        train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.n])
    return train


def load_device_data(cfg: TrainConfig, device: torch.device, data_dir=None, source=None, download=False,
                     normalizer: Normalizer | None = None, splits=("train", "val", "test")) -> DeviceData:
    """Load, split, normalise (fitting on the training split unless given) and move to ``device``."""
    official = load_tensors(cfg.image_size, data_dir, source, download)
    train = training_split(cfg, official)
    if normalizer is None:
        normalizer = fit_normalizer(train.images, not cfg.no_norm, cfg.per_channel_norm, not cfg.no_lnorm)
    chosen = {"train": train, "test": official["test"]}
    if cfg.val:
        chosen["val"] = select_split(official, "val", cfg.seed)
    return DeviceData({name: (normalizer(t.images.to(device)), t.labels.to(device))
                       for name, t in chosen.items() if name in splits}, normalizer)


# ---------------------------------------------------------------- optimisation

def build_optimizer(cfg: TrainConfig, model: ConvNet) -> torch.optim.Optimizer:
    """The chosen optimiser with two parameter groups: network, and loc-nets (lr × locnet_lr_mult)."""
    loc_ids = {id(p) for p in model.localisation_parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in loc_ids], "lr_mult": 1.0},
              {"params": [p for p in model.parameters() if id(p) in loc_ids], "lr_mult": cfg.locnet_lr_mult}]
    groups = [g for g in groups if g["params"]]
    common = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer in ("sgd", "nesterov"):
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov", **common)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, **common)
    return torch.optim.RMSprop(groups, momentum=cfg.momentum, **common)


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Base lr at a global step: schedule factor × Torch-style decay ``1 / (1 + step·lr_decay)``."""
    epoch = step // steps_per_epoch
    if cfg.schedule == "step":
        factor = cfg.gamma ** (epoch // cfg.step_epochs)
    elif cfg.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * step / (cfg.epochs * steps_per_epoch)))
    else:
        factor = 1.0
    return cfg.lr * factor / (1 + step * cfg.lr_decay)


def autocast_for(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


@torch.no_grad()
def predict(model: ConvNet, images: torch.Tensor, bf16: bool = False, batch: int = EVAL_BATCH) -> torch.Tensor:
    """Predicted class ids for normalised ``images`` ``(N, 3, S, S)``."""
    was_training = model.training
    model.eval()
    with autocast_for(images.device, bf16):
        out = torch.cat([model(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])
    model.train(was_training)
    return out


def accuracy(model: ConvNet, images: torch.Tensor, labels: torch.Tensor, bf16: bool = False) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (predict(model, images, bf16) == labels).sum().item() / len(labels)


def train_epoch(model, optimizer, cfg: TrainConfig, images, labels, epoch: int, step: int,
                bf16: bool = False, progress: bool = False, on_step=None) -> tuple[float, float, int]:
    """One pass over the data in a permutation seeded by (seed, epoch); returns (loss, acc %, step).

    ``on_step(done, total)``, if given, is called before the first step and after every step.
    """
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    jitter = (random_thetas(len(labels), cfg.jitter_rot, cfg.jitter_scale, cfg.jitter_shift, generator)
              .to(images.device) if cfg.augments else None)
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
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
        x, y = images[index], labels[index]
        if jitter is not None:
            x = warp(x, jitter[start:start + cfg.batch_size])
        with autocast_for(images.device, bf16):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        step += 1
        bar.update()
        if on_step:
            on_step(done, steps_per_epoch)
    bar.close()
    return loss_sum.item() / len(labels), 100.0 * correct.item() / len(labels), step


# ---------------------------------------------------------------- checkpoints

def load_checkpoint(path: Path | str) -> dict:
    """Read a checkpoint (``weights_only=True``) or a weights file; StnError if it is not one of ours."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST
    if not path.exists():
        raise StnError(f"checkpoint {path} not found")
    if path.suffix == SUFFIX:
        return read_weights(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise StnError(f"{path} is not a readable checkpoint: {str(error).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise StnError(f"{path} is not a stn-gtsrb checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict, path: str = "checkpoint") -> tuple[ConvNet, TrainConfig]:
    cfg = TrainConfig.from_dict(checkpoint["config"]).validate()
    model = create_model(cfg.net, **cfg.model_options())
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError) as error:
        raise StnError(f"{path} does not fit its network: {str(error).splitlines()[0]}") from None
    return model, cfg


def load_trained(path: Path | str, device: str = "cpu") -> tuple[ConvNet, TrainConfig, Normalizer]:
    """(model in eval mode on ``device``, its config, its normaliser) from a checkpoint or run directory."""
    checkpoint = load_checkpoint(path)
    model, cfg = model_from_checkpoint(checkpoint, str(path))
    return model.to(resolve_device(device)).eval(), cfg, Normalizer.from_state_dict(checkpoint["normalizer"])


def export(path: Path | str, output: Path | str, half: bool = True, overwrite: bool = False) -> Path:
    """Write a checkpoint's (or run directory's best.pt) model as a weights file (see weights.py)."""
    output = Path(output)
    if output.suffix != SUFFIX:
        raise StnError(f"weights file names end in {SUFFIX}, got {output.name}")
    if output.exists() and not overwrite:
        raise StnError(f"{output} exists: use --overwrite to replace it")
    return export_weights(load_checkpoint(path), output, half)


def make_checkpoint(cfg, model, optimizer, normalizer, epoch, step, metrics, best) -> dict:
    return {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step, "rng": torch.get_rng_state(),
            "normalizer": normalizer.state_dict(), "metrics": metrics, "best": best}


# ---------------------------------------------------------------- run directory

def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _open_run(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool) -> dict | None:
    """Check the run directory; return the checkpoint to resume from, if any."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        return None
    if overwrite:
        for name in (CONFIG_FILE, LOG_FILE, RESULT_FILE, LAST, BEST):
            (run_dir / name).unlink(missing_ok=True)
        return None
    if not resume:
        raise StnError(f"{run_dir} already holds a run: use --resume to continue it or --overwrite to start again")
    saved = TrainConfig.from_dict(read_json(config_path, "run config")).to_dict()  # new options: defaults
    wanted = cfg.to_dict()
    if saved != wanted:
        differing = sorted(k for k in wanted if saved[k] != wanted[k])
        raise StnError(f"{run_dir} belongs to another config (differs in: {', '.join(differing)})")
    return load_checkpoint(run_dir / LAST) if (run_dir / LAST).exists() else None


def train(cfg: TrainConfig, output: Path | str, *, device: str = "auto", resume: bool = False,
          overwrite: bool = False, data_dir=None, source=None, download: bool = False, bf16: bool = False,
          progress: bool | None = None, record_st: int = 0, echo: Callable[[str], None] = print) -> dict:
    """Train ``cfg`` in run directory ``output``; return the result record (also in result.json).

    ``record_st=k`` draws fixed training images through the transformers every k steps of
    epoch 1, into ``st_frames/*.png`` and ``st_epoch1.gif`` (see visualize.TrainingRecorder).
    """
    cfg.validate()
    if record_st < 0:
        raise StnError(f"--record-st must be a positive number of steps, got {record_st}")
    run_dir = Path(output)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(run_dir / ".lock"), timeout=0)
        lock.acquire()
    except filelock.Timeout:
        raise StnError(f"another process is using the run directory {run_dir}") from None
    except OSError as error:
        raise StnError(f"cannot use run directory {run_dir}: {error}") from None
    try:
        return _train_locked(cfg, run_dir, resolve_device(device), resume, overwrite, data_dir, source,
                             download, bf16, sys.stderr.isatty() if progress is None else progress, record_st,
                             echo)
    finally:
        lock.release()


def _recorder(cfg: TrainConfig, model: ConvNet, normalizer: Normalizer, every: int, run_dir: Path, data_dir, source):
    from .visualize import RECORDED_IMAGES, TrainingRecorder

    train = training_split(cfg, load_tensors(cfg.image_size, data_dir, source))
    chosen = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[
        :RECORDED_IMAGES])
    device = next(model.parameters()).device
    return TrainingRecorder(model, chosen.images.to(device), chosen.labels, normalizer, every,
                            run_dir / "st_frames", run_dir / "st_epoch1.gif")


def _restore(run_dir: Path, checkpoint: dict | None, model, optimizer, echo) -> tuple[int, int, float | None]:
    """Load a checkpoint's state (if any) and trim the log to it; return (first epoch, step, best)."""
    first_epoch, step, best = 1, 0, None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"])
        first_epoch, step, best = checkpoint["epoch"] + 1, checkpoint["step"], checkpoint["best"]
        echo(f"resuming {run_dir} at epoch {first_epoch}")
    log = [record for record in read_log(run_dir) if record["epoch"] < first_epoch]  # drop epochs not saved
    write_text(run_dir / LOG_FILE, "".join(json.dumps(r) + "\n" for r in log))
    return first_epoch, step, best


def _train_locked(cfg, run_dir, device, resume, overwrite, data_dir, source, download, bf16, progress, record_st,
                  echo):
    if bf16 and device.type != "cuda":
        raise StnError("--bf16 needs a CUDA device")
    checkpoint = _open_run(cfg, run_dir, resume, overwrite)
    if checkpoint is not None and (run_dir / RESULT_FILE).exists():
        echo(f"{run_dir} is already finished")
        return read_json(run_dir / RESULT_FILE, "run result")
    write_text(run_dir / CONFIG_FILE, cfg.to_json() + "\n")

    data = load_device_data(cfg, device, data_dir, source, download)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.net, **cfg.model_options()).to(device)
    optimizer = build_optimizer(cfg, model)
    first_epoch, step, best = _restore(run_dir, checkpoint, model, optimizer, echo)
    recorder = None
    if record_st and first_epoch == 1:
        recorder = _recorder(cfg, model, data.normalizer, record_st, run_dir, data_dir, source)
    train_x, train_y = data.splits["train"]
    select_on = "val_acc" if cfg.val else "test_acc"
    echo(f"{cfg.net} {cfg.widths}, {count_parameters(model):,} parameters, {len(train_y):,} training images, "
         f"device {device}")
    started = time.perf_counter() - sum(r["seconds"] for r in read_log(run_dir))
    for epoch in range(first_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = learning_rate(cfg, step, math.ceil(len(train_y) / cfg.batch_size))
        loss, train_acc, step = train_epoch(model, optimizer, cfg, train_x, train_y, epoch, step, bf16, progress,
                                            on_step=recorder if epoch == 1 else None)
        if recorder is not None and epoch == 1:
            echo(f"transformer animation of epoch 1: {recorder.finish()}")
        train_seconds = time.perf_counter() - t0
        record = {"epoch": epoch, "train_loss": loss, "train_acc": train_acc}
        for name in ("val", "test"):
            if name in data.splits:
                record[f"{name}_acc"] = accuracy(model, *data.splits[name], bf16=bf16)
        record.update(lr=lr, seconds=time.perf_counter() - t0, images_per_s=len(train_y) / train_seconds)
        improved = best is None or record[select_on] > best
        best = record[select_on] if improved else best
        _save_epoch(run_dir, record, make_checkpoint(cfg, model, optimizer, data.normalizer, epoch, step, record,
                                                     best), improved)
        echo(format_record(record))

    last = read_log(run_dir)[-1]
    result = {"test_acc": last["test_acc"], "val_acc": last.get("val_acc"), f"best_{select_on}": best, "epochs": cfg.epochs, "seconds": time.perf_counter() - started,
              "parameters": count_parameters(model), "config": cfg.to_dict()}
    write_text(run_dir / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    return result


def _save_epoch(run_dir: Path, record: dict, state: dict, improved: bool) -> None:
    """Append the epoch's log record, then write last.pt (and best.pt), each atomically."""
    with open(run_dir / LOG_FILE, "a") as file:
        file.write(json.dumps(record) + "\n")
    save_torch(state, run_dir / LAST)
    if improved:
        save_torch(state, run_dir / BEST)


def format_record(record: dict) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4f}", f"train {record['train_acc']:.2f}%"]
    parts += [f"{name} {record[name + '_acc']:.2f}%" for name in ("val", "test") if name + "_acc" in record]
    parts += [f"lr {record['lr']:.2g}", f"{record['seconds']:.1f}s", f"{record['images_per_s']:.0f} img/s"]
    return " | ".join(parts)


# ---------------------------------------------------------------- evaluation

def require_val_if_asked(cfg: TrainConfig, split: str) -> None:
    """StnError if ``split`` is the validation split of a run trained without one."""
    if split == "val" and not cfg.val:
        raise StnError("this run was trained without --val, so it has no validation split")


def evaluate(path: Path | str, split: str = "test", device: str = "auto", data_dir=None, source=None,
             download: bool = False, bf16: bool = False) -> dict:
    """Accuracy of a checkpoint (or a run directory's best.pt) on a split."""
    checkpoint = load_checkpoint(path)
    model, cfg = model_from_checkpoint(checkpoint, str(path))
    require_val_if_asked(cfg, split)
    if split not in ("train", "val", "test"):
        raise StnError(f"unknown split {split!r}; valid: train, val, test")
    dev = resolve_device(device)
    data = load_device_data(cfg, dev, data_dir, source, download,
                            normalizer=Normalizer.from_state_dict(checkpoint["normalizer"]), splits=(split,))
    images, labels = data.splits[split]
    correct = (predict(model.to(dev), images, bf16) == labels).sum().item()
    return {"split": split, "accuracy": 100.0 * correct / len(labels), "correct": correct, "total": len(labels),
            "epoch": checkpoint["epoch"], "logged": checkpoint["metrics"].get(f"{split}_acc")}

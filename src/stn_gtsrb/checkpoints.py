"""Checkpoints, the one home of saved models: make, save, load, rebuild, export, pretrained.

A *checkpoint* (``.pt``) is a plain dict of tensors, numbers, strings, lists
and dicts, loadable with ``torch.load(path, weights_only=True)``::

    format      CHECKPOINT_FORMAT
    config      the TrainConfig as a dict
    model       the model's state dict (with ``--ema``: the weight average's, the model evaluated)
    train_model with ``--ema`` only: the trained weights' state dict, from which a resumed run goes on
    optimizer   the optimiser's state dict
    epoch, step the last finished epoch and the global step after it
    rng         the RNG states: {"cpu": tensor, "cuda": [tensor per device] when trained on CUDA}
    normalizer  the input normaliser (data.Normalizer.state_dict)
    metrics     the epoch's log record
    best        the best validation accuracy so far (None without a validation split)

A *weights file* (``.safetensors``) holds the model's state dict as
``model.<name>`` (float16 when exported with ``half=True``; the fixed
normalisation kernels are not part of it) and the normaliser's tensors as
``normalizer.<name>`` (float32); its string metadata holds the training
config, the epoch and the metrics as JSON. :func:`read_weights` returns the
shape of a checkpoint (without optimiser state, parameters back in float32),
so everything that takes a checkpoint takes a weights file.

Pretrained models are registry entries (``PRETRAINED``): a name, and a weights file shipped under
``stn_gtsrb/pretrained/`` with a JSON record of its run and measured accuracy beside it. The entry's
own config says which network it is. ``accurate``, the IDSIA-shaped BatchNorm net with a transformer
before conv2, is the default (``DEFAULT_PRETRAINED``): what ``load_pretrained()``,
``create_model("idsia", pretrained=True)`` and the CLI's ``--pretrained`` alone load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import TrainConfig
from .data import Normalizer
from .errors import StnError
from .fileio import atomic_write, save_torch
from .models import ConvNet, build_model, model_spec
from .runtime import resolve_device

CHECKPOINT_FORMAT = 1
WEIGHTS_FORMAT = "1"
SUFFIX = ".safetensors"
LAST, BEST = "last.pt", "best.pt"  # checkpoint file names in a run directory
PRETRAINED = {"accurate": "idsia-bn-st2-32px"}  # pretrained model name -> file stem under stn_gtsrb/pretrained/
DEFAULT_PRETRAINED = "accurate"  # the model --pretrained alone, load_pretrained() and pretrained=True load
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


# ---------------------------------------------------------------- checkpoints

def make_checkpoint(cfg: TrainConfig, model, optimizer, normalizer: Normalizer, epoch: int, step: int,
                    metrics: dict, best, rng: dict, train_model=None) -> dict:
    checkpoint = {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
                  "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step, "rng": rng,
                  "normalizer": normalizer.state_dict(), "metrics": metrics, "best": best}
    if train_model is not None:
        checkpoint["train_model"] = train_model.state_dict()
    return checkpoint


def save_checkpoint(checkpoint: dict, path: Path | str) -> Path:
    return save_torch(checkpoint, path)


def checkpoint_path(path: Path | str, best: bool = False) -> Path:
    """The file a model argument names: a run directory stands for its final model (``last.pt``), or with
    ``best`` for its ``best.pt``, the epoch chosen on validation accuracy (only runs with ``--val`` have one)."""
    path = Path(path)
    if not path.is_dir():
        if best:
            raise StnError(f"--best picks a checkpoint in a run directory; {path} is a file")
        return path
    if best and not (path / BEST).exists() and (path / LAST).exists():
        raise StnError(f"{path} has no best.pt: only runs trained with --val choose a best epoch (on validation)")
    return path / (BEST if best else LAST)


REQUIRED_KEYS = ("config", "model", "normalizer", "epoch", "metrics")  # what every reader of a checkpoint uses


def load_checkpoint(path: Path | str, best: bool = False) -> dict:
    """Read a checkpoint (``weights_only=True``) or a weights file; StnError if it is not one of ours.

    A run directory stands for its final model, or its best.pt with ``best`` (see :func:`checkpoint_path`).
    """
    path = checkpoint_path(path, best)
    if not path.exists():
        raise StnError(f"checkpoint {path} not found")
    if path.suffix == SUFFIX:
        return _complete(read_weights(path), path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise StnError(f"{path} is not a readable checkpoint: {str(error).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise StnError(f"{path} is not a stn-gtsrb checkpoint of format {CHECKPOINT_FORMAT}")
    return _complete(checkpoint, path)


def _complete(checkpoint: dict, path: Path) -> dict:
    """``checkpoint`` if it has every part a reader uses and a well-formed normaliser; else StnError naming
    the missing or malformed part."""
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise StnError(f"{path} lacks its {', '.join(missing)}: not a complete stn-gtsrb checkpoint")
    try:
        Normalizer.from_state_dict(checkpoint["normalizer"])
    except StnError as error:
        raise StnError(f"{path}: {error}") from None
    return checkpoint


def model_from_checkpoint(checkpoint: dict, path: str = "checkpoint") -> tuple[ConvNet, TrainConfig]:
    """The checkpoint's network with its weights loaded, and its config."""
    try:
        cfg = TrainConfig.from_saved(checkpoint["config"]).validate()
    except StnError as error:
        raise StnError(f"{path}: its config is not one of this version's: {error}") from None
    model = cfg.network()
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError) as error:
        raise StnError(f"{path} does not fit its network: {str(error).splitlines()[0]}") from None
    return model, cfg


def load_trained(path: Path | str, device: str = "cpu", best: bool = False) -> tuple[ConvNet, TrainConfig, Normalizer]:
    """(model in eval mode on ``device``, its config, its normaliser) from a checkpoint, weights file or run
    directory (its final model, or with ``best`` its best.pt)."""
    return trained_from_checkpoint(load_checkpoint(path, best), str(path), device)


def trained_from_checkpoint(checkpoint: dict, path: str = "checkpoint",
                            device: str = "cpu") -> tuple[ConvNet, TrainConfig, Normalizer]:
    """(model in eval mode on ``device``, its config, its normaliser) of a loaded checkpoint."""
    model, cfg = model_from_checkpoint(checkpoint, path)
    return model.to(resolve_device(device)).eval(), cfg, Normalizer.from_state_dict(checkpoint["normalizer"])


# ---------------------------------------------------------------- weights files

def export_weights(checkpoint: dict, path: Path | str, half: bool = True) -> Path:
    """Write a training checkpoint's model and normaliser as a weights file (atomically)."""
    def stored(value: torch.Tensor) -> torch.Tensor:
        return (value.half() if half and value.is_floating_point() else value).contiguous()

    normalizer = checkpoint["normalizer"]
    tensors = {f"model.{name}": stored(value) for name, value in checkpoint["model"].items()}
    tensors |= {f"normalizer.{name}": value.contiguous() for name, value in normalizer.items()
                if isinstance(value, torch.Tensor)}
    metadata = {"format": WEIGHTS_FORMAT, "config": json.dumps(checkpoint["config"]),
                "epoch": str(checkpoint["epoch"]), "metrics": json.dumps(checkpoint["metrics"]),
                "normalizer": json.dumps({k: v for k, v in normalizer.items() if not isinstance(v, torch.Tensor)})}
    return atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def read_weights(path: Path | str) -> dict:
    """A weights file as a checkpoint-shaped dict: config, model, normalizer, epoch, metrics."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except Exception as error:  # safetensors raises several kinds for a bad file
        raise StnError(f"{path} is not a readable weights file: {str(error).splitlines()[0]}") from None
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise StnError(f"{path} is not a stn-gtsrb weights file of format {WEIGHTS_FORMAT}")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {name[len(prefix):]: value.float() if value.is_floating_point() else value
                for name, value in tensors.items() if name.startswith(prefix)}

    try:
        checkpoint = {"config": json.loads(metadata["config"]), "model": part("model."),
                      "normalizer": {**json.loads(metadata["normalizer"]), **part("normalizer.")},
                      "epoch": int(metadata["epoch"]), "metrics": json.loads(metadata["metrics"])}
    except KeyError as error:
        raise StnError(f"{path} lacks its {error.args[0]}: not a complete stn-gtsrb weights file") from None
    except (ValueError, TypeError) as error:
        raise StnError(f"{path} has unreadable metadata: {error}") from None
    if not checkpoint["model"]:
        raise StnError(f"{path} lacks its model tensors: not a complete stn-gtsrb weights file")
    return checkpoint


def export(path: Path | str, output: Path | str, half: bool = True, overwrite: bool = False,
           best: bool = False) -> Path:
    """Write a checkpoint's (or run directory's final, or with ``best`` best) model as a weights file."""
    output = Path(output)
    if output.suffix != SUFFIX:
        raise StnError(f"weights file names end in {SUFFIX}, got {output.name}")
    if output.exists() and not overwrite:
        raise StnError(f"{output} exists: use --overwrite to replace it")
    return export_weights(load_checkpoint(path, best), output, half)


# ---------------------------------------------------------------- the shipped model

def pretrained_path(name: str = DEFAULT_PRETRAINED) -> Path:
    """The weights file of the pretrained model ``name``."""
    if name not in PRETRAINED:
        raise StnError(f"no pretrained model {name!r}; available: {', '.join(PRETRAINED)}")
    path = PRETRAINED_DIR / f"{PRETRAINED[name]}{SUFFIX}"
    if not path.exists():
        raise StnError(f"pretrained weights {path} are missing from this installation")
    return path


def load_pretrained(name: str = DEFAULT_PRETRAINED, device: str = "cpu") -> tuple[ConvNet, TrainConfig, Normalizer]:
    """(model in eval mode, its TrainConfig, its Normalizer) of the pretrained model ``name``."""
    return load_trained(pretrained_path(name), device)


def create_model(name: str, pretrained: bool | str = False, **options) -> ConvNet:
    """Build the registered network ``name`` (see models.py) with keyword ``options``.

    ``pretrained``: a pretrained model's name (``True``: ``DEFAULT_PRETRAINED``), whose network must be
    ``name``; the net is built as those weights were trained (transformers included) and loads them, and
    ``options`` given with it must agree with that configuration. Its inputs must be normalised with the
    model's own normaliser: :func:`load_pretrained` returns both.
    """
    if not pretrained:
        return build_model(name, **options)
    model_spec(name)  # a clear error for an unknown name
    entry = DEFAULT_PRETRAINED if pretrained is True else pretrained
    model, cfg = model_from_checkpoint(load_checkpoint(pretrained_path(entry)), f"pretrained {entry}")
    if cfg.net != name:
        raise StnError(f"the pretrained model {entry!r} has the {cfg.net} net, not {name}")
    shipped = cfg.model_options()
    differing = sorted(key for key, value in options.items() if key not in shipped or shipped[key] != value)
    if differing:
        raise StnError(f"the pretrained model {entry!r} was trained with "
                       f"{', '.join(f'{k}={shipped.get(k)!r}' for k in differing)}; drop those options")
    return model

"""The training configuration: one dataclass, the single source of truth.

The CLI builds its ``train`` options from these fields (the ``help`` in each
field's metadata is the option's help), a run directory stores the resolved
config as ``config.json``, and the benchmark runner varies these same names.
Defaults are those of Moodstocks' ``main.lua`` unless a comment says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from .errors import StnError
from .families import FAMILIES, TPS_GRID, check_passes, check_tps_grid, create_family
from .models import ConvNet, build_model, model_spec, parse_widths
from .normalization import KERNELS
from .transformer import LEAKY_SLOPE, LOCNET_ACTIVATIONS

OPTIMIZERS = ("sgd", "nesterov", "adam", "rmsprop")
SAVED_BEFORE = {"legacy_norm": True}  # behaviour of saved configs that lack these options
RENAMED = {"no_norm": "norm", "no_lnorm": "lnorm", "no_cnorm": "cnorm"}  # old name -> switch of the opposite sense
SCHEDULES = ("none", "step", "cosine", "linear")
MAX_TILT = 70.0  # degrees: near 71.6° the tilt's camera (geometry.TILT_DISTANCE) would see the horizon
GEOMETRIC_JITTER = "--jitter-rot, --jitter-scale, --jitter-shift or --jitter-tilt"  # the options that move images


def _opt(default, help: str, **metadata):
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class TrainConfig:
    # --- data
    image_size: int = _opt(32, "side of the square input images in pixels (the paper used 48)")
    n: int = _opt(0, "number of training images to use, a seeded random subset (0: all)")
    val: bool = _opt(False, "hold out whole tracks (--val-tracks per class) as a validation split")
    val_tracks: int = _opt(1, "with --val: tracks per class held out (the original: 1)")
    val_seed: int = _opt(1, "with --val: which tracks are held out (independent of --seed, so all seeds and "
                            "repeats are scored on the same images)")
    test_curve: bool = _opt(False, "score the test set after every epoch, for learning-curve plots (default: after "
                                   "the final epoch only; a run with --val never scores it)")
    norm: bool = _opt(True, "global mean/std normalisation of the input images")
    per_channel_norm: bool = _opt(False, "global normalisation per colour channel (original: one scalar)")
    lnorm: bool = _opt(True, "local contrast normalisation of the input images")
    # --- network
    net: str = _opt("lecun", "registered network (models.py)")
    cnn: str = _opt("", "widths of the net's conv blocks, then of its hidden fc layer; empty: the net's default")
    ms: bool = _opt(False, "multi-scale features: last conv block's pooled input joins its output")
    cnorm: bool = _opt(True, "contrastive normalisation after the conv blocks")
    cnorm_kernel: str = _opt("uniform9", "kernel of the conv blocks' contrastive normalisation", choices=KERNELS)
    batchnorm: bool = _opt(False, "BatchNorm between each conv and its ReLU (not in the original)")
    legacy_norm: bool = _opt(False, "contrastive normalisation as stn-gtsrb 0.1 computed it (sqrt after the border "
                                    "division; runs saved before this option existed used it)")
    # --- spatial transformers
    st: bool = _opt(False, "add a spatial transformer on the input image (loc-net widths: --locnet)")
    locnet: str = _opt("30,60,30", "loc-net widths conv1,conv2,fc of the transformer on the input")
    locnet2: str = _opt("", "loc-net widths of a transformer before conv2 (empty: none)")
    locnet3: str = _opt("", "loc-net widths of a transformer before conv3, for nets with a third block (empty: none)")
    rot: bool = _opt(False, "restrict transformers to rotation (combine with --sca/--tra; none: full affine)")
    sca: bool = _opt(False, "restrict transformers to isotropic scale (combinable)")
    tra: bool = _opt(False, "restrict transformers to translation (combinable)")
    transform: str = _opt("affine", "transformers' family: affine (restricted by --rot/--sca/--tra), projective (a "
                                    "homography) or tps (a thin-plate spline, --tps-grid)", choices=tuple(FAMILIES))
    tps_grid: int = _opt(TPS_GRID, "with --transform tps: control points per side of the spline's grid")
    straighten: float = _opt(0.0, "weight of the straightening term: the first transformer's region on each "
                                  "jittered training image should be its region on the clean image, carried "
                                  "by the jitter (needs a transformer and a geometric jitter)")
    passes: int = _opt(1, "apply each transformer this many times, each pass composing a correction with the "
                          "map so far (inverse-compositional; affine and projective families)")
    locnet_act: str = _opt("relu", "activation in the localisation nets: relu (the original) or leaky (LeakyReLU, "
                                   f"slope {LEAKY_SLOPE}: a unit that is off still passes a gradient, so it "
                                   "cannot die)",
                           choices=tuple(LOCNET_ACTIVATIONS))
    # --- optimisation
    epochs: int = _opt(10, "number of training epochs")
    batch_size: int = _opt(50, "mini-batch size")
    optimizer: str = _opt("sgd", "optimiser", choices=OPTIMIZERS)
    lr: float = _opt(0.01, "learning rate")
    lr_decay: float = _opt(0.0, "Torch-style decay: lr / (1 + step * lr_decay)")
    schedule: str = _opt("none", "learning-rate schedule: none, step (× gamma every step-epochs), cosine or linear "
                                 "(to 0 at the end)", choices=SCHEDULES)
    warmup: float = _opt(0.0, "fraction of the training steps over which the lr rises linearly from 0 (any schedule)")
    step_epochs: int = _opt(5, "with --schedule step: multiply the lr by --gamma every this many epochs")
    gamma: float = _opt(0.1, "with --schedule step: the lr factor")
    weight_decay: float = _opt(0.0, "L2 weight decay")
    momentum: float = _opt(0.0, "momentum (sgd: Torch7's, with dampening = momentum; nesterov; rmsprop)")
    locnet_lr_mult: float = _opt(1.0, "learning-rate multiplier for the localisation nets")
    whiten: bool = _opt(False, "initialise the first conv's filters from a whitening of the training images' "
                               "patches, as airbench does (they stay trainable)")
    dropout: float = _opt(0.0, "dropout probability on the hidden fully connected layer while training")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy loss")
    ema: float = _opt(0.0, "decay of an exponential moving average of the weights (e.g. 0.999), which is then "
                           "the model evaluated and saved (0: off)")
    jitter_rot: float = _opt(0.0, "augmentation: random rotation of each training image within ± this many degrees")
    jitter_scale: float = _opt(0.0, "augmentation: random scale factor within 1 ± this")
    jitter_shift: float = _opt(0.0, "augmentation: random shift of each axis within ± this fraction of the side")
    jitter_tilt: float = _opt(0.0, "augmentation: each training image seen up to this many degrees off-axis, "
                                   "about its vertical or horizontal axis (drawn per image), as the robustness "
                                   "report's tilt (below 70)")
    jitter_content_scale: bool = _opt(False, "augmentation: draw the content's size factor, not the sampler's, "
                                             "within 1 ± --jitter-scale (0.4: content at 0.6-1.4 times its size, "
                                             "the robustness report's range)")
    jitter_graded: bool = _opt(False, "augmentation: scale each image's geometric draws by one draw uniform in "
                                      "0..1, so that mild distortions are common and the full ranges still occur")
    jitter_calm_epochs: int = _opt(0, "with --jitter-graded: the last this many epochs draw each image's magnitude "
                                      "in 0..1/3 instead of 0..1, so that training ends on mild distortions")
    jitter_blur: float = _opt(0.0, "augmentation: Gaussian blur of each training image, std uniform in 0..this "
                                   "many pixels")
    seed: int = _opt(1, "random seed (model init, batch order, subset, augmentation)")

    # ------------------------------------------------------------------ derived
    @property
    def widths(self) -> str:
        return self.cnn or model_spec(self.net).widths

    @property
    def judged_split(self) -> str:
        """The split a run is scored and judged on: ``val`` with --val (such a run never scores the test set,
        which stays blind while choosing), else ``test`` (after the final epoch)."""
        return "val" if self.val else "test"

    @property
    def transform_spec(self) -> str:
        """The transformers' family as models.py takes it: ``--transform``, or the affine restriction."""
        chosen = [name for flag, name in ((self.rot, "rotation"), (self.sca, "scale"), (self.tra, "translation"))
                  if flag]
        return "+".join(chosen) or self.transform

    @property
    def transformers(self) -> dict[int, str]:
        spec = {1: self.locnet if self.st else "", 2: self.locnet2, 3: self.locnet3}
        return {position: widths for position, widths in spec.items() if widths}

    @property
    def geometric_jitter(self) -> bool:
        """Whether training images are moved, scaled, turned or tilted."""
        return bool(self.jitter_rot or self.jitter_scale or self.jitter_shift or self.jitter_tilt)

    def network(self) -> ConvNet:
        """A network with fresh weights, as this config describes it."""
        return build_model(self.net, **self.model_options())

    def model_options(self) -> dict:
        """Keyword arguments for ``create_model(self.net, ...)``."""
        return dict(cnn=self.widths, image_size=self.image_size, transformers=self.transformers,
                    transform=self.transform_spec, tps_grid=self.tps_grid, passes=self.passes,
                    locnet_act=self.locnet_act, multiscale=self.ms,
                    cnorm=self.cnorm, cnorm_kernel=self.cnorm_kernel, dropout=self.dropout,
                    legacy_norm=self.legacy_norm, batchnorm=self.batchnorm)

    # ------------------------------------------------------------------ checks and I/O
    def validate(self) -> "TrainConfig":
        """Raise StnError naming the first bad value; return self."""
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices and value not in choices:
                raise StnError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}, got {value!r}")
        spec = model_spec(self.net)
        positive = {"image_size": self.image_size, "epochs": self.epochs, "batch_size": self.batch_size,
                    "lr": self.lr, "step_epochs": self.step_epochs, "locnet_lr_mult": self.locnet_lr_mult,
                    "passes": self.passes}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise StnError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
        positive["val_tracks"] = self.val_tracks
        for name, value in positive.items():
            if value <= 0:
                raise StnError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name in ("n", "lr_decay", "weight_decay", "momentum", "gamma", "warmup", "jitter_rot", "jitter_scale",
                     "jitter_shift", "jitter_tilt", "jitter_blur", "dropout", "label_smoothing", "ema", "straighten"):
            if getattr(self, name) < 0:
                raise StnError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        for name in ("jitter_scale", "dropout", "label_smoothing", "warmup", "ema"):
            if getattr(self, name) >= 1:
                raise StnError(f"--{name.replace('_', '-')} must be below 1, got {getattr(self, name)}")
        if self.jitter_tilt >= MAX_TILT:
            raise StnError(f"--jitter-tilt must be below {MAX_TILT}, got {self.jitter_tilt}")
        if self.straighten and not self.transformers:
            raise StnError("--straighten acts on a transformer: add one (--st, --locnet2 or --locnet3)")
        if self.straighten and not self.geometric_jitter:
            raise StnError(f"--straighten compares each image with its jittered view: give a geometric jitter "
                           f"({GEOMETRIC_JITTER})")
        if self.jitter_graded and not self.geometric_jitter:
            raise StnError(f"--jitter-graded scales the geometric jitter: give one ({GEOMETRIC_JITTER})")
        if self.jitter_calm_epochs and not self.jitter_graded:
            raise StnError("--jitter-calm-epochs caps the graded jitter's magnitude: add --jitter-graded")
        if not 0 <= self.jitter_calm_epochs < self.epochs:
            raise StnError(f"--jitter-calm-epochs must be at least 0 and below --epochs ({self.epochs}), "
                           f"got {self.jitter_calm_epochs}")
        if self.optimizer == "nesterov" and self.momentum <= 0:
            raise StnError("--optimizer nesterov needs --momentum > 0")
        spec.parse_widths(self.cnn)
        if self.transform != "affine" and (self.rot or self.sca or self.tra):
            raise StnError(f"--rot, --sca and --tra restrict the affine family, not --transform {self.transform}")
        check_tps_grid(self.tps_grid)
        check_passes(create_family(self.transform_spec, self.image_size, self.tps_grid), self.passes)
        if self.val and self.test_curve:
            raise StnError("--test-curve scores the test set, which a run with --val never does (the test set stays "
                           "blind while choosing); score a finished run with `stn-gtsrb eval RUN`")
        for position, widths in self.transformers.items():
            option = "--st" if position == 1 else f"--locnet{position}"
            if position not in spec.positions:
                raise StnError(f"{option} puts a transformer before conv block {position}, which {self.net} lacks "
                               f"(it has {spec.blocks}: transformer positions {', '.join(map(str, spec.positions))})")
            parse_widths(widths, 3, "--locnet" + ("" if position == 1 else str(position)))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Options by name (old names included: :func:`current_names`), type-checked; not yet validated."""
        values = current_names(values)
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise StnError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(known)}")
        for name, value in values.items():
            expected = type(known[name].default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise StnError(f"option {name} must be {expected.__name__}, got {value!r}")
        return cls(**values)

    @classmethod
    def from_saved(cls, values: dict) -> "TrainConfig":
        """A config read back from a run or checkpoint: options it predates take the value that
        reproduces how it was trained (``SAVED_BEFORE``), the others their defaults."""
        if not isinstance(values, dict):
            raise StnError(f"a saved config must be a dict of options, got {type(values).__name__}")
        values = {**SAVED_BEFORE, **values}
        values.setdefault("val_seed", values.get("seed", 1))  # the validation tracks followed --seed
        return cls.from_dict(values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def current_names(values: dict) -> dict:
    """Options with any old name (``RENAMED``: ``no_cnorm = true`` and the like, as saved configs, recipes and
    grids wrote them) under its current one, a bool value inverted."""
    return {RENAMED.get(name, name): not value if name in RENAMED and isinstance(value, bool) else value
            for name, value in values.items()}

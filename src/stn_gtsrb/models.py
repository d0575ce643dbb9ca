"""Networks: a registry of conv nets with optional spatial transformers.

``build_model(name, **options)`` builds a registered network; ``list_models()``
names them and ``model_spec(name)`` gives what the registration says of one:
its default widths, its number of conv blocks (derived from them) and the
positions where a transformer may sit, from which TrainConfig's checks and the CLI's help derive
(``stn_gtsrb.create_model`` also loads pretrained weights). Adding a network is
one ``@register_model(...)`` on its builder. Both shipped networks follow
Moodstocks' ``gtsrb.torch``:

* ``lecun``: 2 conv blocks (5×5), fc, classifier; widths ``"108,200,100"``.
* ``idsia``: 3 conv blocks (7×7, 4×4, 4×4), fc, classifier; widths
  ``"150,200,300,350"``.

A conv block is conv (padding 2) → ReLU → max-pool 2 → contrastive
normalisation (Torch7-style, see normalization.py; switch off with
``cnorm=False``); ``batchnorm=True`` adds BatchNorm between conv and ReLU.
A spatial transformer may sit before conv block *i*
(``transformers={i: "200,300,200"}``, i from 1). With ``multiscale=True``
the last block's input, max-pooled to the block's output size, is
concatenated with its output before the fc layer.

``model(x)`` maps ``(B, 3, S, S)`` to logits ``(B, num_classes)``;
``model(x, return_thetas=True)`` also returns ``{position: theta}`` (its shape
depends on the transform family: ``(B, 2, 3)`` affine, ``(B, 3, 3)``
projective, ``(B, K², 2)`` thin-plate spline; see families.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .classes import NUM_CLASSES
from .errors import StnError
from .families import TPS_GRID
from .normalization import KERNELS, ContrastiveNorm
from .transformer import SpatialTransformer

PADDING = 2  # every conv of the original uses padding 2


@dataclass(frozen=True)
class ModelSpec:
    """A registered network: its builder and the facts the config and the CLI check against."""

    name: str
    build: Callable[..., "ConvNet"]  # (widths: tuple of blocks + 1 ints, NetOptions) -> ConvNet
    widths: str  # default --cnn: each conv block's channels, then the hidden fc layer's units

    @property
    def blocks(self) -> int:
        """Conv blocks, one per width but the last (the fc layer's); a transformer may sit before each."""
        return len(self.widths.split(",")) - 1

    @property
    def positions(self) -> tuple[int, ...]:
        """Where a transformer may sit: before conv block 1, 2, ..."""
        return tuple(range(1, self.blocks + 1))

    def parse_widths(self, spec: str, what: str = "--cnn") -> tuple[int, ...]:
        """``spec`` (empty: the default) as ``blocks + 1`` positive ints; else StnError."""
        return parse_widths(spec or self.widths, self.blocks + 1, f"{what} for {self.name}")

    def summary(self) -> str:
        """One line for help texts."""
        return f"{self.name} ({self.blocks} conv block{'s' if self.blocks > 1 else ''}; widths {self.widths})"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(*, widths: str) -> Callable:
    """Decorator registering ``builder(widths, options: NetOptions) -> ConvNet`` under its function name, with its
    default widths, which give its number of conv blocks (see :class:`ModelSpec`)."""
    def register(build: Callable[..., "ConvNet"]) -> Callable[..., "ConvNet"]:
        _REGISTRY[build.__name__] = ModelSpec(build.__name__, build, widths)
        return build
    return register


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The registration of network ``name``; StnError listing the valid names if there is none."""
    if name not in _REGISTRY:
        raise StnError(f"unknown network {name!r}; valid: {', '.join(list_models())}")
    return _REGISTRY[name]


def build_model(name: str, cnn: str = "", **options) -> "ConvNet":
    """Build the registered network ``name``, widths ``cnn`` (empty: its default), with keyword ``options``
    (the fields of :class:`NetOptions`; fresh weights). ``stn_gtsrb.create_model`` (checkpoints.py) adds
    ``pretrained=True``.
    """
    spec = model_spec(name)
    unknown = sorted(set(options) - {f.name for f in fields(NetOptions)})
    if unknown:
        raise StnError(f"unknown model option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; valid: "
                       f"cnn, {', '.join(f.name for f in fields(NetOptions))}")
    model = spec.build(spec.parse_widths(cnn), NetOptions(**options))
    if model.depth != spec.blocks:
        raise StnError(f"network {name}'s widths give {spec.blocks} conv blocks but it builds {model.depth}")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parse_widths(spec: str | tuple | list, count: int, what: str) -> tuple[int, ...]:
    """``"150,200,300"`` -> ``(150, 200, 300)``, checking there are ``count`` positive integers."""
    try:
        widths = tuple(int(w) for w in (spec.split(",") if isinstance(spec, str) else spec))
    except ValueError:
        widths = ()
    if len(widths) != count or min(widths) <= 0:
        raise StnError(f"{what} must be {count} comma-separated positive integers, got {spec!r}")
    return widths


def conv_block(in_channels: int, out_channels: int, kernel: int, cnorm_kernel: str | None,
               legacy_norm: bool = False, batchnorm: bool = False) -> nn.Sequential:
    """conv (padding 2) [→ BatchNorm] → ReLU → max-pool 2 [→ contrastive normalisation]."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=PADDING, bias=not batchnorm)
    layers = [conv, *([nn.BatchNorm2d(out_channels)] if batchnorm else []), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    if cnorm_kernel:
        layers.append(ContrastiveNorm(cnorm_kernel, legacy_norm))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class NetOptions:
    """What a registered network's builder takes besides its widths: ``create_model``'s keywords."""

    image_size: int = 32  # side of the square input images
    num_classes: int = NUM_CLASSES  # classifier outputs
    in_channels: int = 3  # input channels
    transformers: dict = field(default_factory=dict)  # {block position (1-based): loc-net widths "c1,c2,fc"}
    transform: str | dict = "affine"  # transform family of every transformer, or {position: family} (families.py)
    tps_grid: int = TPS_GRID  # control points per side of the "tps" family's spline
    passes: int = 1  # times each transformer is applied (transformer.py)
    locnet_act: str = "relu"  # the loc-nets' activation: relu or leaky (transformer.LOCNET_ACTIVATIONS)
    multiscale: bool = False  # concatenate the last block's pooled input to its output
    cnorm: bool = True  # contrastive normalisation after each block
    cnorm_kernel: str = "uniform9"  # its kernel (normalization.py)
    legacy_norm: bool = False  # its stn-gtsrb 0.1 formula
    batchnorm: bool = False  # BatchNorm between each conv and its ReLU (the conv then has no bias)
    dropout: float = 0.0  # probability of zeroing each unit of the hidden fc layer while training


class ConvNet(nn.Module):
    """Conv blocks, each optionally preceded by a spatial transformer; fc; classifier.

    Args:
        convs: ``[(out_channels, kernel), ...]`` for the conv blocks.
        fc_width: units of the hidden fully connected layer.
        options: everything else (:class:`NetOptions`).
    """

    def __init__(self, convs: list[tuple[int, int]], fc_width: int, options: NetOptions = NetOptions()):
        super().__init__()
        transformers, transform = dict(options.transformers), options.transform
        bad = sorted(set(transformers) - set(range(1, len(convs) + 1)))
        if bad:
            raise StnError(f"this network has transformer positions 1 to {len(convs)} (before each conv block), "
                           f"got {bad}")
        if options.cnorm and options.cnorm_kernel not in KERNELS:
            raise StnError(f"unknown cnorm kernel {options.cnorm_kernel!r}; valid: {', '.join(KERNELS)}")
        if not 0 <= options.dropout < 1:
            raise StnError(f"dropout must be in [0, 1), got {options.dropout}")
        self.image_size, self.multiscale, self.depth = options.image_size, options.multiscale, len(convs)
        self.dropout = options.dropout
        self.blocks = nn.ModuleList()
        self.transformers = nn.ModuleDict()
        probe = torch.zeros(1, options.in_channels, options.image_size, options.image_size)
        with torch.no_grad():
            for position, (width, kernel) in enumerate(convs, 1):
                if position in transformers:
                    family = transform.get(position, "affine") if isinstance(transform, dict) else transform
                    widths = parse_widths(transformers[position], 3, f"loc-net widths at position {position}")
                    self.transformers[str(position)] = SpatialTransformer(probe.shape[1], probe.shape[2], widths,
                                                                          family, options.tps_grid, options.passes,
                                                                          options.locnet_act)
                self.blocks.append(conv_block(probe.shape[1], width, kernel,
                                              options.cnorm_kernel if options.cnorm else None, options.legacy_norm,
                                              options.batchnorm))
                probe = self._probe(position, probe)
                if min(probe.shape[2:]) < 1:
                    raise StnError(f"image size {options.image_size} is too small for this network")
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(probe[0].numel(), fc_width), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(fc_width, options.num_classes)

    def _probe(self, position: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``position`` on ``x`` in eval mode: finds the map sizes without touching BatchNorm statistics."""
        block = self.blocks[position - 1].eval()
        y = self._block(position, x)
        block.train()
        return y

    def _block(self, position: int, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks[position - 1](x)
        if self.multiscale and position == self.depth:
            y = torch.cat([y, F.adaptive_max_pool2d(x, y.shape[2:])], dim=1)
        return y

    def trace(self, x: torch.Tensor) -> tuple[torch.Tensor, dict, dict]:
        """Logits, and per transformer position its theta and output map."""
        thetas, warped = {}, {}
        for position in range(1, self.depth + 1):
            if str(position) in self.transformers:
                x, thetas[position] = self.transformers[str(position)](x)
                warped[position] = x
            x = self._block(position, x)
        hidden = F.dropout(self.fc(x), self.dropout, self.training)  # functional: keeps the state-dict keys
        return self.classifier(hidden), thetas, warped

    def forward(self, x: torch.Tensor, return_thetas: bool = False):
        logits, thetas, _ = self.trace(x)
        return (logits, thetas) if return_thetas else logits

    @torch.no_grad()
    def lead_theta(self, x: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The first transformer's position and its theta for ``x``, from the blocks before it alone, with
        BatchNorm on its running statistics (a side view: the statistics and the training mode stay as they were)."""
        position = min(int(p) for p in self.transformers)
        for block in range(1, position):
            x = self._probe(block, x) if self.blocks[block - 1].training else self._block(block, x)
        return position, self.transformers[str(position)].theta(x)

    def localisation_parameters(self) -> list[nn.Parameter]:
        """Parameters of the localisation nets (for a separate learning rate)."""
        return list(self.transformers.parameters())


@register_model(widths="108,200,100")
def lecun(widths: tuple[int, ...], options: NetOptions) -> ConvNet:
    """LeCun-style net: 2 conv blocks (5×5), widths ``conv1,conv2,fc``."""
    c1, c2, fc = widths
    return ConvNet([(c1, 5), (c2, 5)], fc, options)


@register_model(widths="150,200,300,350")
def idsia(widths: tuple[int, ...], options: NetOptions) -> ConvNet:
    """IDSIA-like net: 3 conv blocks (7×7, 4×4, 4×4), widths ``conv1,conv2,conv3,fc``."""
    c1, c2, c3, fc = widths
    return ConvNet([(c1, 7), (c2, 4), (c3, 4)], fc, options)

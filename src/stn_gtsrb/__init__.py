"""stn-gtsrb: spatial transformer networks on GTSRB.

Python API::

    from stn_gtsrb import GTSRB, load_split, create_model, TrainConfig, train

    model, cfg, normalizer = load_pretrained()   # the shipped net (a transformer before conv2)
    logits = model(normalizer(images_uint8))     # (N, 3, 32, 32) -> (N, 43)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stn-gtsrb")  # one place: pyproject.toml
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"

from .archives import DataLocation  # noqa: E402
from .checkpoints import create_model, export, load_pretrained, load_trained, pretrained_path  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .data import GTSRB, load_split, prepare  # noqa: E402
from .errors import StnError  # noqa: E402
from .models import ConvNet, list_models, model_spec, register_model  # noqa: E402
from .scoring import evaluate  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["ConvNet", "DataLocation", "GTSRB", "StnError", "TrainConfig", "create_model", "evaluate", "export",
           "list_models", "load_pretrained", "load_split", "load_trained", "model_spec", "prepare", "pretrained_path",
           "register_model", "train"]

"""stn-gtsrb: spatial transformer networks on GTSRB.

Python API::

    from stn_gtsrb import GTSRB, load_split, create_model, TrainConfig, train
"""

__version__ = "0.1.0"

from .config import TrainConfig  # noqa: E402
from .data import GTSRB, load_split, prepare  # noqa: E402
from .errors import StnError  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .train import evaluate, train  # noqa: E402

__all__ = ["GTSRB", "StnError", "TrainConfig", "create_model", "evaluate", "list_models", "load_split",
           "prepare", "train"]

"""Named recipes: TOML files of TrainConfig values shipped in ``stn_gtsrb/recipes/``, or the user's own.

A recipe file holds ``option = value`` lines, with TrainConfig's field names::

    net = "idsia"
    epochs = 14

``stn-gtsrb train --recipe NAME_OR_PATH`` starts from it (options given on the
command line override it; the run's config.json records the resolved values),
and a grid file's top-level ``recipe = "..."`` starts its ``[base]`` from it.
"""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig
from .errors import StnError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

RECIPE_DIR = Path(__file__).parent / "recipes"


def list_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPE_DIR.glob("*.toml"))


def recipe_path(name: str) -> Path:
    """The file of a shipped recipe, or ``name`` itself when it is a path to a TOML file."""
    if name in list_recipes():
        return RECIPE_DIR / f"{name}.toml"
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    raise StnError(f"unknown recipe {name!r}; valid: {', '.join(list_recipes())}, or a path to a .toml file")


def load_recipe(name: str) -> dict:
    """The options of a recipe (shipped name or path), checked: unknown keys and wrong types are refused."""
    path = recipe_path(name)
    try:
        values = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StnError(f"cannot read recipe {path}: {error}") from None
    try:
        TrainConfig.from_dict(values).validate()
    except StnError as error:
        raise StnError(f"recipe {path}: {error}") from None
    return values

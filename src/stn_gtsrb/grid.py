"""Grid files: base options, the options that vary, and the cells they expand to.

A grid file (TOML) names base options and, for any option, a list of values;
the cells are the cartesian product, each run with ``repeats`` seeds::

    recipe = "paper"                  # optional: [base] starts from a recipe (recipes.py)
    repeats = 2                       # optional (or --repeats)
    [base]                            # options shared by every cell
    net = "idsia"
    epochs = 14
    [grid]                            # option -> list of values
    cnn = ["150,200,300,350", "100,150,250,300"]
    st = [false, true]

Option names are exactly those of ``stn-gtsrb train`` (TrainConfig's fields,
with ``-`` or ``_``). Options that must change together form one axis whose
values are tables, under any label: ``"sca+tra" = [{}, {sca = true, tra = true}]``.
Recipes can vary too, when the file names none at the top: ``recipe = ["minute",
"fast"]`` in ``[grid]``, or ``recipe = "fast"`` inside a table; each becomes the
recipe's options as they are when the grid is loaded, so a saved grid keeps them.
Every cell is validated when the grid is loaded, before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from .config import RENAMED, TrainConfig, current_names
from .errors import StnError
from .recipes import load_recipe

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclass
class Grid:
    """Base options, the options that vary (name -> values), and seeds per cell."""

    base: dict
    axes: dict
    repeats: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _options(values: dict, where: str) -> dict:
    """Grid-file options under TrainConfig's field names (``-`` as ``_``; an old name as its current one)."""
    valid = [f.name for f in dataclasses.fields(TrainConfig)]
    options = current_names({key.replace("-", "_"): value for key, value in values.items()})
    for key, name in zip(values, options, strict=True):
        if name not in valid:
            raise StnError(f"{where}: unknown option {key!r}; valid: {', '.join(valid)}")
    return options


def _cell_recipe(value: dict, top_recipe: bool, base: dict, where: str) -> dict:
    """A table of options whose ``recipe`` key, if any, is replaced by that recipe's options (the table's own
    options over them). Refused beside a recipe at the top, or where [base] sets what the recipe sets."""
    if "recipe" not in value:
        return _options(value, where)
    if top_recipe:
        raise StnError(f"{where}: a cell names a recipe, and so does the file's top; name it in one place")
    value = dict(value)
    recipe = load_recipe(value.pop("recipe"))
    clash = sorted(set(recipe) & set(base))
    if clash:
        raise StnError(f"{where}: [base] sets {', '.join(clash)}, which the cell's recipe sets too")
    return {**recipe, **_options(value, where)}


def load_grid(path: Path | str, repeats: int | None = None) -> Grid:
    """Read and check a grid file; ``repeats`` overrides the file's."""
    path = Path(path)
    try:
        content = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StnError(f"grid file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise StnError(f"{path} is not valid TOML: {error}") from None
    unknown = sorted(set(content) - {"recipe", "base", "grid", "repeats"})
    if unknown:
        raise StnError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; valid: recipe, repeats, [base], "
                       "[grid]")
    base = load_recipe(content["recipe"]) if "recipe" in content else {}
    base.update(_options(content.get("base", {}), f"{path} [base]"))
    axes = {}
    for key, values in content.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            raise StnError(f"{path} [grid]: {key} must be a non-empty list of values, got {values!r}")
        if key == "recipe":  # recipes that vary: each a table of its options
            values = [{"recipe": value} for value in values]
        if all(isinstance(v, dict) for v in values):  # options set together
            where = f"{path} [grid] {key}"
            axes[key] = [_cell_recipe(value, "recipe" in content, base, where) for value in values]
        else:
            options = [_options({key: value}, f"{path} [grid]") for value in values]  # one option, maybe renamed
            axes[next(iter(options[0]))] = [value for option in options for value in option.values()]
    repeats = content.get("repeats", 1) if repeats is None else repeats
    if not isinstance(repeats, int) or repeats < 1:
        raise StnError(f"repeats must be a positive integer, got {repeats!r}")
    grid = Grid(base, axes, repeats)
    expand(grid)  # validates every cell now, before anything runs
    return grid


def expand(grid: Grid) -> list[TrainConfig]:
    """Every cell × seed as a validated TrainConfig (seeds: base seed, +1, ...), each run once
    (a ``seed`` axis with ``repeats`` > 1 can name the same run twice)."""
    configs = {}
    for values in itertools.product(*grid.axes.values()):
        options = dict(grid.base)
        for axis, value in zip(grid.axes, values, strict=True):
            options.update(value if isinstance(value, dict) else {axis: value})
        cfg = TrainConfig.from_dict(options)
        try:
            cfg.validate()
        except StnError as error:
            raise StnError(f"cell {describe(options, axis_options(grid))}: {error}") from None
        for r in range(grid.repeats):
            seeded = dataclasses.replace(cfg, seed=cfg.seed + r)
            configs.setdefault(run_id(seeded), seeded)
    return list(configs.values())


def axis_options(grid: Grid) -> list[str]:
    """The option names the grid varies: each scalar axis, and the keys whose value differs between the
    tables of a table-valued axis (a recipe's options that every cell shares are left out)."""
    names = []
    for axis, values in grid.axes.items():
        keys = [axis]
        if isinstance(values[0], dict):
            keys = [k for v in values for k in v if len({json.dumps(w.get(k)) for w in values}) > 1]
        for key in keys:
            if key not in names:
                names.append(key)
    return names


def unused(config: dict, key: str) -> bool:
    """Whether an option has no effect in this config: the input loc-net's widths without an input transformer."""
    return key == "locnet" and not config.get("st", TrainConfig.st)


def describe(options: dict, keys) -> str:
    """``key=value`` for each key (a progress line); ``-`` for an unused option."""
    default = TrainConfig().to_dict()
    values = {k: "-" if unused(options, k) else json.dumps(options.get(k, default[k])) for k in keys}
    return " ".join(f"{k}={v}" for k, v in values.items()) or "(base)"


def run_id(cfg: TrainConfig) -> str:
    """A short hash of the options that differ from their defaults (stable when options are added; a renamed
    switch that is off is hashed under its old name, ``no_cnorm: true``, so ids stay as they were)."""
    default = TrainConfig().to_dict()
    changed = {name: value for name, value in cfg.to_dict().items() if value != default[name]}
    for old, new in RENAMED.items():
        if new in changed:
            changed[old] = not changed.pop(new)
    return hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:12]

"""The package's shape: imports flow one way, and every module is short and documented."""

from __future__ import annotations

import ast
from pathlib import Path

import stn_gtsrb

PACKAGE = Path(stn_gtsrb.__file__).parent
MAX_LINES = 400


def internal_imports(path: Path) -> set[str]:
    """The package modules that ``path`` imports anywhere in it (module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stn_gtsrb."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("stn_gtsrb.")}
    return {name.split(".")[0] for name in names}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def package_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``__init__``, which gathers the API, left out)."""
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    return {module: (internal_imports(PACKAGE / f"{module}.py") & modules) - {module} for module in modules}


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_in_the_package():
    assert find_cycle(package_graph()) is None


def test_models_imports_nothing_above_itself():
    assert internal_imports(PACKAGE / "models.py") <= {"classes", "errors", "families", "normalization", "transformer"}


def test_the_geometry_below_the_families_below_the_transformer():
    assert internal_imports(PACKAGE / "geometry.py") == set()
    assert internal_imports(PACKAGE / "families.py") <= {"errors", "geometry"}
    assert internal_imports(PACKAGE / "transformer.py") <= {"errors", "families", "geometry"}


def test_the_training_loop_knows_nothing_of_pictures():
    assert "visualize" not in internal_imports(PACKAGE / "train.py")


def test_every_module_opens_with_a_docstring_and_stays_short():
    for path in PACKAGE.glob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no module docstring"
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.name} has {lines} lines (at most {MAX_LINES})"


def test_the_contributing_guide_lists_every_module():
    guide = (PACKAGE.parents[1] / "CONTRIBUTING.md").read_text()
    missing = [path.name for path in PACKAGE.glob("*.py") if path.stem != "__init__" and f"`{path.name}`" not in guide]
    assert not missing, f"CONTRIBUTING.md's module table lacks {missing}"

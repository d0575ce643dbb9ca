"""Every sentence carried by its evidence: the docs against the code, the repository and the committed results.

- CI runs exactly the README's test command, on a fresh home and cache;
- the options table of docs/training.md names every option of ``stn-gtsrb train``;
- every repository path named in the docs, the grid files' comments and the pretrained record exists;
- the README's and the model card's headline figures are those of the committed results they cite.
"""

from __future__ import annotations

import json
import re
import statistics
from importlib.metadata import distribution
from pathlib import Path

import pytest

import stn_gtsrb
from stn_gtsrb.checkpoints import PRETRAINED_DIR
from stn_gtsrb.cli_parser import build_parser
from stn_gtsrb.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MODEL_CARD = (ROOT / "docs" / "model-card.md").read_text()
RESULTS = ROOT / "benchmarks" / "results"


def test_ci_runs_exactly_the_readme_test_command_on_a_fresh_home_and_cache():
    command = re.search(r"The tests:\n\n```bash\n(.+)\n```", README).group(1)
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == command
    exports = " ".join(line for line in lines if line.startswith("export "))
    for variable in ("HOME", "XDG_CACHE_HOME"):
        assert f'{variable}="$fresh/' in exports


def test_the_version_has_one_place_and_the_licence_ships():
    assert stn_gtsrb.__version__ == distribution("stn-gtsrb").version
    assert 'version = "' + stn_gtsrb.__version__ + '"' in (ROOT / "pyproject.toml").read_text()
    assert f"## {stn_gtsrb.__version__}" in (ROOT / "CHANGELOG.md").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "LICENSE" in (distribution("stn-gtsrb").metadata.get_all("License-File") or [])  # carried by the wheel
    assert "The code is MIT-licensed" in README


def test_the_declared_torch_minimum_is_the_version_ci_tests():
    minimum = re.search(r'"torch>=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    pinned = re.search(r"torch==([\d.]+)", (ROOT / ".ci" / "run").read_text()).group(1)
    assert pinned.startswith(minimum + ".") or pinned == minimum
    assert f"torch=={pinned}" in README


# ---------------------------------------------------------------- options

def train_options() -> list[set[str]]:
    """The long and short spellings of each option of ``stn-gtsrb train`` (a switch's ``--no-`` form left out)."""
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    return [{s for s in action.option_strings if not s.startswith("--no-")}
            for action in commands.choices["train"]._actions if action.dest != "help"]


def test_the_training_docs_table_names_every_train_option():
    text = (ROOT / "docs" / "training.md").read_text()
    table = text.split("## Options", 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0]
    first_cells = "\n".join(row.split(" | ")[0] for row in table.splitlines())
    named = set(re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*", first_cells))
    named |= {"--" + option[5:] for option in named if option.startswith("--no-")}
    missing = [sorted(spellings) for spellings in train_options() if not spellings & named]
    assert not missing, f"docs/training.md's options table lacks {missing}"


# ---------------------------------------------------------------- repository paths

TOP = ("src", "tests", "benchmarks", "docs", ".ci")
BARE_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*-]*[\w/*])" % "|".join(re.escape(t) for t in TOP))
LINK = re.compile(r"\]\(([^)#\s]+)")
PLACEHOLDER = re.compile(r"[A-Z]{2,}|<|\.\.\.|\bX\b")  # NAME.toml, runs/<id>, X


def named_paths(path: Path) -> list[tuple[str, Path]]:
    """(as written, resolved) for each repository path that ``path`` names: links relative to its
    folder, bare paths relative to the repository's root."""
    text = path.read_text()
    if path.suffix == ".toml":
        text = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    found = [(link, path.parent / link) for link in LINK.findall(text) if "://" not in link
             and not link.startswith("mailto:")]
    found += [(bare, ROOT / bare) for bare in BARE_PATH.findall(text)]
    return [(written, target) for written, target in found if not PLACEHOLDER.search(written)]


DOCUMENTS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
                    ROOT / "benchmarks" / "README.md", ROOT / "benchmarks" / "results" / "robustness" / "README.md",
                    *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks" / "grids").glob("*.toml"),
                    *(ROOT / "src" / "stn_gtsrb" / "recipes").glob("*.toml")])


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_repository_path_a_document_names_exists(document):
    own_results = f"benchmarks/results/{document.stem}"  # a grid's outputs appear when it runs
    missing = [written for written, target in named_paths(document)
               if not (any(target.parent.glob(target.name)) if "*" in written else target.exists())
               and not (document.parent.name == "grids" and written.startswith(own_results))]
    assert not missing, f"{document.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_pretrained_records_name_existing_runs():
    for record in PRETRAINED_DIR.glob("*.json"):
        run = ROOT / json.loads(record.read_text())["run"]
        assert (run / "config.json").exists(), f"{record.name} names {run}, which holds no run"


# ---------------------------------------------------------------- headline figures

def seed_figures(*folders: str, with_transformer: bool) -> list[float]:
    """Test accuracies of the committed full-set runs of the ``accurate`` net, seed order."""
    records = [json.loads(line) for folder in folders
               for line in (RESULTS / folder / "results.jsonl").read_text().splitlines()]
    chosen = [r for r in records if r["status"] == "ok" and bool(r["config"]["locnet2"]) == with_transformer
              and not r["config"]["locnet3"]]
    return [r["test_acc"] for r in sorted(chosen, key=lambda r: r["seed"])]


def summary(figures: list[float]) -> str:
    """``mean ± sample std (each, ...)`` as the docs write it."""
    each = ", ".join(f"{f:.2f}" for f in figures)
    return f"{statistics.mean(figures):.2f} ± {statistics.stdev(figures):.2f}% ({each})"


@pytest.mark.parametrize("with_transformer", [True, False], ids=["transformer", "no-transformer"])
def test_the_accurate_rows_are_their_committed_seeds(with_transformer):
    figures = seed_figures("accurate-96-full-seeds", "accurate-96-full-ablation", "accurate-96-full-seeds-3-5",
                           with_transformer=with_transformer)
    assert len(figures) == 5
    for document in (README, MODEL_CARD):
        assert summary(figures) in document.replace("%**", "%")


@pytest.mark.parametrize(("recipe", "folder"), [("fast", "fast-wide-full-seeds"), ("minute", "minute-full-seeds")])
def test_the_speed_rows_are_their_recipes_committed_seeds(recipe, folder):
    records = [json.loads(line) for line in (RESULTS / folder / "results.jsonl").read_text().splitlines()]
    widths = load_recipe(recipe)["cnn"]
    figures = [r["test_acc"] for r in sorted(records, key=lambda r: r["seed"])
               if r["status"] == "ok" and r["config"]["cnn"] == widths]
    assert len(figures) == 5
    assert summary(figures) in README.replace("%**", "%")


def test_the_shipped_models_figure_is_its_record():
    record = json.loads(next(PRETRAINED_DIR.glob("*.json")).read_text())
    figure = f"{record['test_acc']:.2f}% ({record['correct']} / {record['total']})"
    assert figure in README
    assert f"{record['test_acc']:.2f}%" in MODEL_CARD

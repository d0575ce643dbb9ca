"""The product talks about the product: no tracked text file narrates how the project was developed.

Flagged: a working session, a tracker issue, a development round (numbered or counted), a tracker reference (a hash
followed by digits), the original work called "the seed" (Moodstocks' gtsrb.torch is "the original"),
and, in the user docs (README.md, CONTRIBUTING.md, docs/), the continuous-integration folder beside the
checkout (users say ``--source DIR``). Words that mean something else are allowed by name (onnxruntime's
``InferenceSession`` and the attribute holding one, pytest's ``scope="session"``, subprocess's
``start_new_session``, a CSS colour such as ``stroke: #555``). Committed run logs and records are history by
nature and are not scanned: ``*.jsonl``, ``*.log``, ``*.out``, and ``results.md`` and ``*.json`` inside
``benchmarks/results`` and ``benchmarks/archive``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HISTORY = [
    ("a working session", re.compile(r"\bsessions?\b", re.IGNORECASE)),
    ("a tracker issue", re.compile(r"\bissues?\s+(?:\d|\")", re.IGNORECASE)),
    ("a numbered round", re.compile(r"\brounds?\s+\d+", re.IGNORECASE)),
    ("a round of work", re.compile(r"\b(?:first|second|third|two|three|later|earlier) rounds?\b", re.IGNORECASE)),
    ("a tracker reference", re.compile(r"(?<![\w&/])#\d{1,5}\b")),
    ("the original called the seed", re.compile(r"\bthe seed(?:'s| project| repository| work| code)\b", re.IGNORECASE)),
]
CI_PATH = ("the CI path in user docs", re.compile(r"\.\./shared\b"))
ALLOWED = re.compile(r"InferenceSession|scope=[\"']session[\"']|start_new_session|\.session\b|:\s*#[0-9a-fA-F]{3,8}\b")

SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()  # the scanner: its examples are its subject
RECORD_SUFFIXES = {".jsonl", ".log", ".out"}
RESULT_FOLDERS = ("benchmarks/results/", "benchmarks/archive/")


def is_record(path: str) -> bool:
    """A committed run log or record: history by nature, kept byte for byte."""
    name = Path(path).name
    if Path(path).suffix in RECORD_SUFFIXES:
        return True
    return path.startswith(RESULT_FOLDERS) and (name == "results.md" or name.endswith(".json"))


def is_user_doc(path: str) -> bool:
    return path in ("README.md", "CONTRIBUTING.md") or path.startswith("docs/")


def hits(path: str, text: str) -> list[str]:
    """``path:line: what`` for each line of ``text`` that talks about the project's history."""
    patterns = HISTORY + ([CI_PATH] if is_user_doc(path) else [])
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = ALLOWED.sub("", line)
        found += [f"{path}:{number}: {what}: {line.strip()[:100]}" for what, rx in patterns if rx.search(line)]
    return found


def tracked_texts() -> list[tuple[str, str]]:
    """(path, text) of every git-tracked text file that is not a run record."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    texts = []
    for path in filter(None, listing.decode().split("\0")):
        if is_record(path) or path == SELF or not (ROOT / path).is_file():
            continue
        data = (ROOT / path).read_bytes()
        if b"\0" in data:
            continue  # binary
        try:
            texts.append((path, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue  # binary
    return texts


def test_no_tracked_file_talks_about_the_projects_history():
    texts = tracked_texts()
    assert any(path == "README.md" for path, _ in texts)
    found = [hit for path, text in texts for hit in hits(path, text)]
    assert not found, "history talk in tracked files:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "line",
    [
        "Progress: finished in " + "session" + " 28.",
        "as asked in " + "issue" + " 17",
        "a later " + "session's machine was slower",
        'targets (' + 'issue "Package, data")',
        "the second " + "round of choosing",
        "see " + "#" + "12",
        "the " + "seed's best configuration",
        "export STN_GTSRB_SOURCE=" + "../shared" + "/gtsrb",
    ],
)
def test_the_scan_flags_history(line):
    assert hits("docs/x.md", line)


@pytest.mark.parametrize(
    "line",
    [
        "sess = onnxruntime.InferenceSession(path)",
        '@pytest.fixture(scope="session")',
        "subprocess.Popen(cmd, start_new_session=True); self.session.run(None, feed)",
        'OnnxClassifier(path).session.run(["theta1"], feed)',
        "#frame { fill: none; stroke: #555; } #regions circle { stroke: #000; }",
        "a known issue with old drivers",
        "the seed fixed for shipping; --seed 3; val seed 2; seeds 1-5",
        "colour #1f77b4; 99.61% rounds to 99.6",
        "results.append(x)  # 3 errors",
    ],
)
def test_the_scan_allows_what_means_something_else(line):
    assert hits("docs/x.md", line) == []


def test_records_are_not_scanned_and_the_ci_path_is_allowed_outside_user_docs():
    assert is_record("benchmarks/results/a/runs/b/log.jsonl")
    assert is_record("benchmarks/archive/results/a/results.md")
    assert is_record("benchmarks/trainer_throughput-amx.log")
    assert not is_record("benchmarks/results/a/README.md")
    assert hits(".ci/run", "ls " + "../shared" + "/gtsrb") == []

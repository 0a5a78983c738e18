"""The front door and the docs site: README's size, the generated configuration reference
covering every config key, every documented run and adaptation passing its checks, and a
strict MkDocs build where mkdocs is installed."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedgray.adapt import check_adapt
from fedgray.cli import build_parser
from fedgray.config import Config
from fedgray.config_reference import reference_markdown
from fedgray.fl.serverapp.preflight import check_data
from fedgray.resolver import load_config
from fedgray.train.kinds import refuse_unsupported

ROOT = Path(__file__).resolve().parents[1]


def dotted_keys(section: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every leaf key of a resolved config, as ``--set`` names it (sections recursed)."""
    for key, value in section.items():
        if isinstance(value, dict) and value:
            yield from dotted_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_the_configuration_reference_lists_every_key_with_its_default() -> None:
    reference = reference_markdown()
    keys = list(dotted_keys(Config().to_dict()))
    assert len(keys) > 60  # all eight sections and their nested ones, not a stub
    rows = {line.split(" | ")[0].strip("| `"): line for line in reference.splitlines()}
    missing = [key for key in keys if key not in rows]
    assert not missing
    assert "| `train.lr` | float | `0.003` | must be > 0 |" in reference
    assert "`fedavg`" in rows["federation.strategy"] and "`krum`" in rows["federation.strategy"]


def test_readme_is_a_front_door_with_the_two_commands_first() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first_block = lines[lines.index("```bash") + 1 :]
    first_block = first_block[: first_block.index("```")]
    assert any("fedgray run configs/quickstart.yaml" in line for line in first_block)
    assert any("pytest -q" in line for line in first_block)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed")
def test_the_docs_build_strictly_with_the_generated_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    done = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (site / "configuration" / "index.html").read_text()
    assert "privacy.target_epsilon" in page and "config-reference" not in page
    assert (site / "guides" / "use-the-model" / "index.html").is_file()


# A documented ``fedgray run`` or ``fedgray adapt`` of a shipped config, with its overrides
# (a shell example may continue lines with a backslash; an inline one may wrap).
EXAMPLE = re.compile(
    r"fedgray (run|adapt) (configs/[\w.-]+\.yaml)((?:\s+(?:\\\n\s*)?--set[ =][^\s`\\]+)*)"
)
# What only a reader has: their own image folder, their own sealed artifact, a number to pick.
READERS_OWN = re.compile(r"=folder:|^backbone\.artifact=|=[A-Z]$")


def documented_examples() -> Iterator[tuple[str, str]]:
    """(where, command) of every such example in README.md and docs/."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        for match in EXAMPLE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            command = match.group(0).replace("\\\n", " ")
            yield f"{page.relative_to(ROOT)}:{line}", " ".join(command.split())


def test_every_documented_run_and_adaptation_passes_its_checks() -> None:
    """Each example, run as written, would get past the checks made before anything
    starts (the config, the method against the task, each split's size and the sites'
    shares): an example asking a dataset for more than it holds fails here, not for a
    reader. Examples naming what only a reader has are left out."""
    examples = list(documented_examples())
    assert len(examples) > 20  # the pages' examples were found, not a pattern that misses
    checked, failures = 0, []
    for where, command in examples:
        args = build_parser().parse_args(shlex.split(command)[1:])
        if any(READERS_OWN.search(item) for item in args.overrides):
            continue
        try:
            config = load_config(ROOT / args.config, args.overrides)
            if args.command == "run":
                check_data(refuse_unsupported(config))
            else:
                check_adapt(config)
        except ValueError as error:  # ConfigError included
            failures.append(f"{where}: {command}: {error}")
        checked += 1
    assert not failures, "\n".join(failures)
    assert checked >= 20

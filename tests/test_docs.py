"""The front door and the docs site: README's size, the generated configuration reference
covering every config key, and a strict MkDocs build where mkdocs is installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedgray.config import Config
from fedgray.config_reference import reference_markdown

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
def test_the_docs_site_builds_strictly_with_the_generated_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    done = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (site / "configuration" / "index.html").read_text()
    assert "privacy.target_epsilon" in page and "config-reference" not in page
    assert (site / "guides" / "use-the-model" / "index.html").is_file()

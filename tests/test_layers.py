"""The layout's rules, read from the source with ``ast`` (no imports run): each fails when
someone breaks it, naming the file and the import."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (absolute names; relative ones resolved), lazy ones too."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    """``file: module`` for every import under ``folder`` of a module in ``forbidden``."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imports(path):
            if any(name == f or name.startswith(f"{f}.") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return sorted(set(found))


ABOVE_BACKBONE = tuple(
    f"fedgray.{room}"
    for room in (
        "adapters",
        "blackbox",
        "tasks",
        "data",
        "train",
        "privacy",
        "fl",
        "owner",
        "deploy",
        "adapt",
        "cli",
        "site",
        "sweep",
        "runs",
        "plots",
    )
)

RULES = {
    "the backbone imports nothing above it": ("fedgray/backbone", ABOVE_BACKBONE),
    "strategies never import the backbone or data": (
        "strategies",
        ("fedgray.backbone", "fedgray.data"),
    ),
    "the library never imports simulations/": ("fedgray", ("simulations",)),
    "strategies never import simulations/": ("strategies", ("simulations",)),
    "privacy knows no Flower": ("fedgray/privacy", ("flwr",)),
    "the local trainer knows no Flower": ("fedgray/train", ("flwr", "fedgray.fl")),
    "the site's room never imports the server's": (
        "fedgray/fl/clientapp",
        ("fedgray.fl.serverapp", "fedgray.fl.simulation"),
    ),
    "the server's room never imports the site's": (
        "fedgray/fl/serverapp",
        ("fedgray.fl.clientapp", "fedgray.fl.simulation"),
    ),
    "what both sides share imports neither": (
        "fedgray/fl/common",
        ("fedgray.fl.clientapp", "fedgray.fl.serverapp", "fedgray.fl.simulation"),
    ),
}


@pytest.mark.parametrize("rule", RULES)
def test_layer_rule(rule: str) -> None:
    folder, forbidden = RULES[rule]
    assert violations(folder, forbidden) == []


def test_the_checker_sees_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    room = tmp_path / "fedgray" / "backbone"
    room.mkdir(parents=True)
    (room / "bad.py").write_text(
        "import os\nfrom ..fl import client\n\ndef f():\n    from fedgray.adapters import x\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert violations("fedgray/backbone", ABOVE_BACKBONE) == [
        "fedgray/backbone/bad.py: fedgray.adapters",
        "fedgray/backbone/bad.py: fedgray.adapters.x",
        "fedgray/backbone/bad.py: fedgray.fl",
        "fedgray/backbone/bad.py: fedgray.fl.client",
    ]

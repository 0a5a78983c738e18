"""The layout's rules, read from the source with ``ast`` (no imports run): each fails when
someone breaks it, naming the file and the import."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path, *, lazy: bool = True) -> Iterator[str]:
    """Every module ``path`` imports (absolute names; relative ones resolved), lazy ones too
    unless ``lazy`` is false (then only its module-level statements count)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree) if lazy else tree.body:
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
    """``file: module`` for every import under ``folder`` (a folder or one file) of a module
    in ``forbidden``."""
    found = []
    top = ROOT / folder
    for path in [top] if top.is_file() else sorted(top.rglob("*.py")):
        for name in imports(path):
            if any(name == f or name.startswith(f"{f}.") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return sorted(set(found))


BELOW_BACKBONE = ("backbone", "vision_ops", "paths")  # paths: where the cache is, nothing else
ABOVE_BACKBONE = tuple(
    f"fedgray.{path.stem if path.suffix else path.name}"
    for path in (ROOT / "fedgray").iterdir()
    if (path.suffix == ".py" or (path / "__init__.py").is_file())
    and (path.stem if path.suffix else path.name) not in (*BELOW_BACKBONE, "__init__")
)
"""Every room and top-level module of the library but the backbone and what it builds on."""
SCHEMA = ("fedgray.config", "fedgray.config_schema", "fedgray.config_yaml")
"""The configuration's schema: types, ranges and defaults, at the bottom of the library."""
CONFIG = (*SCHEMA, "fedgray.resolver")
ABOVE_SCHEMA = tuple(
    f"fedgray.{path.stem if path.suffix else path.name}"
    for path in (ROOT / "fedgray").iterdir()
    if (path.suffix == ".py" or (path / "__init__.py").is_file())
    and f"fedgray.{path.stem if path.suffix else path.name}" not in (*SCHEMA, "fedgray.__init__")
)
"""Every room and top-level module of the library but the schema."""

RULES = {
    **{
        f"the schema imports nothing above it ({module})": (
            f"{module.replace('.', '/')}.py",
            (*ABOVE_SCHEMA, "strategies", "simulations"),
        )
        for module in SCHEMA
    },
    "the backbone imports nothing above it": ("fedgray/backbone", ABOVE_BACKBONE),
    "the backbone never imports config": ("fedgray/backbone", CONFIG),
    "fl never imports deploy": ("fedgray/fl", ("fedgray.deploy",)),
    "Flower's processes import neither the apps nor the deployment": (
        "fedgray/launch",
        ("fedgray.fl", "fedgray.deploy", "fedgray.cli"),
    ),
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
    found = [
        "fedgray/backbone/bad.py: fedgray.adapters",
        "fedgray/backbone/bad.py: fedgray.adapters.x",
        "fedgray/backbone/bad.py: fedgray.fl",
        "fedgray/backbone/bad.py: fedgray.fl.client",
    ]
    assert violations("fedgray/backbone", ABOVE_BACKBONE) == found
    assert violations("fedgray/backbone/bad.py", ABOVE_BACKBONE) == found  # one file


def module_graph(folders: tuple[str, ...] = ("fedgray", "strategies")) -> dict[str, set[str]]:
    """What each module imports when it is loaded (module-level imports only; importing
    ``a.b.c`` loads ``a`` and ``a.b`` too, and a module loads its parent packages first)."""
    paths = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for folder in folders
        for p in (ROOT / folder).rglob("*.py")
    }
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        named: list[str] = []
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if isinstance(node, ast.Import):
                named += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                named += [base, *(f"{base}.{alias.name}" for alias in node.names)]
        named.append(name.rpartition(".")[0])
        for target in named:
            parts = target.split(".")
            graph[name] |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & paths.keys()
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_import_cycles_stay_inside_one_package() -> None:
    """A package may import its own modules, in its subpackages too (which load it first);
    any longer cycle can deadlock when two threads import its ends at once, as Flower's
    simulation does when it loads the ServerApp and the ClientApp together."""
    wide = []
    for component in cycles(module_graph()):
        package = min(component, key=len)
        if any(not m.startswith(f"{package}.") for m in component - {package}):
            wide.append(sorted(component))
    assert wide == []


def test_the_cycle_check_sees_a_package_that_imports_its_subpackages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for room in ("pkg/left", "pkg/right"):
        (tmp_path / room).mkdir(parents=True)
        (tmp_path / room / "__init__.py").write_text("")
    (tmp_path / "pkg/__init__.py").write_text("from pkg.left.app import a\n")
    (tmp_path / "pkg/left/app.py").write_text("import os\na = 1\n")
    (tmp_path / "pkg/right/app.py").write_text("from ..left import app\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert cycles(module_graph(("pkg",))) == [{"pkg", "pkg.left", "pkg.left.app"}]


def test_a_run_process_loads_no_opacus_scikit_learn_or_transformers_until_used() -> None:
    """Every process of a run (the simulation's, each actor's) imports both Flower apps
    and builds a backbone; Opacus, scikit-learn and transformers (which open_clip imports
    with itself where installed) cost it about three seconds there, so they load only
    where DP-SGD starts, the digits dataset is read or a Hugging Face tokenizer is built."""
    code = (
        "import sys; import fedgray.fl.clientapp.app, fedgray.fl.serverapp.app; "
        "from fedgray.resolver import load_config; load_config(None, ['privacy.enabled=true', "
        "'privacy.target_epsilon=8', 'data.dataset=digits']); "
        "from fedgray.backbone import load_sealed; load_sealed('fedgray-micro', None); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'opacus', 'sklearn', 'scipy', 'transformers'}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def room(module: str) -> str:
    """The room ``module`` lives in: one of ``fl``'s rooms by role, else a package or
    top-level module of the library, or ``strategies``."""
    parts = module.split(".")
    depth = 3 if parts[:2] == ["fedgray", "fl"] else 2 if parts[0] == "fedgray" else 1
    return ".".join(parts[:depth])


PACKAGES = ("fedgray", "fedgray.fl")
"""Packages that hold rooms and import none of them."""


def room_graph(folders: tuple[str, ...] = ("fedgray", "strategies")) -> dict[str, set[str]]:
    """Which rooms each room imports, lazy imports included."""
    graph: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            source = room(module)
            targets = graph.setdefault(source, set())
            for name in imports(path):
                if name.split(".")[0] in folders and room(name) not in (source, *PACKAGES):
                    targets.add(room(name))
    return graph


def test_no_import_circle_between_rooms_lazy_imports_included() -> None:
    """Rooms stack, with no exception: whatever one imports, at load or inside a function,
    never imports it back, so every arrow runs down a floor (the schema at the bottom, the
    resolver above the registries whose names it checks, ``launch``'s processes below
    ``fl`` and ``deploy``, the owner above the seal)."""
    assert [sorted(c) for c in cycles(room_graph())] == []


def test_the_room_check_sees_a_lazy_circle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fedgray").mkdir()
    (tmp_path / "fedgray" / "low.py").write_text("def f():\n    from fedgray.high import g\n")
    (tmp_path / "fedgray" / "high.py").write_text("from fedgray import low\n\ng = 1\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert cycles(room_graph(("fedgray",))) == [{"fedgray.low", "fedgray.high"}]

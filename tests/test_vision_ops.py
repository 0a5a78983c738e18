"""The torchvision workaround: importable next to a CPU torch, a no-op otherwise."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedgray import vision_ops


def test_open_clip_and_transforms_import_in_a_fresh_interpreter() -> None:
    code = (
        "from fedgray.vision_ops import ensure_torchvision\n"
        "tv = ensure_torchvision()\n"
        "import open_clip, timm\n"
        "from torchvision import transforms\n"
        "assert transforms.Resize(8)\n"
        "assert ensure_torchvision() is tv\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_plain_import_fails_only_where_the_workaround_is_needed() -> None:
    plain = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True
    )
    patched = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fedgray.vision_ops import ensure_torchvision, torchvision_kernels_missing\n"
            "ensure_torchvision(); print(torchvision_kernels_missing())",
        ],
        capture_output=True,
        text=True,
    )
    assert patched.returncode == 0, patched.stderr[-2000:]
    if plain.returncode == 0:  # a matching torchvision build: nothing to work around
        assert patched.stdout.strip() == "False"
    else:
        assert "operator torchvision::nms does not exist" in plain.stderr
        assert patched.stdout.strip() == "True"


def test_a_torchvision_that_loads_is_left_alone(tmp_path: Path) -> None:
    """Where torchvision matches torch (a CUDA machine, or the CPU index's build) the first
    import succeeds: it is imported once, and no operator is declared in its name."""
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import sys\nsys.torchvision_imports = getattr(sys, 'torchvision_imports', 0) + 1\n"
        "transforms = 'the transforms module'\n"
    )
    code = (
        "import sys\n"
        "from fedgray.vision_ops import ensure_torchvision, torchvision_kernels_missing\n"
        "tv = ensure_torchvision()\n"
        "assert tv.__file__.startswith(sys.argv[1]), tv.__file__\n"
        "assert ensure_torchvision() is tv and sys.torchvision_imports == 1\n"
        "assert not torchvision_kernels_missing()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_other_import_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    real_import = builtins.__import__

    def failing_import(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name == "torchvision":
            raise RuntimeError("something else broke")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(RuntimeError, match="something else broke"):
        vision_ops.ensure_torchvision()


def test_dropping_modules_survives_imports_on_other_threads() -> None:
    # Ray's and Flower's threads import while a site's thread repairs torchvision: the module
    # table must be read safely (a live iteration raised "dictionary changed size").
    code = (
        "import sys, threading\n"
        "from fedgray import vision_ops\n"
        "sys.setswitchinterval(1e-6)\n"
        "stop = threading.Event()\n"
        "def churn():\n"
        "    i = 0\n"
        "    while not stop.is_set():\n"
        "        sys.modules[f'churn{i % 50}'] = sys\n"
        "        sys.modules.pop(f'churn{(i + 25) % 50}', None)\n"
        "        i += 1\n"
        "t = threading.Thread(target=churn); t.start()\n"
        "try:\n"
        "    for _ in range(3000):\n"
        "        vision_ops._drop_torchvision_modules()\n"
        "finally:\n"
        "    stop.set(); t.join()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

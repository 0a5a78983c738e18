"""The isolated runtime: same outputs and gradients as in-process, and no weights in the site."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from fedgray.adapters import build_model
from fedgray.backbone import (
    ArtifactError,
    QueryBudgetExceeded,
    SealedError,
    create_clip,
    load_artifact,
)
from fedgray.backbone.budget import Budget, Meter
from fedgray.backbone.runtime.isolated import IsolatedBackbone
from fedgray.config import ConfigError
from fedgray.devices import autocast
from fedgray.materials import open_backbone
from fedgray.owner.keys import KeyFiles, generate_keys
from fedgray.owner.seal import seal
from fedgray.resolver import load_config
from tests.helpers import assert_close, reduction_terms

ROOT = Path(__file__).resolve().parents[3]
CAPTIONS = ["a red circle", "a blue star", "the digit 3", "a small square"]

# The site's process: train one step through the given backbone, report its pids, then wait
# so that the test can read its memory.
SITE = """
import sys, torch
from fedgray.adapters import build_model
from fedgray.backbone import load_artifact
from fedgray.devices import autocast
from fedgray.backbone.runtime.isolated import IsolatedBackbone
mode, artifact, verify_key, content_key = sys.argv[1:]
opener = IsolatedBackbone if mode == "isolated" else load_artifact
backbone = opener(artifact, verify_key=verify_key, content_key=content_key)
model = build_model(backbone, "dga")
image, text = model(torch.rand(8, 3, 32, 32), backbone.tokenize(["a red circle"] * 8))
(image @ text.T).sum().backward()
runtime = backbone._process.pid if mode == "isolated" else 0
print(runtime, flush=True)
sys.stdin.readline()
"""


def _seal(model: nn.Module, keys: KeyFiles, path: Path, *, level: str = "gray") -> Path:
    key_files = {"signing_key": keys.signing_key, "content_key": keys.content_key}
    seal(model, path, name="fedgray-micro", level=level, **key_files)
    return path


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, KeyFiles, Path]:
    root = tmp_path_factory.mktemp("runtime")
    keys = generate_keys(root / "keys")
    torch.manual_seed(0)
    model = create_clip("fedgray-micro", None)
    return model, keys, _seal(model, keys, root / "micro.fgs", level="gray")


@pytest.fixture(scope="module")
def isolated(sealed: tuple[nn.Module, KeyFiles, Path]) -> Iterator[IsolatedBackbone]:
    _, keys, path = sealed
    with IsolatedBackbone(path, verify_key=keys.verify_key, content_key=keys.content_key) as b:
        yield b


def test_isolated_outputs_and_gradients_match_in_process(
    sealed: tuple[nn.Module, KeyFiles, Path], isolated: IsolatedBackbone
) -> None:
    _, keys, path = sealed
    local = load_artifact(path, verify_key=keys.verify_key, content_key=keys.content_key)
    assert isolated.interface == local.interface
    tokens = local.tokenize(CAPTIONS)
    assert torch.equal(isolated.tokenize(CAPTIONS), tokens)
    torch.manual_seed(1)
    pixels = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(isolated.encode_image(pixels), local.encode_image(pixels))
        assert torch.equal(isolated.encode_text(tokens), local.encode_text(tokens))
    grads = []
    for backbone in (local, isolated):
        torch.manual_seed(2)
        model = build_model(backbone, "dga")
        for p in model.parameters():  # move off the identity so every gradient is non-trivial
            p.data.add_(0.01 * torch.randn_like(p))
        x = pixels.clone().requires_grad_(True)
        image, text = model(x, tokens)
        (image @ text.T).sum().backward()
        grads.append([x.grad, *(p.grad for p in model.parameters())])
    for expected, got in zip(*grads, strict=True):
        assert_close(got, expected, terms=reduction_terms(local))
    with pytest.raises(SealedError, match="isolated runtime"):
        isolated.module  # noqa: B018 - the refusal is the point


def test_isolated_runtime_enforces_level_and_budget(
    sealed: tuple[nn.Module, KeyFiles, Path],
) -> None:
    _, keys, path = sealed
    paths = {"verify_key": keys.verify_key, "content_key": keys.content_key}
    with pytest.raises(SealedError, match="sealed for level 'gray' at most"):
        IsolatedBackbone(path, level="white", **paths)
    with pytest.raises(ArtifactError, match="none.pem: verification key file not found"):
        IsolatedBackbone(path, verify_key=keys.content_key.parent / "none.pem", content_key="x")
    with IsolatedBackbone(path, level="black", query_budget=1, **paths) as black:
        pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
        assert not black.encode_image(pixels).requires_grad
        with pytest.raises(QueryBudgetExceeded, match="query budget of 1"):
            black.encode_image(pixels)
    # At gray the budget bounds extraction by queries; the runtime enforces it on its side,
    # so a site that resets its own counters still gets refused.
    with IsolatedBackbone(path, query_budget=2, **paths) as gray:
        pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
        gray.encode_image(pixels).sum().backward()
        assert pixels.grad is not None
        gray.encode_text(gray.tokenize(CAPTIONS[:2]))
        gray._meter = Meter(Budget())  # the site's own bookkeeping is the site's
        with pytest.raises(QueryBudgetExceeded, match="backbone.query_budget: .* of 2 calls"):
            gray.encode_image(pixels)


def _readable_regions(pid: int) -> Iterator[tuple[int, int]]:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        address, perms = fields[0], fields[1]
        path = fields[5] if len(fields) > 5 else ""
        if (
            perms.startswith("r")
            and not path.endswith((".so", ".py", ".pyc"))
            and ".so." not in path
        ):
            start, end = (int(a, 16) for a in address.split("-"))
            yield start, end


def _weight_hits(pid: int, patterns: list[bytes]) -> int:
    """How many of ``patterns`` occur in the readable, non-library memory of process ``pid``."""
    found: set[bytes] = set()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for start, end in _readable_regions(pid):
            try:
                memory.seek(start)
                region = memory.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            found.update(p for p in patterns if p not in found and p in region)
    return len(found)


@pytest.mark.slow  # two site processes, each scanned
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/mem")
def test_the_site_process_never_holds_the_weights(
    sealed: tuple[nn.Module, KeyFiles, Path],
) -> None:
    model, keys, path = sealed
    # 64 bytes from the middle of each large weight: random floats, unique to the weights.
    patterns = []
    for tensor in model.state_dict().values():
        if tensor.numel() >= 1024 and tensor.std() > 0:
            raw = tensor.detach().contiguous().numpy().tobytes()
            patterns.append(raw[len(raw) // 2 : len(raw) // 2 + 64])
    hits = {}
    for mode in ("isolated", "in-process"):
        site = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SITE,
                mode,
                str(path),
                str(keys.verify_key),
                str(keys.content_key),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        try:
            runtime = int(site.stdout.readline())
            try:
                hits[mode] = _weight_hits(site.pid, patterns)
                if runtime:
                    hits["runtime"] = _weight_hits(runtime, patterns)
            except PermissionError:
                pytest.skip("cannot read another process's memory here (ptrace restrictions)")
        finally:
            site.communicate("\n", timeout=30)
    assert len(patterns) >= 8
    assert hits["isolated"] == 0  # the site's training process holds no weight
    assert hits["runtime"] == len(patterns)  # controls: the scan does find weights where
    assert hits["in-process"] == len(patterns)  # they are


def test_config_opens_the_isolated_runtime(sealed: tuple[nn.Module, KeyFiles, Path]) -> None:
    _, keys, path = sealed
    with pytest.raises(ConfigError, match="backbone.isolated: the isolated runtime needs"):
        load_config(None, ["backbone.isolated=true"])
    config = load_config(
        None,
        [
            "backbone.name=fedgray-micro",
            f"backbone.artifact={path}",
            f"backbone.verify_key={keys.verify_key}",
            f"backbone.content_key={keys.content_key}",
            "backbone.isolated=true",
        ],
    )
    backbone = open_backbone(config, progress=False)
    try:
        assert isinstance(backbone, IsolatedBackbone) and backbone.level.value == "gray"
    finally:
        backbone.close()


def test_a_killed_runtime_is_one_line_with_its_exit_status(
    sealed: tuple[nn.Module, KeyFiles, Path],
) -> None:
    _, keys, path = sealed
    with IsolatedBackbone(path, verify_key=keys.verify_key, content_key=keys.content_key) as b:
        process = b._process
        assert process is not None and process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=10)
        with pytest.raises(SealedError, match=r"is not running \(exit code -9\)$"):
            b.encode_image(torch.rand(1, 3, 32, 32))


def test_a_bfloat16_autocast_step_crosses_the_wire_as_float32(
    sealed: tuple[nn.Module, KeyFiles, Path], isolated: IsolatedBackbone
) -> None:
    """Under autocast the adapters send bfloat16; the wire carries float32 and the input
    gradients come back to the adapters as they would in-process."""
    _, keys, path = sealed
    local = load_artifact(path, verify_key=keys.verify_key, content_key=keys.content_key)
    tokens = local.tokenize(CAPTIONS)
    grads = []
    for backbone in (local, isolated):
        torch.manual_seed(2)
        model = build_model(backbone, "dga")
        x = torch.rand(4, 3, 32, 32, requires_grad=True)
        with autocast(torch.device("cpu"), "bfloat16"):
            image, text = model(x, tokens)
            (image.float() @ text.float().T).sum().backward()
        grads.append(x.grad)
    assert grads[1] is not None and grads[1].abs().sum() > 0
    assert_close(grads[1], grads[0], terms=16, dtype=torch.bfloat16)


# The site's own script, started as a file: ``spawn`` imports it in the runtime's child
# as ``__mp_main__``, so its top-level code runs there, next to the decrypted model.
SITE_SCRIPT = """
import sys
import torch
artifact, verify_key, content_key, out = sys.argv[1:]
if __name__ == "__mp_main__":  # inside the isolated runtime's child, before it loads
    load = torch.nn.Module.load_state_dict

    def spy(module, state, *args, **kwargs):
        loaded = load(module, state, *args, **kwargs)
        if hasattr(module, "visual"):  # the decrypted CLIP
            open(out, "w").write(str(sum(p.numel() for p in module.parameters())))
        return loaded

    torch.nn.Module.load_state_dict = spy
elif __name__ == "__main__":
    from fedgray.backbone.runtime.isolated import IsolatedBackbone
    with IsolatedBackbone(artifact, verify_key=verify_key, content_key=content_key) as backbone:
        with torch.no_grad():
            backbone.encode_image(torch.rand(1, 3, 32, 32))
"""


@pytest.mark.slow
def test_the_same_user_child_is_a_guard_not_a_boundary(
    sealed: tuple[nn.Module, KeyFiles, Path], tmp_path: Path
) -> None:
    """The documented limit: the child runtime is the site user's process, and the site's
    own code can run in it (no pickle needed) and take every weight."""
    model, keys, path = sealed
    script, out = tmp_path / "site.py", tmp_path / "stolen"
    script.write_text(SITE_SCRIPT)
    args = [str(path), str(keys.verify_key), str(keys.content_key), str(out)]
    subprocess.run([sys.executable, str(script), *args], cwd=ROOT, timeout=300, check=True)
    assert int(out.read_text()) == sum(p.numel() for p in model.parameters())

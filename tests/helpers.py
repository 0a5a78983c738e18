"""Helpers the tests share (never imported from another test module): the suite's rule for
comparing floats, a small pretraining recipe, the micro federation, Ray process checks,
SecAgg+ spies, DP budgets and the checks every backbone family passes (tiny model configs,
identity, gradients, sealing)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import parameters_to_ndarrays

from fedgray.adapters import AdaptedCLIP, build_model
from fedgray.backbone import Backbone, SealedBackbone, SealedError
from fedgray.backbone.loading import open_clip_module
from fedgray.cli import main
from fedgray.config import Config, MethodConfig, PretrainConfig
from fedgray.fl.clientapp import secagg as secagg_site
from fedgray.fl.common.partitions import partition_indices
from fedgray.fl.common.records import from_record
from fedgray.fl.serverapp.app import make_server_app
from fedgray.fl.serverapp.checkpoint import load_checkpoint
from fedgray.fl.serverapp.server import FederationResult, initial_adapters
from fedgray.fl.simulation.local_grid import LocalGrid, run_local
from fedgray.owner.keys import KeyFiles
from fedgray.privacy import Ledger
from fedgray.resolver import load_config
from fedgray.tasks import Task, TaskData
from tests.backbone.attacks import graph_tensors, ground_truth, leaked_weights

__all__ = [
    "CAPTIONS",
    "MICRO",
    "SECURE",
    "TEST_RECIPE",
    "TINY_SIGLIP",
    "TINY_TEXT",
    "VOCABULARY",
    "assert_adapters_start_as_zero_shot",
    "assert_close",
    "close",
    "assert_gradients_reach_every_adapter",
    "budget_between_rounds",
    "first_round_change",
    "captioned_data",
    "image_and_tokens",
    "micro_config",
    "refused",
    "register_model_configs",
    "reduction_terms",
    "rounding_tolerance",
    "runtime_processes",
    "runtime_processes_after_exit",
    "run_local",
    "run_on",
    "seal_with_cli",
    "spy_on_updates",
]


# The equality rule. Bit-equality (``torch.equal``, ``np.array_equal``) is asserted only
# where the same operations run on the same shapes: a resume against an uninterrupted run,
# the isolated runtime against in-process, a wrapper against the plain call it wraps. Those
# are bit-reproducible on one machine. Where the computation differs in shape or order
# (trimmed against full context, batched against per-sample, folded against listed means,
# float64 sums against float32) the matrix kernels round differently, and differently on
# different CPUs: those compare with :func:`assert_close`. tests/test_equality_rule.py keeps
# every bit-equality in the suite on its list of same-shape comparisons.
Comparable = torch.Tensor | np.ndarray


def rounding_tolerance(dtype: torch.dtype | np.dtype, terms: int) -> float:
    """Relative gap two evaluations of the same sums may show when their ``terms`` terms are
    added in different orders or blockings: each is off by at most ``terms`` units of
    roundoff of the largest magnitude involved (Higham's bound for a recursive sum), so
    they differ by at most ``terms * eps``. ``terms`` is the longest chain of additions
    behind one output: a matmul's inner size, times the layers it passes through."""
    if isinstance(dtype, np.dtype):
        dtype = torch.from_numpy(np.zeros((), dtype)).dtype
    return terms * torch.finfo(dtype).eps


def reduction_terms(backbone: Backbone) -> int:
    """The products behind one output of one attention layer over ``backbone``'s full
    context (token width times context length): the ``terms`` of a comparison of two
    passes through the backbone that differ in shape or order."""
    return backbone.interface.token_width * backbone.interface.context_length


def _tolerances(expected: torch.Tensor, terms: int, dtype: torch.dtype | None) -> dict[str, float]:
    tol = rounding_tolerance(dtype or expected.dtype, terms)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return {"rtol": tol, "atol": tol * scale}  # near-zero entries: relative to the largest


def close(
    actual: Comparable, expected: Comparable, *, terms: int, dtype: torch.dtype | None = None
) -> bool:
    """Whether ``actual`` equals ``expected`` up to the rounding of ``terms``-term sums in
    ``dtype`` (``expected``'s unless given: e.g. bfloat16 for an autocast pass)."""
    a, e = torch.as_tensor(actual), torch.as_tensor(expected)
    return a.shape == e.shape and torch.allclose(a, e, **_tolerances(e, terms, dtype))


def assert_close(
    actual: Comparable, expected: Comparable, *, terms: int, dtype: torch.dtype | None = None
) -> None:
    """Assert :func:`close`, reporting the largest differences where it is not."""
    a, e = torch.as_tensor(actual), torch.as_tensor(expected)
    torch.testing.assert_close(a, e, **_tolerances(e, terms, dtype))


def run_on(
    config: Config, grid: LocalGrid, echo: Callable[[str], None] = lambda _: None
) -> FederationResult:
    """``config``'s ServerApp on a LocalGrid the test made (its own node ids, node configs)."""
    out: list[FederationResult] = []
    app = make_server_app(config, echo=echo, on_result=lambda result, _: out.append(result))
    app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    return out[0]


# Enough pretraining for the source domain to beat chance by far; seconds, not minutes.
TEST_RECIPE = PretrainConfig(steps=100, batch_size=128, lr=6e-4, warmup_steps=30, train_size=4000)

MICRO = [
    "backbone.name=fedgray-micro",
    "backbone.pretrained=null",
    "data.train_size=90",
    "data.validation_size=40",
    "data.test_size=40",
    "train.batch_size=8",
    "train.threads=1",
    "federation.num_sites=3",
    "federation.num_rounds=2",
    "federation.local_steps=2",
]

# A CraFT adaptation of the random micro CLIP on digits short enough for a unit test.
SHORT_CRAFT_ON_DIGITS = [
    "backbone.name=fedgray-micro",
    "backbone.pretrained=null",
    "backbone.level=black",
    "data.dataset=digits",
    "data.train_size=40",
    "data.validation_size=40",
    "data.test_size=40",
    "train.task=classification",
    "method.name=craft",
    "method.craft.queries=50",
    "method.craft.popsize=4",
    "method.craft.intrinsic_dim=8",
    "method.craft.eval_every=5",
]


def micro_config(tmp_path: Path, *overrides: str, name: str = "run") -> Config:
    """A 3-site, 2-round federation of the random micro CLIP writing to ``tmp_path/name``."""
    return load_config(None, [*MICRO, f"output.root={tmp_path}", f"output.name={name}", *overrides])


REFUSED_WITHIN_S = 20.0  # "within seconds" on 2 busy cores: no run, no Ray, no data loaded


def refused(argv: Sequence[str], capfd: pytest.CaptureFixture[str]) -> str:
    """Run ``fedgray argv``, check it was refused as every bad input is (exit 2 within
    seconds, one line on stderr, nothing on stdout) and return that line."""
    capfd.readouterr()
    started = time.monotonic()
    code = main(list(argv))
    seconds = time.monotonic() - started
    out, err = capfd.readouterr()
    assert (code, out) == (2, ""), err
    assert len(err.splitlines()) == 1 and err.startswith("fedgray: error: "), err
    assert len(err) < 400, err
    assert seconds < REFUSED_WITHIN_S
    return err.strip()


SESSION_MARK = (
    f"FEDGRAY_TEST_SESSION={os.environ.setdefault('FEDGRAY_TEST_SESSION', uuid.uuid4().hex)}"
)
"""In the environment of every process this test session starts (and theirs): another
session's processes (CI runs the deploy group beside the slow one) are not this one's."""


def _this_session(line: str) -> bool:
    try:
        environ = Path(f"/proc/{line.split()[0]}/environ").read_bytes()
    except OSError:  # gone already
        return False
    return SESSION_MARK.encode() in environ.split(b"\0")


def runtime_processes() -> set[str]:
    """The processes a federation run of this test session starts: the SuperLink and its
    simulation, Ray, and the reapers they run under (a reaper exits last, once it has
    ended every process below it, Ray's agents and idle workers included)."""
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    names = ("raylet", "ClientAppActor", "flower-superlink", "flwr-simulation", "flower-superexec",
             "fedgray.launch.reaper")  # fmt: skip
    return {
        line
        for line in ps.splitlines()
        if any(name in line for name in names) and _this_session(line)
    }


def runtime_processes_after_exit(before: set[str], *, wait: float = 20.0) -> set[str]:
    """Runtime processes not there ``before``; Ray's workers exit a moment after the raylet."""
    deadline = time.monotonic() + wait
    while (left := runtime_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def budget_between_rounds(config: Config) -> float:
    """A budget above every site's epsilon after 1 round and below any after 2 rounds."""
    fed, sites = config.federation, config.federation.num_sites
    rates = [
        min(
            1.0,
            config.train.batch_size
            / len(partition_indices(config, partition_id=i, num_partitions=sites).train),
        )
        for i in range(sites)
    ]
    noise = config.privacy.noise_multiplier
    one = max(Ledger("rdp", ((noise, q, fed.local_steps),)).epsilon(1e-4) for q in rates)
    two = min(Ledger("rdp", ((noise, q, 2 * fed.local_steps),)).epsilon(1e-4) for q in rates)
    assert one < two
    return (one + two) / 2


SECURE = [
    "federation.num_sites=4",
    "federation.secure_aggregation.enabled=true",
    "federation.secure_aggregation.num_shares=4",
    "federation.secure_aggregation.reconstruction_threshold=3",
    "federation.secure_aggregation.max_weight=50",  # sites hold 18-23 examples
]
Updates = dict[int, tuple[int, list[np.ndarray]]]  # partition -> (weight, delta arrays)


def spy_on_updates(monkeypatch: pytest.MonkeyPatch, *, drop: int | None = None) -> Updates:
    """Record each site's update as it enters SecAgg+'s masking (``drop`` fails instead)."""
    seen: Updates = {}
    inner = secagg_site.delta_mod

    def spy(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        partition = int(context.node_config["partition-id"])
        if partition == drop:
            raise ConnectionError(f"site {partition} dropped out")
        reply = inner(msg, context, call_next)
        fitres = compat.recorddict_to_fitres(reply.content, True)
        seen[partition] = (fitres.num_examples, parameters_to_ndarrays(fitres.parameters))
        return reply

    monkeypatch.setattr(secagg_site, "delta_mod", spy)
    return seen


def first_round_change(run_dir: Path, config: Config) -> list[np.ndarray]:
    """How much round 1 moved the global adapters, array by array."""
    start = from_record(initial_adapters(config))
    after = from_record(load_checkpoint(run_dir).arrays)
    return [(after[k].double() - start[k].double()).numpy() for k in start]


CAPTIONS = ["a red circle", "a blue square", "a green star", "the digit 7", "a small ring"]
VOCABULARY = [*CAPTIONS, "a large ring", "a blue circle", "the digit 1"]  # public captions


def captioned_data(backbone: Backbone, n: int = 12, *, vocabulary: bool = False) -> TaskData:
    """``n`` random images captioned (and labelled) from :data:`CAPTIONS` in turn; with
    ``vocabulary``, :data:`VOCABULARY` as the public negatives of DP retrieval."""
    size = backbone.interface.image_size
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % len(CAPTIONS)
    return TaskData(
        images=torch.rand(n, 3, size, size, generator=generator),
        tokens=backbone.tokenize([CAPTIONS[i] for i in labels]),
        caption_ids=labels.clone(),
        labels=labels,
        prompt_tokens=backbone.tokenize(CAPTIONS),
        prompt_classes=torch.arange(len(CAPTIONS)),
        num_classes=len(CAPTIONS),
        public_tokens=backbone.tokenize(VOCABULARY) if vocabulary else None,
    )


def assert_single_sample_gradients(
    model: torch.nn.Module,
    task: Task,
    data: TaskData,
    scale: float,
    trainable: list[torch.nn.Parameter],
    per_sample: list[torch.Tensor],
) -> None:
    """Each sample's per-sample gradient (``per_sample[k][i]`` for ``trainable[k]``) equals
    the gradient of ``task``'s loss on that sample alone, through the uncached ``model``."""
    whole = tuple(data.as_dataset().tensors)
    for i in range(len(data)):
        model.zero_grad(set_to_none=True)
        task.loss(model, tuple(t[i : i + 1] for t in whole), data, scale).backward()
        for p, samples in zip(trainable, per_sample, strict=True):
            assert p.grad is not None
            error = (samples[i] - p.grad).norm() / p.grad.norm().clamp_min(1e-12)
            assert error < 1e-5, f"sample {i}: relative error {error:.2e}"


def perturbed(
    backbone: Backbone, method: str | MethodConfig = "output", *, seed: int = 2, size: float = 0.05
) -> AdaptedCLIP:
    """``method``'s adapters moved off the identity by ``size`` standard normals (``seed``),
    so that every module acts and every gradient is non-trivial."""
    torch.manual_seed(seed)
    model = build_model(backbone, method)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(size * torch.randn_like(p))
    return model


# Tiny random-weight open_clip configs of the backbone families (tests/backbone).
TINY_TEXT = {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_SIGLIP: dict[str, Any] = {  # ViT-B-16-SigLIP's layout, open_clip's own tokenizer
    "embed_dim": 64,  # timm_proj none: the image embedding is test_vit's width
    "custom_text": True,
    "init_logit_bias": -10,
    "vision_cfg": {
        "timm_model_name": "test_vit",
        "timm_pool": "map",
        "timm_proj": "none",
        "image_size": 160,
    },
    "text_cfg": {**TINY_TEXT, "no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
}


def register_model_configs(folder: Path, configs: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``configs`` (name -> open_clip model config; embed_dim 16 unless given) to
    ``folder`` and register them with open_clip in this process."""
    for name, cfg in configs.items():
        (folder / f"{name}.json").write_text(json.dumps({"embed_dim": 16, **cfg}))
    open_clip_module().add_model_config(folder)


def image_and_tokens(
    backbone: Backbone, captions: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random images of the backbone's size and ``captions`` tokenized by it."""
    size = backbone.interface.image_size
    generator = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, size, size, generator=generator), backbone.tokenize(captions)


def assert_adapters_start_as_zero_shot(
    backbone: Backbone, method: str, model: torch.nn.Module, captions: Sequence[str]
) -> None:
    """``method``'s adapters at initialisation give exactly the sealed backbone's features
    (the same passes plus exact zeros), and its text features equal open_clip's own pass of
    the plain ``model`` up to rounding: that pass runs every context slot, the sealed one
    only up to the longest caption, and the matrix kernels round the two lengths apart."""
    adapted = build_model(backbone, method)
    pixels, tokens = image_and_tokens(backbone, captions)
    with torch.no_grad():
        image, text = adapted(pixels, tokens)
        assert torch.equal(image, backbone.encode_image(pixels))
        assert torch.equal(text, backbone.encode_text(tokens))
        full = model.encode_text(tokens)  # type: ignore[operator]
        shape = backbone.interface
        assert_close(text, full, terms=shape.token_width * shape.context_length)


def assert_gradients_reach_every_adapter(backbone: SealedBackbone, captions: Sequence[str]) -> None:
    """LGA (DGA plus prompts at the towers with blocks) moved off the identity: every
    adapter gets a gradient, no backbone weight enters the graph, the weights stay sealed."""
    model = perturbed(backbone, "lga", seed=2)
    image, text = model(*image_and_tokens(backbone, captions))
    loss = (image @ text.T).logsumexp(-1).sum()
    assert leaked_weights(graph_tensors(loss), ground_truth(backbone)) == set()
    loss.backward()
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("image_in") for n in names) and any("text_in" in n for n in names)
    for n, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, n
    for attempt in (backbone.parameters, backbone.state_dict, lambda: pickle.dumps(backbone)):
        with pytest.raises(SealedError):
            attempt()  # type: ignore[operator]


def seal_with_cli(name: str, keys: KeyFiles, out: Path, *, level: str = "gray+") -> Path:
    """``fedgray seal`` of open_clip model ``name`` with random weights into ``out``."""
    argv = ["seal", "--name", name, "--pretrained", "none", "--level", level, "--quiet"]
    keyfiles = ["--signing-key", str(keys.signing_key), "--content-key", str(keys.content_key)]
    assert main([*argv, *keyfiles, "--out", str(out)]) == 0
    return out

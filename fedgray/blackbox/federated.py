"""Federated CraFT (black-box), FedBPT-style: sites search locally, the server averages.

The shared tensors are CraFT's search distribution and its refinement MLP only:
``search.mean`` (the point ``z``), ``search.sigma`` (CMA-ES's step size, one value) and
``refiner.*``. The prompt space's fixed projection ``A`` and ``p0`` never travel: every
process builds them from ``federation.seed``. Each round a site runs CraFT from the global
``(mean, sigma)`` and MLP within ``method.craft.queries`` backbone queries (its per-round
local budget), and replies with its final ``(mean, sigma)`` and MLP; FedAvg's weighted mean
of these tensors is FedBPT's aggregation of the search distributions and FedAvg of the MLP.
Every query a site's training makes is counted by the sealed backbone and reported as the
``queries`` metric; ``paper_queries`` counts them as the paper does (the candidates only).
A site holds out none of its data (``method.craft.validation`` is for ``fedgray adapt``):
FedBPT averages the sites' final distributions, and a site's few shots are fewer still.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from fedgray.adapters import AdaptedCLIP, build_model
from fedgray.adapters.prompt import CraftConfig
from fedgray.backbone import Backbone
from fedgray.blackbox.craft import Craft, encode_images
from fedgray.blackbox.refine import PredictionRefiner
from fedgray.config import Config
from fedgray.tasks import TaskData
from fedgray.train.kinds import SiteRound, SiteUpdate, State

MEAN, SIGMA, REFINER = "search.mean", "search.sigma", "refiner."


def craft_model(config: Config, backbone: Backbone) -> AdaptedCLIP:
    """Method ``craft``'s model with the prompt space drawn from ``federation.seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(config.federation.seed)
        return build_model(backbone, config.method)


def start(config: Config, _backbone: Backbone, data: Callable[[], TaskData]) -> State:
    """``z = 0``, ``sigma = method.craft.sigma`` and the refinement MLP at identity."""
    options = config.method.section(CraftConfig)
    with torch.random.fork_rng():
        torch.manual_seed(config.federation.seed)
        refiner = PredictionRefiner(data().num_classes, hidden=options.hidden)
    return _state(torch.zeros(options.intrinsic_dim), options.sigma, refiner.state_dict())


def _state(mean: torch.Tensor, sigma: float, refiner: dict[str, torch.Tensor]) -> State:
    arrays = {MEAN: mean.float(), SIGMA: torch.tensor([sigma], dtype=torch.float32)}
    return {**arrays, **{f"{REFINER}{k}": v for k, v in refiner.items()}}


def open_craft(
    config: Config, backbone: Backbone, state: State, data: TaskData, *, seed: int
) -> Craft:
    """CraFT on ``data`` starting from the shared ``state`` (no held-out split)."""
    model, train = craft_model(config, backbone), config.train
    craft = Craft(
        model,
        data,
        options=replace(config.method.section(CraftConfig), validation=0.0),
        scale=model.backbone.interface.logit_scale,
        batch_size=train.batch_size,
        lr=train.lr,
        seed=seed,
        mean=state[MEAN],
        sigma=float(state[SIGMA].item()),
    )
    refiner = {k.removeprefix(REFINER): v for k, v in state.items() if k.startswith(REFINER)}
    craft.refiner.load_state_dict(refiner)
    return craft


def train_round(site: SiteRound) -> SiteUpdate:
    """One round of CraFT at a site from the global search distribution and MLP."""
    if site.proximal_mu > 0:
        raise ValueError("FedProx's proximal term has no meaning for a CMA-ES search")
    craft = open_craft(site.config, site.backbone, site.shared, site.data, seed=site.seed)
    backbone = craft.model.backbone
    before, losses = backbone.queries_used, []
    plan = craft.run(on_generation=lambda g: losses.append(g.loss))
    mean, sigma = craft.distribution()
    metrics = {
        "train-loss": losses[-1],
        "queries": backbone.queries_used - before,
        "paper_queries": plan.paper_total,
    }
    return SiteUpdate(_state(mean, sigma, craft.refiner.state_dict()), metrics)


def score(config: Config, backbone: Backbone, state: State, data: TaskData) -> dict[str, float]:
    """Accuracy of the refined (``accuracy``) and raw (``prompt_accuracy``) predictions of
    the shared ``state`` on ``data``, scored as CraFT scores (queries: the images and one
    for the class prompts at the mean)."""
    craft = open_craft(config, backbone, state, data, seed=config.federation.seed)
    craft.observe()
    raw, refined = craft.predict(encode_images(craft.model, data.images))
    labels = data.labels
    return {
        "accuracy": 100.0 * (refined.argmax(1) == labels).float().mean().item(),
        "prompt_accuracy": 100.0 * (raw.argmax(1) == labels).float().mean().item(),
    }

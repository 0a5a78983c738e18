"""Federated CraFT (black-box), FedBPT-style: sites search locally, the server averages.

The shared arrays are CraFT's search distribution and its refinement MLP only:
``search.mean`` (the point ``z``), ``search.sigma`` (CMA-ES's step size, one value) and
``refiner.*``. The prompt space's fixed projection ``A`` and ``p0`` never travel: every
process builds them from ``federation.seed``. Each round a site runs CraFT from the global
``(mean, sigma)`` and MLP within ``method.craft.queries`` backbone queries (its per-round
local budget), and replies with its final ``(mean, sigma)`` and MLP; FedAvg's weighted mean
of these arrays is FedBPT's aggregation of the search distributions and FedAvg of the MLP.
Every query a site's training makes is counted by the sealed backbone and reported as the
``queries`` metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedgray.adapters import AdaptedCLIP, build_model
from fedgray.blackbox.craft import Craft, encode_images
from fedgray.blackbox.refine import PredictionRefiner
from fedgray.config import Config
from fedgray.fl.cache import shared_backbone, shared_data
from fedgray.fl.central import aggregation_weight
from fedgray.fl.records import from_record, to_record
from fedgray.tasks import TaskData
from strategies import ORDER_KEY

if TYPE_CHECKING:
    from fedgray.fl.client import Site

MEAN, SIGMA, REFINER = "search.mean", "search.sigma", "refiner."


def craft_model(config: Config) -> AdaptedCLIP:
    """Method ``craft``'s model with the prompt space drawn from ``federation.seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(config.federation.seed)
        return build_model(shared_backbone(config), config.method)


def initial_state(config: Config) -> ArrayRecord:
    """``z = 0``, ``sigma = method.craft.sigma`` and the refinement MLP at identity."""
    options = config.method.craft
    classes = shared_data(
        config, dataset=config.data.dataset, split="test", size=config.data.test_size
    ).num_classes
    with torch.random.fork_rng():
        torch.manual_seed(config.federation.seed)
        refiner = PredictionRefiner(classes, hidden=options.hidden)
    dim = options.intrinsic_dim
    return _record(torch.zeros(dim), options.sigma, refiner.state_dict())


def _record(mean: torch.Tensor, sigma: float, refiner: dict[str, torch.Tensor]) -> ArrayRecord:
    arrays = {MEAN: mean.float(), SIGMA: torch.tensor([sigma], dtype=torch.float32)}
    return to_record({**arrays, **{f"{REFINER}{k}": v for k, v in refiner.items()}})


def open_craft(config: Config, arrays: ArrayRecord, data: TaskData, *, seed: int) -> Craft:
    """CraFT on ``data`` starting from the shared ``arrays``."""
    model, train = craft_model(config), config.train
    state = from_record(arrays)
    craft = Craft(
        model,
        data,
        options=config.method.craft,
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


def train_site(
    site: Site,
    arrays: ArrayRecord,
    state: RecordDict,
    *,
    seed: int,
    proximal_mu: float,
    settings: ConfigRecord | None = None,
) -> tuple[ArrayRecord, dict[str, float], RecordDict]:
    """One round of CraFT at ``site`` from the global search distribution and MLP."""
    if proximal_mu > 0:
        raise ValueError("FedProx's proximal term has no meaning for a CMA-ES search")
    craft = open_craft(site.config, arrays, site.data.train, seed=seed)
    backbone = craft.model.backbone
    before, losses = backbone.queries_used, []
    craft.run(on_generation=lambda g: losses.append(g.loss))
    mean, sigma = craft.distribution()
    metrics = {
        "num-examples": aggregation_weight(site.config, len(site.data.train)),
        "train-loss": losses[-1],
        "queries": backbone.queries_used - before,
        ORDER_KEY: site.partition_id,
    }
    return _record(mean, sigma, craft.refiner.state_dict()), metrics, RecordDict()


def score(config: Config, arrays: ArrayRecord, data: TaskData) -> dict[str, float]:
    """Accuracy of the refined (``accuracy``) and raw (``prompt_accuracy``) predictions of
    the shared ``arrays`` on ``data``, scored as CraFT scores (queries: the images and one
    for the class prompts at the mean)."""
    craft = open_craft(config, arrays, data, seed=config.federation.seed)
    craft.observe()
    raw, refined = craft.predict(encode_images(craft.model, data.images))
    labels = data.labels
    return {
        "accuracy": 100.0 * (refined.argmax(1) == labels).float().mean().item(),
        "prompt_accuracy": 100.0 * (raw.argmax(1) == labels).float().mean().item(),
    }


def evaluate_site(site: Site, arrays: ArrayRecord, state: RecordDict) -> dict[str, float]:
    """:func:`score` of the shared ``arrays`` on ``site``'s held-out samples."""
    return score(site.config, arrays, site.data.heldout)

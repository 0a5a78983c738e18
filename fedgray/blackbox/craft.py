"""CraFT's collaborative training (arXiv 2402.04050) within a budget of backbone queries.

Every generation alternates the two modules, as the authors' code (``mrflogs/CraFT``) does:

1. **prompt**: CMA-ES (population ``popsize``, each coordinate within ``[-bound, bound]``)
   evaluates its candidate points ``z``, one query each (the class prompts' text features
   under that prompt), with fitness ``CE(raw, y) + consistency * KL(refined || raw)`` on
   the training images' features;
2. **refinement**: the prompt moves to the mean of a fresh sample from the updated search
   distribution (one more query for its text features), and the refinement MLP takes one
   epoch of Adam on ``CE(refined, y) + consistency * KL(raw || refined)`` over freshly
   cropped and flipped training images (``augment``; their features cost
   ``ceil(N / 256)`` queries), the consistency term only in the first
   ``consistency_until`` of the generations.

The un-augmented training features are queried once, for the fitness. Queries are counted
two ways: as the sealed backbone counts them (every call: features, candidates, the mean,
augmented features; ``method.craft.queries`` limits this count) and as the paper counts
them (the candidates only, ``paper_queries``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedgray.adapters.model import AdaptedCLIP
from fedgray.adapters.prompt import PromptSpace
from fedgray.blackbox.augment import augment
from fedgray.blackbox.refine import PredictionRefiner, consistency
from fedgray.blackbox.search import CmaSearch
from fedgray.config import CraftConfig
from fedgray.config_schema import ConfigError
from fedgray.tasks.data import TaskData
from fedgray.tasks.losses import class_logits
from fedgray.tasks.metrics import batched

CHUNK = 256  # images per query when a dataset's features are computed


@dataclass(frozen=True)
class QueryPlan:
    """How a CraFT run spends its queries (``candidates`` of each generation's are the
    ones the paper counts)."""

    features: int
    per_generation: int
    generations: int
    candidates: int

    @property
    def total(self) -> int:
        """Queries the whole run takes."""
        return self.features + self.generations * self.per_generation

    @property
    def paper_total(self) -> int:
        """Queries as the paper counts them: the candidates evaluated."""
        return self.generations * self.candidates


def plan_queries(options: CraftConfig, *, train_size: int, remaining: int | None) -> QueryPlan:
    """The most generations that fit ``options.queries``; a one-line error if none does,
    or if ``options.queries`` is more than the backbone has ``remaining``."""
    if remaining is not None and options.queries > remaining:
        raise ConfigError(
            f"method.craft.queries: {options.queries} is more than the backbone's query "
            f"budget has left ({remaining})"
        )
    features = math.ceil(train_size / CHUNK)
    per_generation = options.popsize + 1 + (features if options.augment else 0)
    generations = (options.queries - features) // per_generation
    if generations < 1:
        raise ConfigError(
            f"method.craft.queries: {options.queries} buys no CMA-ES generation ({features} "
            f"for the training features, then {per_generation} per generation)"
        )
    return QueryPlan(features, per_generation, generations, options.popsize)


@dataclass(frozen=True)
class Generation:
    """What one generation did: queries spent so far (all of them, and the paper's count),
    best fitness, the refiner's loss."""

    index: int
    queries: int
    fitness: float
    loss: float
    paper_queries: int


def encode_images(model: AdaptedCLIP, images: torch.Tensor) -> torch.Tensor:
    """Image features of ``images``, one query per ``CHUNK`` images."""
    with torch.no_grad():
        return batched(model.encode_images, images, CHUNK)


class Craft:
    """CraFT on one site's classification data around a model built by method ``craft``.

    The search starts from ``mean`` (default ``z = 0``) with step size ``sigma`` (default
    ``options.sigma``): a federated site starts from the global search distribution and
    returns :meth:`distribution` after :meth:`run` (FedBPT).
    """

    def __init__(
        self,
        model: AdaptedCLIP,
        train: TaskData,
        *,
        options: CraftConfig,
        scale: float,
        batch_size: int,
        lr: float,
        seed: int,
        mean: torch.Tensor | None = None,
        sigma: float | None = None,
    ) -> None:
        if not isinstance(model.text_in, PromptSpace):
            raise ValueError("CraFT needs the model that method 'craft' builds")
        self.model, self.prompt, self.train = model, model.text_in, train
        self.options, self.scale, self.batch_size = options, scale, batch_size
        self.refiner = PredictionRefiner(train.num_classes, hidden=options.hidden)
        self.optimizer = torch.optim.Adam(self.refiner.parameters(), lr=lr)
        self.search = CmaSearch(
            self.prompt.dim,
            sigma=options.sigma if sigma is None else sigma,
            popsize=options.popsize,
            seed=seed,
            mean=mean,
            bound=options.bound,
        )
        self.prompt.move_to(self.search.mean)
        self.generator = torch.Generator().manual_seed(seed)
        self.text_features: torch.Tensor | None = None  # the class prompts at the mean

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """The backbone's raw class logits (logsumexp over each class's prompts)."""
        data = self.train
        return class_logits(
            image_features,
            text_features,
            data.prompt_classes,
            num_classes=data.num_classes,
            scale=self.scale,
        )

    def observe(self) -> torch.Tensor:
        """Query the class prompts' text features at the current point (one query); keep
        and return them."""
        with torch.no_grad():
            self.text_features = self.model.encode_texts(self.train.prompt_tokens)
        return self.text_features

    def predict(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw and refined class logits at the last observed prompt (no query)."""
        if self.text_features is None:
            raise RuntimeError("CraFT has not observed a prompt yet")
        raw = self.logits(image_features, self.text_features)
        self.refiner.eval()
        with torch.no_grad():
            return raw, self.refiner(raw)

    def distribution(self) -> tuple[torch.Tensor, float]:
        """The search distribution now: its mean ``z`` and step size ``sigma``."""
        return self.search.mean, self.search.sigma

    def plan(self) -> QueryPlan:
        """The queries a run started now would spend (checked against the backbone's budget)."""
        backbone = self.model.backbone
        budget = backbone.query_budget
        return plan_queries(
            self.options,
            train_size=len(self.train),
            remaining=None if budget is None else budget - backbone.queries_used,
        )

    def run(self, *, on_generation: Callable[[Generation], None] | None = None) -> QueryPlan:
        """Query the training features, then run every generation the budget allows."""
        backbone, options = self.model.backbone, self.options
        start = backbone.queries_used
        plan = self.plan()
        features = encode_images(self.model, self.train.images)
        consistent = math.ceil(plan.generations * options.consistency_until)
        for index in range(1, plan.generations + 1):
            values = self.search.generation(lambda z: self._fitness(z, features))
            self.prompt.move_to(self.search.sample_mean())
            text_features = self.observe()
            seen = features
            if options.augment:
                seen = encode_images(self.model, augment(self.train.images, self.generator))
            weight = options.consistency if index <= consistent else 0.0
            loss = self._refine(self.logits(seen, text_features), weight=weight)
            if on_generation is not None:
                spent = backbone.queries_used - start
                on_generation(Generation(index, spent, min(values), loss, index * plan.candidates))
        assert backbone.queries_used - start == plan.total <= options.queries
        return plan

    def _fitness(self, z: torch.Tensor, features: torch.Tensor) -> float:
        self.prompt.move_to(z)
        self.refiner.eval()
        with torch.no_grad():
            raw = self.logits(features, self.model.encode_texts(self.train.prompt_tokens))
            refined = self.refiner(raw)
            loss = F.cross_entropy(raw, self.train.labels)
            return (loss + self.options.consistency * consistency(raw, refined)).item()

    def _refine(self, raw: torch.Tensor, *, weight: float) -> float:
        self.refiner.train()
        labels, losses = self.train.labels, []
        order = torch.randperm(raw.shape[0], generator=self.generator)
        for batch in order.split(self.batch_size):
            refined = self.refiner(raw[batch])
            loss = F.cross_entropy(refined, labels[batch])
            if weight:
                loss = loss + weight * consistency(refined, raw[batch])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        return sum(losses) / len(losses)

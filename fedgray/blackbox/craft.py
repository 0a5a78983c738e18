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

**Selection.** The authors' code returns its last generation, and on a small target that
can be below where it started (the refiner overfits a few shots). Here a share of the
site's training data (``method.craft.validation``) is held out: the start (``z`` where the
search starts, the refiner at identity: CraFT's own zero-shot) and every generation are
scored on it, each generation's prompt with its refiner and with the refiner as it
started (at identity), and the run returns the best pair (validation accuracy, then
validation loss; a later one must be strictly better). So the returned prompt and refiner
never score below the start on that split, by construction. It costs the held-out
images' features (one query per 256) and the start's class prompts (one query); each
generation is scored with the text features its refinement step already queried.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedgray.adapters.model import AdaptedCLIP
from fedgray.adapters.prompt import CraftConfig, PromptSpace
from fedgray.blackbox.augment import augment
from fedgray.blackbox.refine import PredictionRefiner, consistency
from fedgray.blackbox.search import CmaSearch
from fedgray.config_schema import ConfigError
from fedgray.tasks.data import TaskData
from fedgray.tasks.losses import class_logits
from fedgray.tasks.metrics import batched, batched_calls

CHUNK = 256  # images per query when a dataset's features are computed


@dataclass(frozen=True)
class QueryPlan:
    """How a CraFT run spends its queries: ``features`` once (the training and held-out
    images, the start's class prompts), then ``per_generation`` (``candidates`` of them
    are the ones the paper counts)."""

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


def plan_queries(
    options: CraftConfig, *, train_size: int, remaining: int | None, held_out: int = 0
) -> QueryPlan:
    """The most generations that fit ``options.queries``; a one-line error if none does,
    or if ``options.queries`` is more than the backbone has ``remaining``."""
    if remaining is not None and options.queries > remaining:
        raise ConfigError(
            f"method.craft.queries: {options.queries} is more than the backbone's query "
            f"budget has left ({remaining})"
        )
    train = feature_queries(train_size)
    features = train + (feature_queries(held_out) + 1 if held_out else 0)
    per_generation = options.popsize + 1 + (train if options.augment else 0)
    generations = (options.queries - features) // per_generation
    if generations < 1:
        raise ConfigError(
            f"method.craft.queries: {options.queries} buys no CMA-ES generation ({features} "
            f"for the training features, then {per_generation} per generation)"
        )
    return QueryPlan(features, per_generation, generations, options.popsize)


def hold_out(data: TaskData, share: float, *, seed: int) -> tuple[TaskData, TaskData | None]:
    """``data`` split at random into (training, held-out) with ``share`` held out (0: none);
    a one-line error when either part would be empty."""
    if share == 0:
        return data, None
    count = round(share * len(data))
    if not 0 < count < len(data):
        raise ConfigError(
            f"method.craft.validation: {share} of {len(data)} training samples leaves no "
            "held-out or no training sample"
        )
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[count:]), data.subset(order[:count])


@dataclass(frozen=True)
class Generation:
    """What one generation did: queries spent so far (all of them, and the paper's count),
    best fitness, the refiner's loss, the held-out accuracy (None without a held-out split)."""

    index: int
    queries: int
    fitness: float
    loss: float
    paper_queries: int
    validation: float | None = None


@dataclass(frozen=True)
class BestGeneration:
    """The best generation so far on the held-out split (0: the start), and what it was."""

    generation: int
    accuracy: float
    loss: float
    point: torch.Tensor
    refiner: dict[str, torch.Tensor]
    text_features: torch.Tensor

    def beaten_by(self, accuracy: float, loss: float) -> bool:
        """Whether a generation scoring ``accuracy`` and ``loss`` is strictly better."""
        return (accuracy, -loss) > (self.accuracy, -self.loss)


def feature_queries(images: int) -> int:
    """The queries :func:`encode_images` makes for ``images`` images."""
    return batched_calls(images, CHUNK)


def encode_images(model: AdaptedCLIP, images: torch.Tensor) -> torch.Tensor:
    """Image features of ``images``, one query per ``CHUNK`` images."""
    with torch.no_grad():
        return batched(model.encode_images, images, CHUNK)


class Craft:
    """CraFT on one site's classification data around a model built by method ``craft``.

    The search starts from ``mean`` (default ``z = 0``) with step size ``sigma`` (default
    ``options.sigma``): a federated site starts from the global search distribution and
    returns :meth:`distribution` after :meth:`run` (FedBPT). ``options.validation`` of
    ``train`` is held out to choose the generation :meth:`run` returns (module doc).
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
        self.model, self.prompt = model, model.text_in
        self.train, self.validation = hold_out(train, options.validation, seed=seed)
        self.selected: BestGeneration | None = None
        self.initial: dict[str, torch.Tensor] | None = None  # the refiner as the run started
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
        """The search distribution now: its mean ``z`` (after a run with a held-out split,
        the selected generation's point) and step size ``sigma``."""
        mean = self.search.mean if self.selected is None else self.selected.point.clone()
        return mean, self.search.sigma

    def plan(self) -> QueryPlan:
        """The queries a run started now would spend (checked against the backbone's budget)."""
        backbone = self.model.backbone
        budget = backbone.query_budget
        return plan_queries(
            self.options,
            train_size=len(self.train),
            remaining=None if budget is None else budget - backbone.queries_used,
            held_out=0 if self.validation is None else len(self.validation),
        )

    def run(self, *, on_generation: Callable[[Generation], None] | None = None) -> QueryPlan:
        """Query the training features, then run every generation the budget allows; end
        at the selected generation when there is a held-out split."""
        backbone, options = self.model.backbone, self.options
        start = backbone.queries_used
        plan = self.plan()
        features = encode_images(self.model, self.train.images)
        held = None
        if self.validation is not None:
            held = encode_images(self.model, self.validation.images)
            self.observe()
            self._consider(0, held)
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
            validation = None if held is None else self._consider(index, held)
            if on_generation is not None:
                spent = backbone.queries_used - start
                paper = index * plan.candidates
                on_generation(Generation(index, spent, min(values), loss, paper, validation))
        assert backbone.queries_used - start == plan.total <= options.queries
        if self.selected is not None:
            self.prompt.move_to(self.selected.point)
            self.refiner.load_state_dict(self.selected.refiner)
            self.text_features = self.selected.text_features
        return plan

    def _consider(self, index: int, held: torch.Tensor) -> float:
        """Score the current prompt with the current refiner, and with the refiner as it
        started, on the held-out split (no query); keep either if it beats the selection so
        far. Returns the held-out accuracy with the current refiner."""
        assert self.validation is not None and self.text_features is not None
        labels, scores = self.validation.labels, []
        current = copy.deepcopy(self.refiner.state_dict())
        if self.initial is None:
            self.initial = current
        for refiner in (current, self.initial):
            self.refiner.load_state_dict(refiner)
            _, refined = self.predict(held)
            accuracy = 100.0 * (refined.argmax(1) == labels).float().mean().item()
            loss = F.cross_entropy(refined, labels).item()
            scores.append(accuracy)
            if self.selected is None or self.selected.beaten_by(accuracy, loss):
                point, features = self.prompt.point.clone(), self.text_features
                self.selected = BestGeneration(index, accuracy, loss, point, refiner, features)
        self.refiner.load_state_dict(current)
        return scores[0]

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

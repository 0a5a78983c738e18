"""The ``craft`` trainer of ``fedgray adapt``: CraFT's run logged as accuracy vs queries."""

from __future__ import annotations

import copy
import time

import torch
from tqdm.auto import tqdm

from fedgray.adapters.prompt import CraftConfig
from fedgray.blackbox.craft import Craft, Generation, encode_images, feature_queries
from fedgray.blackbox.refine import PredictionRefiner
from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.tasks import TaskData
from fedgray.train.job import Job, Trained


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


def craft_queries(config: Config, validation: TaskData, test: TaskData) -> int:
    """The most queries :func:`train_craft` spends and its ``score`` spends on ``test``: the
    validation features, ``method.craft.queries`` (CraFT stops at the last generation that
    fits), then the test features."""
    options = config.method.section(CraftConfig)
    return feature_queries(len(validation)) + options.queries + feature_queries(len(test))


def train_craft(job: Job) -> Trained:
    """Run CraFT within ``method.craft.queries``; evaluate on the validation split every
    ``eval_every`` generations.

    The validation images' features are queried once before CraFT starts (the backbone
    counts them, CraFT's budget does not); every evaluation after that reuses the text
    features CraFT queried for its refinement step, so evaluating costs no queries. CraFT
    scores as :func:`fedgray.tasks.evaluate` does, so its accuracy at 0 queries is the
    zero-shot one (CraFT's own: its context words before every class prompt). The last
    record is the generation CraFT returns, chosen on its held-out share of the training
    data (``selected``; 0 is the start). Scoring the result (the test split, after the
    run) also scores the last generation (``last_accuracy``, ``last_prompt_accuracy``:
    what the authors' code returns), from the same image features.
    """
    config, model = job.config, job.model
    if config.privacy.enabled:
        raise ConfigError(
            f"privacy.enabled: DP-SGD needs gradients; method '{config.method.name}' has none"
        )
    options, backbone = config.method.section(CraftConfig), model.backbone
    validation_features = encode_images(model, job.validation.images)
    craft = Craft(
        model,
        job.train,
        options=options,
        scale=backbone.interface.logit_scale,
        batch_size=config.train.batch_size,
        lr=config.train.lr,
        seed=config.train.seed,
    )
    start = job.zero_shot["accuracy"]
    plan = craft.plan()
    trainable = craft.prompt.dim + sum(p.numel() for p in craft.refiner.parameters())
    job.header(
        f"CMA-ES over {craft.prompt.dim} dimensions and a "
        f"{trainable - craft.prompt.dim:,}-parameter refinement MLP; {plan.generations} "
        f"generations of {options.popsize} candidates, {plan.total:,} of "
        f"{options.queries:,} queries ({plan.paper_total:,} as the paper counts: candidates)"
    )
    adapted: dict[str, float] = {}
    bar = tqdm(total=plan.generations, desc="generations", disable=not job.progress, leave=False)

    last: list[Generation] = []
    ending: list[tuple[PredictionRefiner, torch.Tensor]] = []  # the last generation's

    def report(generation: Generation, extra: dict[str, float]) -> None:
        raw, refined = craft.predict(validation_features)
        adapted["accuracy"] = _accuracy(refined, job.validation.labels)
        adapted["prompt_accuracy"] = _accuracy(raw, job.validation.labels)
        held = {} if generation.validation is None else {"validation": generation.validation}
        job.run.log(
            {
                "step": generation.index,
                "queries": generation.queries,
                "paper_queries": generation.paper_queries,
                "seconds": time.perf_counter() - job.started,
                "fitness": generation.fitness,
                "loss": generation.loss,
                **held,
                **extra,
                **adapted,
            }
        )
        chosen = f"  returns generation {extra['selected']:.0f}" if "selected" in extra else ""
        job.echo(
            f"generation {generation.index:>4}  queries {generation.queries:>5} (paper "
            f"{generation.paper_queries:>5})  accuracy "
            f"{adapted['accuracy']:.1f}  (prompt only {adapted['prompt_accuracy']:.1f}, "
            f"zero-shot {start:.1f}){chosen}"
        )

    def on_generation(generation: Generation) -> None:
        bar.update()
        last[:] = [generation]
        if generation.index % options.eval_every == 0 and generation.index < plan.generations:
            report(generation, {})
        if generation.index == plan.generations and craft.text_features is not None:
            ending[:] = [(copy.deepcopy(craft.refiner), craft.text_features)]

    craft.run(on_generation=on_generation)
    bar.close()
    selected = craft.selected
    chosen = plan.generations if selected is None else selected.generation
    report(last[0], {"selected": chosen})

    def score(data: TaskData) -> dict[str, float]:
        """The returned generation's accuracies on ``data``, and the last generation's."""
        features = encode_images(model, data.images)
        raw, refined = craft.predict(features)
        scores = {
            "accuracy": _accuracy(refined, data.labels),
            "prompt_accuracy": _accuracy(raw, data.labels),
        }
        for refiner, text_features in ending:  # what the authors' code would return
            raw = craft.logits(features, text_features)
            with torch.no_grad():
                scores["last_accuracy"] = _accuracy(refiner.eval()(raw), data.labels)
            scores["last_prompt_accuracy"] = _accuracy(raw, data.labels)
        return scores

    refiner = {f"refiner.{k}": v.detach().clone() for k, v in craft.refiner.state_dict().items()}
    return Trained(
        validation=dict(adapted),
        score=score,
        state={**model.state_dict(), **refiner},
        trainable=trainable,
        axis="queries",
    )

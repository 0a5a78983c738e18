"""The ``craft`` trainer of ``fedgray adapt``: CraFT's run logged as accuracy vs queries."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from fedgray.blackbox.craft import Craft, Generation, encode_images
from fedgray.config_schema import ConfigError
from fedgray.train.job import Job, Trained


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


def train_craft(job: Job) -> Trained:
    """Run CraFT within ``method.craft.queries``; evaluate every ``eval_every`` generations.

    The test images' features are queried once before CraFT starts (the backbone counts
    them, CraFT's budget does not); every evaluation after that reuses the text features
    CraFT queried for its refinement step, so evaluating costs no queries. CraFT scores as
    :func:`fedgray.tasks.evaluate` does, so its accuracy at 0 queries is the zero-shot one
    (CraFT's own: its context words before every class prompt). The last record is the
    generation CraFT returns, chosen on its held-out split (``selected``; 0 is the start),
    with the last generation's test accuracy beside it (``last_accuracy``: what the
    authors' code returns).
    """
    config, model = job.config, job.model
    if config.privacy.enabled:
        raise ConfigError(
            f"privacy.enabled: DP-SGD needs gradients; method '{config.method.name}' has none"
        )
    options, backbone = config.method.craft, model.backbone
    test_features = encode_images(model, job.test.images)
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
    ending: dict[str, float] = {}

    def report(generation: Generation, extra: dict[str, float]) -> None:
        raw, refined = craft.predict(test_features)
        adapted["accuracy"] = _accuracy(refined, job.test.labels)
        adapted["prompt_accuracy"] = _accuracy(raw, job.test.labels)
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
        if generation.index == plan.generations:  # what the authors' code would return
            raw, refined = craft.predict(test_features)
            ending["last_accuracy"] = _accuracy(refined, job.test.labels)
            ending["last_prompt_accuracy"] = _accuracy(raw, job.test.labels)

    craft.run(on_generation=on_generation)
    bar.close()
    selected = craft.selected
    chosen = plan.generations if selected is None else selected.generation
    report(last[0], {"selected": chosen, **ending})
    refiner = {f"refiner.{k}": v.detach().clone() for k, v in craft.refiner.state_dict().items()}
    return Trained(
        adapted=adapted,
        state={**model.state_dict(), **refiner},
        trainable=trainable,
        axis="queries",
    )

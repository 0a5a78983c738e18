"""Membership inference against one site's final adapters: non-private, epsilon 8 and
epsilon 1 on the same data.

A site trains on ``--members`` examples as ``fedgray adapt`` trains (the one local trainer,
``train.steps`` steps); as many examples of the same population stay out. The attacker
knows the recipe and holds other data of that population: ``--references`` reference
models, each trained the same way on its own ``--members`` examples, calibrate the
per-sample losses (:mod:`fedgray.privacy.membership`). Each setting (privacy off, target
epsilon 8, target epsilon 1) trains its target and references on the same examples::

    python -m simulations.membership_inference configs/private_sketch.yaml \\
        --set train.steps=50 --members 500 --references 4 --output runs/membership

Writes ``results.md`` (AUC and TPR at 1% FPR of the loss and calibrated attacks, and the
target's test metric) into the output folder and prints it.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import torch

from fedgray.adapt import seed_everything
from fedgray.adapters import AdaptedCLIP, build_model
from fedgray.backbone import Backbone
from fedgray.config import Config
from fedgray.materials import load_task_data, open_backbone
from fedgray.privacy.canaries import per_sample_losses
from fedgray.privacy.membership import ATTACKS, attack
from fedgray.privacy.objectives import private_task
from fedgray.resolver import load_config
from fedgray.tasks import TASKS, TaskData, evaluate
from fedgray.train.schedule import Schedule
from fedgray.train.trainer import LocalTrainer
from simulations.tables import write_results

SETTINGS: dict[str, list[str]] = {
    "non-private": ["privacy.enabled=false"],
    "epsilon 8": [
        "privacy.enabled=true",
        "privacy.noise_multiplier=null",
        "privacy.target_epsilon=8",
    ],
    "epsilon 1": [
        "privacy.enabled=true",
        "privacy.noise_multiplier=null",
        "privacy.target_epsilon=1",
    ],
}
"""Setting -> its overrides of the given config."""


def trained(config: Config, backbone: Backbone, data: TaskData, *, seed: int) -> AdaptedCLIP:
    """The configured method trained on ``data`` as ``fedgray adapt`` trains it."""
    torch.manual_seed(seed)
    model = build_model(backbone, config.method)
    trainer = LocalTrainer(
        config,
        model,
        data,
        schedule=Schedule.single_site(config.train),
        seed=seed,
        who="membership",
    )
    trainer.run()
    trainer.close()
    return model


def losses(config: Config, model: AdaptedCLIP, data: TaskData) -> torch.Tensor:
    """Per-sample losses of ``data`` under ``model`` (the per-sample objective of DP-SGD:
    a loss that depends on the sample alone, whatever trained the model)."""
    task = private_task(
        config.train.task, model, config.privacy.objective, config.privacy.loss_scale
    )
    return per_sample_losses(model, task, data, scale=model.backbone.interface.logit_scale)


def measure(
    config: Config,
    backbone: Backbone,
    pool: TaskData,
    test: TaskData,
    *,
    members: int,
    references: int,
) -> list[float]:
    """One setting's figures: each attack's AUC and TPR at 1% FPR (in %), and the target's
    test metric. The first ``members`` examples of ``pool`` train the target, the next as
    many stay out, and each reference trains on its own next ``members``."""
    inside = pool.subset(range(members))
    candidates = pool.subset(range(2 * members))
    is_member = torch.arange(2 * members) < members
    target = trained(config, backbone, inside, seed=config.train.seed)
    target_losses = losses(config, target, candidates)
    utility = evaluate(target, test)[TASKS[config.train.task].metric]
    reference_losses = torch.stack(
        [
            losses(
                config,
                trained(
                    config,
                    backbone,
                    pool.subset(range((2 + k) * members, (3 + k) * members)),
                    seed=config.train.seed + 1 + k,
                ),
                candidates,
            )
            for k in range(references)
        ]
    )
    figures = []
    for scores in ATTACKS.values():
        result = attack(scores(target_losses, reference_losses), is_member)
        figures += [result.auc, 100 * result.tpr_at_1_percent]
    return [*figures, utility]


FORMATS = ("{:.3f}", "{:.1f}%", "{:.3f}", "{:.1f}%", "{:.1f}")  # the cells of :func:`measure`


def cells(runs: Sequence[Sequence[float]]) -> list[str]:
    """Table cells of one setting over its seeds: the value, or mean ± standard deviation."""
    out = []
    for form, values in zip(FORMATS, zip(*runs, strict=True), strict=True):
        mean = form.format(statistics.mean(values))
        spread = form.format(statistics.stdev(values)) if len(values) > 1 else ""
        out.append(f"{mean} ± {spread}" if spread else mean)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every setting of :data:`SETTINGS` on one pool of examples per seed; print the
    table and write it to ``--output``/results.md."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("::")[0])
    parser.add_argument("config", help="YAML run configuration")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--members", type=int, default=500, help="examples the target trains on")
    parser.add_argument("--references", type=int, default=4, help="the attacker's reference models")
    parser.add_argument("--output", required=True, help="folder for results.md")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="data and training seeds; with several, each cell is mean ± standard deviation",
    )
    args = parser.parse_args(argv)
    size = (2 + args.references) * args.members
    runs: dict[str, list[list[float]]] = {setting: [] for setting in SETTINGS}
    for seed in args.seeds:
        seeded = [*args.overrides, f"data.train_size={size}", f"data.seed={seed}"]
        seeded.append(f"train.seed={seed}")
        base = load_config(args.config, seeded)
        seed_everything(base.train)
        backbone = open_backbone(base, progress=False)
        pool = load_task_data(base.data, backbone, split="train")
        test = load_task_data(base.data, backbone, split="test")
        for setting, overrides in SETTINGS.items():
            config = load_config(args.config, [*seeded, *overrides])
            figures = measure(
                config, backbone, pool, test, members=args.members, references=args.references
            )
            runs[setting].append(figures)
            print(f"seed {seed}, {setting}: " + " | ".join(cells([figures])), flush=True)
    rows = [
        "| setting | loss AUC | loss TPR at 1% FPR | calibrated AUC | calibrated TPR at 1% FPR "
        "| test metric |",
        "|---|---|---|---|---|---|",
    ]
    rows += [f"| {setting} | " + " | ".join(cells(found)) + " |" for setting, found in runs.items()]
    write_results(args.output, rows)


if __name__ == "__main__":
    main()

"""The ``fedgray`` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fedgray import sweep as privacy_sweep
from fedgray.backbone.access import SEALING_MODES, SealedError
from fedgray.backbone.loading import BackboneLoadError
from fedgray.bench.command import add_bench_parser
from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.deploy.cli import add_deploy_parser
from fedgray.owner.cli import add_owner_parsers
from fedgray.resolver import load_config
from fedgray.runtime_cli import add_runtime_parser
from fedgray.use.cli import add_use_parser

EXPECTED_ERRORS = (ConfigError, BackboneLoadError, SealedError, FileNotFoundError, ValueError)


def _config_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "config",
        nargs=None if required else "?",
        help="YAML run configuration (see configs/); defaults apply to missing keys",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=200 (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def _cmd_adapt(args: argparse.Namespace) -> None:
    from fedgray.adapt import adapt

    config = _load(args)
    if args.output:
        config.output.root = args.output
    result = adapt(config, progress=not args.quiet)
    print(f"\n{'metric':<10}{'zero-shot':>11}{'adapted':>10}")
    for key in ("i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5", "accuracy"):
        if key in result.adapted:  # black-box classification methods report accuracy only
            print(f"{key:<10}{result.zero_shot[key]:>11.1f}{result.adapted[key]:>10.1f}")
    print(
        f"trainable {result.trainable:,} ({result.fraction:.2%} of the backbone), "
        f"{result.queries:,} backbone queries, {result.seconds:.0f} s; "
        f"run folder: {result.run_dir}"
    )
    if result.privacy is not None:
        p = result.privacy
        print(
            f"DP-SGD: epsilon {p['epsilon']:.4f} at delta {p['delta']:g} (noise multiplier "
            f"{p['noise-multiplier']:.3f}, sample rate {p['sample-rate']:.4f})"
        )


def _cmd_audit(args: argparse.Namespace) -> int:
    from fedgray.audit import AuditFailed, AuditOptions, audit, check

    config = _load(args)
    given = {
        "canaries": args.canaries,
        "guesses": args.guesses,
        "confidence": args.confidence,
        "seed": args.audit_seed,
        "canary": args.canary,
    }
    options = AuditOptions(**{k: v for k, v in given.items() if v is not None})
    result = audit(config, options=options, progress=not args.quiet)
    print(
        f"\n{result.correct} of {result.guesses} guesses right ({result.members} of "
        f"{result.canaries} canaries trained on)\n"
        f"empirical epsilon >= {result.lower_bound:.3f} at {result.confidence:.0%} confidence; "
        f"accountant's epsilon {result.epsilon:.3f} (delta {result.delta:g})\n"
        f"batches drawn against Poisson sampling at the accountant's rate: p = "
        f"{result.sampling_p_value:.3g}\n"
        f"run folder: {result.run_dir}"
    )
    try:
        check(result)
    except AuditFailed as error:
        print(f"fedgray: error: {error}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from fedgray.fl.serverapp.failures import FederationError
    from fedgray.fl.serverapp.report import comparison
    from fedgray.fl.simulation.engine import FLOWER_LOG, open_run, run_federation
    from fedgray.launch.processes import Stopped

    resume = Path(args.resume) if args.resume else None
    config, run = open_run(args.config, args.overrides, resume=resume)
    fed = config.federation
    print(
        f"{fed.num_sites} sites x {fed.num_rounds} rounds of {config.method.name} on "
        f"{config.data.dataset} ({fed.partitioner} partition, {fed.strategy})\n"
        f"run folder: {run.path}",
        flush=True,
    )
    try:
        summary = run_federation(config, run, echo=lambda line: print(line, flush=True))
    except Stopped as stop:  # everything it started is stopped by now
        print(f"\ninterrupted; continue with: fedgray run --resume {run.path}", flush=True)
        return 128 + stop.signum
    except FederationError as error:  # the run started and failed: exit 1, not 2
        print(f"fedgray: error: {error} (Flower's log: {run.path / FLOWER_LOG})", file=sys.stderr)
        return 1
    print()
    for line in comparison(summary):
        print(line)
    print(f"{summary['seconds']:.0f} s in rounds; run folder: {run.path}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> None:
    privacy_sweep.run(args)


def _cmd_info(args: argparse.Namespace) -> None:
    from fedgray.adapters import METHODS
    from fedgray.backbone.loading import backbone_lines, builtin_models
    from fedgray.data.registry import DATASETS

    print("built-in models:", ", ".join(builtin_models()))
    print("datasets:", ", ".join(DATASETS))
    print("methods:")
    for method in METHODS.values():
        print(f"  {method.name:<13} level >= {method.level.value:<6} {method.description}")
    print("backbones (open_clip configs: tower families, levels a sealed one offers):")
    print("\n".join(backbone_lines()))
    print("sealing modes (see docs/security.md):")
    for mode, protects in SEALING_MODES.items():
        print(f"  {mode}: {protects}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fedgray`` command."""
    parser = argparse.ArgumentParser(
        prog="fedgray",
        description="Federated, privacy-oriented adaptation of sealed (gray-box) CLIP backbones.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adapt = commands.add_parser(
        "adapt",
        help="train adapters on one site's data and compare with zero-shot",
        description="Train the configured method on one site's data, evaluate zero-shot "
        "and adapted, and write a run folder (config, metrics, adapters, curve).",
    )
    _config_arguments(adapt, required=True)
    adapt.add_argument(
        "--output",
        metavar="DIR",
        help="root folder for run folders (default: output.root of the config)",
    )
    adapt.set_defaults(handler=_cmd_adapt)
    run = commands.add_parser(
        "run",
        help="federated adaptation: a Flower simulation of the configured sites",
        description="Simulate federation.num_sites sites with Flower (in-process, Ray), "
        "federation.num_rounds rounds of the configured method; print per-round progress and "
        "a comparison with zero-shot, and write a run folder (config, metrics, adapters, "
        "curve, checkpoint).",
    )
    _config_arguments(run, required=False)
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (its config.yaml is used; "
        "--set may change e.g. federation.num_rounds)",
    )
    run.set_defaults(handler=_cmd_run)
    audit = commands.add_parser(
        "audit",
        help="audit a site's DP-SGD: an empirical lower bound on epsilon beside the accountant's",
        description="Train the configured DP-SGD at one site (as fedgray adapt does) with "
        "canaries each included with probability 1/2, score them, and bound epsilon from "
        "below (Steinke, Nasr and Jagielski's one-run audit). Exits 1 when the bound exceeds "
        "the accountant's epsilon. The audited adapters are not saved.",
    )
    _config_arguments(audit, required=False)
    audit.add_argument("--canaries", type=int, help="canaries (default 1000)")
    audit.add_argument(
        "--guesses",
        type=int,
        help="guesses, half on the highest scores, half on the lowest (default 100)",
    )
    audit.add_argument("--confidence", type=float, help="of the bound (default 0.95)")
    audit.add_argument(
        "--canary",
        metavar="KIND",
        help="canary kind: input or feature (default: feature with privacy.cache_features, "
        "else input)",
    )
    audit.add_argument("--audit-seed", type=int, help="seed of the canaries and their draw (0)")
    audit.set_defaults(handler=_cmd_audit)
    add_owner_parsers(commands, _config_arguments, load=load_config)
    sweep = commands.add_parser(
        "sweep",
        help="privacy-utility sweep: federated runs over target epsilons (and seeds)",
        description=(privacy_sweep.__doc__ or "").split("::")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arguments(sweep, required=False)
    privacy_sweep.add_arguments(sweep)
    sweep.set_defaults(handler=_cmd_sweep)
    info = commands.add_parser(
        "info",
        help="list built-in models, datasets and methods",
        description="List built-in models, datasets and methods.",
    )
    info.set_defaults(handler=_cmd_info)
    add_deploy_parser(commands, _config_arguments)
    add_runtime_parser(commands)
    add_bench_parser(commands)
    add_use_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedgray`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    try:
        return handler(args) or 0
    except EXPECTED_ERRORS as error:  # refused before anything ran
        print(f"fedgray: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fedgray info | head`: the reader left, as a shell tool would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())

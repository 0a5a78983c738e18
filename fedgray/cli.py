"""The ``fedgray`` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fedgray import sweep as privacy_sweep
from fedgray.backbone.access import SEALING_MODES, AccessLevel, SealedError
from fedgray.backbone.loading import BUILTIN_TAG, BackboneLoadError
from fedgray.backbone.service import add_runtime_parser
from fedgray.bench.command import add_bench_parser
from fedgray.config import Config, load_config
from fedgray.config_schema import ConfigError
from fedgray.deploy.cli import add_deploy_parser
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
        f"run folder: {result.run_dir}"
    )
    try:
        check(result)
    except AuditFailed as error:
        print(f"fedgray: error: {error}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from fedgray.deploy.processes import Stopped
    from fedgray.fl.serverapp.failures import FederationError
    from fedgray.fl.serverapp.report import comparison
    from fedgray.fl.simulation.engine import FLOWER_LOG, open_run, run_federation

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


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from fedgray.owner.pretrain import builtin_checkpoint, pretrain

    config = _load(args)
    name, recipe = config.backbone.name, config.pretrain
    build = pretrain if args.force else builtin_checkpoint
    print(f"checkpoint: {build(name, recipe, progress=not args.quiet)}")


def _cmd_keys(args: argparse.Namespace) -> None:
    from fedgray.backbone.keys import generate_keys

    files = generate_keys(args.out)
    print(f"signing key (owner only):   {files.signing_key}")
    print(f"verification key (sites):   {files.verify_key}")
    print(f"content key (the runtime):  {files.content_key}")


def _cmd_seal(args: argparse.Namespace) -> None:
    import torch

    from fedgray.backbone.artifact import seal
    from fedgray.backbone.keys import read_content_key, read_signing_key
    from fedgray.backbone.loading import create_clip
    from fedgray.site import resolve_pretrained

    config = _load(args)
    signing_key = read_signing_key(args.signing_key)
    content_key = read_content_key(args.content_key)
    pretrained = None if args.pretrained.lower() == "none" else args.pretrained
    source = resolve_pretrained(args.name, pretrained, config.pretrain, progress=not args.quiet)
    torch.manual_seed(config.pretrain.seed)  # a random backbone is the same on every run
    model = create_clip(args.name, source)
    manifest = seal(
        model,
        args.out,
        name=args.name,
        level=args.level,
        signing_key=signing_key,
        content_key=content_key,
        version=args.version,
        artifact_key=args.artifact_key,
    )
    print(
        f"sealed {manifest.name} (level {manifest.level.value}, version {manifest.version}, "
        f"id {manifest.artifact_id}, weights sha256 {manifest.weights_sha256[:16]}...) "
        f"into {args.out}"
    )


def _cmd_revoke(args: argparse.Namespace) -> None:
    from fedgray.backbone.revocation import write_revocations

    serial = write_revocations(args.out, args.ids, signing_key=args.signing_key, serial=args.serial)
    print(f"revoked {len(set(args.ids))} artifact(s) in {args.out} (serial {serial})")


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
    pretrain = commands.add_parser(
        "pretrain",
        help="pretrain (or locate) the built-in owner's backbone",
        description="Pretrain the built-in tiny CLIP on the benchmark's source domain with "
        "the config's pretrain recipe and cache it under the user cache directory.",
    )
    _config_arguments(pretrain, required=False)
    pretrain.add_argument("--force", action="store_true", help="retrain even if cached")
    pretrain.set_defaults(handler=_cmd_pretrain)
    keys = commands.add_parser(
        "keys",
        help="create the model owner's signing key pair and content key",
        description="Create an Ed25519 signing key pair and a 256-bit AES-GCM content key in "
        "DIR. The signing key stays with the owner; sites get the verification key, and the "
        "runtime that decrypts the backbone gets the content key. Existing files are never "
        "overwritten.",
    )
    keys.add_argument("--out", required=True, metavar="DIR", help="folder for the three key files")
    keys.set_defaults(handler=_cmd_keys)
    seal = commands.add_parser(
        "seal",
        help="seal an open_clip backbone into a signed, encrypted artifact",
        description="Write an open_clip backbone as one artifact file: its weights encrypted "
        "with the content key (AES-GCM) and a manifest (architecture, access level, entry "
        "points, weights hash) signed with the owner's key. Use it with backbone.artifact, "
        "backbone.verify_key and backbone.content_key in a config.",
    )
    _config_arguments(seal, required=False)
    seal.add_argument(
        "--name", required=True, help="open_clip architecture, e.g. ViT-B-32 or fedgray-tiny"
    )
    seal.add_argument(
        "--pretrained",
        required=True,
        metavar="TAG_OR_PATH",
        help=f"open_clip pretrained tag, local checkpoint file, '{BUILTIN_TAG}' (the built-in "
        "owner's backbone, pretrained with the config's pretrain recipe if not cached) or "
        "'none' (random weights, seeded with pretrain.seed)",
    )
    seal.add_argument(
        "--level",
        default="gray",
        choices=[level.value for level in AccessLevel],
        help="the most access a site may take (default: gray)",
    )
    seal.add_argument(
        "--signing-key", required=True, metavar="FILE", help="the owner's signing key (PEM)"
    )
    seal.add_argument(
        "--content-key", required=True, metavar="FILE", help="the content key (base64)"
    )
    seal.add_argument("--out", required=True, metavar="FILE", help="the artifact file to write")
    seal.add_argument(
        "--version",
        type=int,
        default=1,
        metavar="N",
        help="the owner's version of this artifact; sites refuse versions below the one "
        "they pin (backbone.min_version) (default: 1)",
    )
    seal.add_argument(
        "--artifact-key",
        metavar="FILE",
        help="also write this artifact's own key (opens it and no other artifact) to FILE",
    )
    seal.set_defaults(handler=_cmd_seal)
    revoke = commands.add_parser(
        "revoke",
        help="write the owner's signed list of revoked artifact ids",
        description="Write a revocation list signed with the owner's key: sites that set "
        "backbone.revocations to it (or a runtime started with --revocations) refuse the "
        "artifacts it names. The list is replaced whole: name every revoked id.",
    )
    revoke.add_argument(
        "ids", nargs="+", metavar="ID", help="artifact ids (fedgray seal prints them)"
    )
    revoke.add_argument(
        "--signing-key", required=True, metavar="FILE", help="the owner's signing key (PEM)"
    )
    revoke.add_argument("--out", required=True, metavar="FILE", help="the list file to write")
    revoke.add_argument(
        "--serial",
        type=int,
        metavar="N",
        help="the list's serial, higher than any before it (default: one more than the "
        "list at --out, else 1); sites refuse a list older than the newest they have seen",
    )
    revoke.set_defaults(handler=_cmd_revoke)
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

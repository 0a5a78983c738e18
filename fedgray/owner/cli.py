"""The model owner's commands: ``fedgray pretrain``, ``keys``, ``seal`` and ``revoke``."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedgray.backbone.access import AccessLevel
from fedgray.backbone.loading import BUILTIN_TAG
from fedgray.config import Config

LoadConfig = Callable[[str | Path | None, list[str]], Config]
"""How the ``fedgray`` command loads a config (:func:`fedgray.resolver.load_config`): the
owner's room sits below the resolver (a site opens the owner's built-in backbone), so the
command hands it down."""


def _cmd_pretrain(args: argparse.Namespace, *, load: LoadConfig) -> None:
    from fedgray.owner.pretrain import builtin_checkpoint, pretrain

    config = load(args.config, args.overrides)
    name, recipe = config.backbone.name, config.pretrain
    build = pretrain if args.force else builtin_checkpoint
    print(f"checkpoint: {build(name, recipe, progress=not args.quiet)}")


def _cmd_keys(args: argparse.Namespace) -> None:
    from fedgray.owner.keys import generate_keys

    files = generate_keys(args.out)
    print(f"signing key (owner only):   {files.signing_key}")
    print(f"verification key (sites):   {files.verify_key}")
    print(f"content key (the runtime):  {files.content_key}")


def _cmd_seal(args: argparse.Namespace, *, load: LoadConfig) -> None:
    import torch

    from fedgray.backbone.keys import read_content_key, read_signing_key
    from fedgray.backbone.loading import create_clip
    from fedgray.owner.pretrain import resolve_pretrained
    from fedgray.owner.seal import seal

    config = load(args.config, args.overrides)
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
    from fedgray.owner.revocation import write_revocations

    serial = write_revocations(args.out, args.ids, signing_key=args.signing_key, serial=args.serial)
    print(f"revoked {len(set(args.ids))} artifact(s) in {args.out} (serial {serial})")


def add_owner_parsers(
    commands: Any, config_arguments: Callable[..., None], *, load: LoadConfig
) -> None:
    """Add the owner's four commands to the ``fedgray`` command's subparsers; ``load`` reads
    the config of ``pretrain`` and ``seal``, names checked."""
    pretrain = commands.add_parser(
        "pretrain",
        help="pretrain (or locate) the built-in owner's backbone",
        description="Pretrain the built-in tiny CLIP on the benchmark's source domain with "
        "the config's pretrain recipe and cache it under the user cache directory.",
    )
    config_arguments(pretrain, required=False)
    pretrain.add_argument("--force", action="store_true", help="retrain even if cached")
    pretrain.set_defaults(handler=functools.partial(_cmd_pretrain, load=load))
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
    config_arguments(seal, required=False)
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
    seal.set_defaults(handler=functools.partial(_cmd_seal, load=load))
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

"""``fedgray runtime serve``: the command line of the runtime service
(:mod:`fedgray.backbone.runtime.service`), kept at the CLI layer so that the backbone room
holds no command parser."""

from __future__ import annotations

import argparse
from dataclasses import replace

from fedgray.backbone.access import AccessLevel, SealedError
from fedgray.backbone.budget import Budget
from fedgray.backbone.runtime import service
from fedgray.backbone.runtime.serve import MIB, Limits
from fedgray.backbone.runtime.service import default_limits, serve
from fedgray.config import DEFAULT_GRADIENT_BUDGET, DEFAULT_SAMPLE_BUDGET


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise SealedError(f"--mode {text}: not an octal mode such as 660") from None


def _budget_option(text: str) -> int | None:
    """A budget option's value: a positive count, or ``none`` for unlimited."""
    if text.lower() == "none":
        return None
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive count, or 'none'")
    return value


def _cmd_serve(args: argparse.Namespace) -> None:
    limits = default_limits(total_mib=args.max_mib)
    overrides = {
        "connections": args.max_connections,
        "connections_per_user": args.max_connections_per_user,
        "connection_bytes": None if args.connection_mib is None else args.connection_mib * MIB,
        "idle_timeout": args.idle_timeout,
        "read_timeout": args.read_timeout,
    }
    serve(
        args.artifact,
        socket_path=args.socket,
        verify_key=args.verify_key,
        content_key=args.content_key,
        user=args.user,
        group=args.group,
        level=args.level,
        budget=Budget(args.query_budget, args.sample_budget, args.gradient_budget),
        mode=_mode(args.mode),
        limits=replace(limits, **{k: v for k, v in overrides.items() if v is not None}),
        min_version=args.min_version,
        revocations=args.revocations,
    )


def add_runtime_parser(commands: argparse._SubParsersAction) -> None:
    """``fedgray runtime serve``: the command's parser, for ``fedgray/cli.py``."""
    runtime = commands.add_parser(
        "runtime",
        help="serve a sealed backbone from its own process (and user) over a Unix socket",
        description=service.__doc__.split("\n\n")[1] if service.__doc__ else None,
    )
    actions = runtime.add_subparsers(dest="runtime_command", required=True, metavar="ACTION")
    serve_ = actions.add_parser(
        "serve",
        help="open ARTIFACT and answer encoder requests on --socket until stopped",
        description="Open a sealed artifact (reading the content key itself), bind a Unix "
        "socket, switch to --user, make the process non-dumpable and serve the runtime "
        "schema until stopped. Sites connect with backbone.runtime: PATH.",
    )
    serve_.add_argument("artifact", metavar="ARTIFACT", help="the sealed artifact (.fgs)")
    serve_.add_argument("--socket", required=True, metavar="PATH", help="Unix socket to create")
    serve_.add_argument("--verify-key", required=True, metavar="FILE", help="owner-verify.pem")
    serve_.add_argument(
        "--content-key",
        required=True,
        metavar="FILE",
        help="the artifact's key (or the owner's content key)",
    )
    serve_.add_argument("--user", metavar="NAME", help="run as this user (needs root)")
    serve_.add_argument(
        "--group", metavar="NAME", help="the socket's group: the users allowed to connect"
    )
    serve_.add_argument(
        "--level", choices=[level.value for level in AccessLevel], help="at most the artifact's"
    )
    for option, allowed, what in (
        ("--query-budget", None, "encoder calls"),
        ("--sample-budget", DEFAULT_SAMPLE_BUDGET, "samples forwarded"),
        ("--gradient-budget", DEFAULT_GRADIENT_BUDGET, "samples with input gradients returned"),
    ):
        serve_.add_argument(
            option,
            type=_budget_option,
            default=allowed,
            metavar="N",
            help=f"{what} each peer user may spend, 'none' for no limit (default: {allowed})",
        )
    serve_.add_argument(
        "--min-version", type=int, metavar="N", help="refuse artifact versions below N"
    )
    serve_.add_argument(
        "--revocations", metavar="FILE", help="the owner's signed revocation list to honour"
    )
    serve_.add_argument(
        "--mode",
        default="660",
        help="permissions of the socket file, octal, never writable by all (default: 660)",
    )
    limits = Limits()
    for option, kind, default, what in (
        ("--max-connections", int, limits.connections, "connections open at once"),
        (
            "--max-connections-per-user",
            int,
            limits.connections_per_user,
            "connections open at once by one user",
        ),
        ("--max-mib", int, "half the memory", "MiB all connections may hold together"),
        ("--connection-mib", int, "a quarter of --max-mib", "MiB one connection may hold"),
        ("--idle-timeout", float, limits.idle_timeout, "seconds a connection may stay idle"),
        ("--read-timeout", float, limits.read_timeout, "seconds to finish sending a frame"),
    ):
        serve_.add_argument(option, type=kind, metavar="N", help=f"{what} (default: {default})")
    serve_.set_defaults(handler=_cmd_serve)

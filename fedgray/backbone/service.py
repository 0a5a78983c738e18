"""The backbone runtime as a service under its own OS identity: ``fedgray runtime serve``.

A child runtime (``backbone.isolated``) belongs to the site's user, who can read its
memory and the content key. Started by the operator instead (as root), the runtime reads
a key file the site's user cannot read, switches to another user and makes itself
non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): no process of another user, nor of its own
user, can then read its ``/proc/PID/mem`` or attach a debugger (only root can).
Sites connect over a Unix socket (``backbone.runtime: PATH``) and speak only the schema
of :mod:`fedgray.backbone.wire`. One runtime per site machine serves all of its sites'
processes; the query budget (``black``) is the runtime's, shared by its connections.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pwd
import socket
import stat
import threading
from pathlib import Path

import torch

from fedgray.backbone.access import AccessLevel, SealedError
from fedgray.backbone.sealed import SealedBackbone
from fedgray.backbone.serve import interface_args, serve_connection
from fedgray.backbone.wire import Message, send

PR_SET_DUMPABLE = 4


def _entry(user: str) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SealedError(f"--user {user}: no such user") from None
    if os.geteuid() not in (0, entry.pw_uid):
        raise SealedError(f"--user {user}: switching users needs root")
    return entry


def become(entry: pwd.struct_passwd) -> None:
    """Switch this process to the user ``entry`` (its primary group, no other groups)."""
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def make_undumpable() -> None:
    """No core dumps, no ``/proc/PID/mem`` or ptrace for anyone without CAP_SYS_PTRACE."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _listen(path: Path, mode: int) -> socket.socket:
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SealedError(f"{path}: exists and is not a socket")
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, mode)
    server.listen()
    return server


def _warm_up(backbone: SealedBackbone) -> None:
    """One forward and backward of each tower, so that torch's lazy imports happen now,
    while the process may still read the interpreter's files (e.g. a Python under /root)."""
    i = backbone.interface
    pixels = torch.zeros(1, 3, i.image_size, i.image_size, requires_grad=True)
    shift = torch.zeros(1, i.token_width, requires_grad=True)
    tokens = backbone.tokenize(["warm up"])
    with torch.set_grad_enabled(backbone.level.gradients):
        image = backbone.encode_image(pixels)
        text = backbone.encode_text(tokens, shift=shift)
        if image.requires_grad:
            (image.sum() + text.sum()).backward()


def serve(
    artifact: str | Path,
    *,
    socket_path: str | Path,
    verify_key: str | Path,
    content_key: str | Path,
    user: str | None = None,
    level: AccessLevel | str | None = None,
    query_budget: int | None = None,
    mode: int = 0o666,
) -> None:
    """Open the artifact, listen on the socket, switch to ``user``, become non-dumpable,
    then serve until killed.

    Started by root with ``user``, the runtime reads the key and artifact as root (the key
    file may be root's alone, mode 0600) and binds the socket before it switches, like a
    daemon that binds a privileged port; no request is read before the switch.
    """
    from fedgray.backbone.artifact import load_artifact

    if user is not None:
        entry = _entry(user)
    backbone = load_artifact(
        artifact,
        verify_key=verify_key,
        content_key=content_key,
        level=level,
        query_budget=query_budget,
        opaque=False,  # outputs leave the process detached: the graph stays here
    )
    if query_budget is None:  # a warm-up would spend two queries of a black budget
        _warm_up(backbone)
    server = _listen(Path(socket_path), mode)
    if user is not None:
        os.chown(socket_path, entry.pw_uid, entry.pw_gid)
        become(entry)
    make_undumpable()
    lock = threading.Lock()
    print(f"serving {backbone!r} on {socket_path} (pid {os.getpid()})", flush=True)

    def handle(connection: socket.socket) -> None:
        with connection:
            send(connection, Message("ok", interface_args(backbone)))
            serve_connection(connection, backbone, lock)

    while True:
        connection, _ = server.accept()
        threading.Thread(target=handle, args=(connection,), daemon=True).start()


def _cmd_serve(args: argparse.Namespace) -> None:
    serve(
        args.artifact,
        socket_path=args.socket,
        verify_key=args.verify_key,
        content_key=args.content_key,
        user=args.user,
        level=args.level,
        query_budget=args.query_budget,
        mode=int(args.mode, 8),
    )


def add_runtime_parser(commands: argparse._SubParsersAction) -> None:
    """``fedgray runtime serve``: the command's parser, for ``fedgray/cli.py``."""
    runtime = commands.add_parser(
        "runtime",
        help="serve a sealed backbone from its own process (and user) over a Unix socket",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
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
    serve_.add_argument("--content-key", required=True, metavar="FILE", help="content.key")
    serve_.add_argument("--user", metavar="NAME", help="run as this user (needs root)")
    serve_.add_argument(
        "--level", choices=[level.value for level in AccessLevel], help="at most the artifact's"
    )
    serve_.add_argument("--query-budget", type=int, metavar="N", help="calls allowed at black")
    serve_.add_argument(
        "--mode", default="666", help="permissions of the socket file, octal (default: 666)"
    )
    serve_.set_defaults(handler=_cmd_serve)

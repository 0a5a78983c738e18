"""The backbone runtime as a service under its own OS identity: ``fedgray runtime serve``.

A child runtime (``backbone.isolated``) belongs to the site's user, who can read its
memory and the content key. Started by the operator instead (as root), the runtime reads
a key file the site's user cannot read, switches to another user and makes itself
non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): no process of another user, nor of its own
user, can then read its ``/proc/PID/mem`` or attach a debugger (only root can).
Sites connect over a Unix socket (``backbone.runtime: PATH``) and speak only the schema
of :mod:`fedgray.backbone.runtime.wire`. One runtime per site machine serves all of its sites'
processes; the budget (encoder calls, samples forwarded, input gradients) is the
runtime's, counted per peer user across that user's connections.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import os
import pwd
import resource
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import torch

from fedgray.backbone.access import AccessLevel, SealedError
from fedgray.backbone.budget import Budget
from fedgray.backbone.runtime.serve import (
    MIB,
    LimitExceeded,
    Limits,
    Shared,
    error_message,
    peer_user,
    serve_connection,
)
from fedgray.backbone.runtime.wire import send
from fedgray.backbone.sealed import SealedBackbone

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


def _listen(path: Path, mode: int, owner: tuple[int, int]) -> socket.socket:
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SealedError(f"{path}: exists and is not a socket")
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777)  # no moment at which the socket is open to all
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    os.chown(path, *owner)
    os.chmod(path, mode)
    server.listen()
    return server


def _socket_owner(user: pwd.struct_passwd | None, group: str | None, mode: int) -> tuple[int, int]:
    """The socket file's owner and group (-1: unchanged), after checking ``mode``."""
    if mode & ~0o777 or mode & 0o002:
        raise SealedError(
            f"--mode {mode:o}: a socket any local user can connect to (or not a mode); "
            "use 660 with --group naming the sites' group"
        )
    gid = -1
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise SealedError(f"--group {group}: no such group") from None
    return (-1 if user is None else user.pw_uid), gid


def _check_limits(limits: Limits) -> None:
    """Refuse limits that are not positive, or that the process cannot keep (more
    connections than open files)."""
    options = {
        "--max-connections": limits.connections,
        "--max-connections-per-user": limits.connections_per_user,
        "--connection-mib": limits.connection_bytes,
        "--max-mib": limits.total_bytes,
        "--read-timeout": limits.read_timeout,
        "--idle-timeout": limits.idle_timeout or 1,
    }
    for option, value in options.items():
        if value <= 0:
            raise SealedError(f"{option}: must be > 0")
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if files != resource.RLIM_INFINITY and limits.connections + 16 > files:
        raise SealedError(
            f"--max-connections {limits.connections}: the open-files limit is {files} "
            "(16 are kept for the runtime itself)"
        )


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
    group: str | None = None,
    level: AccessLevel | str | None = None,
    budget: Budget | None = None,
    mode: int = 0o660,
    limits: Limits | None = None,
    min_version: int | None = None,
    revocations: str | Path | None = None,
) -> None:
    """Open the artifact, listen on the socket, switch to ``user``, become non-dumpable,
    then serve until killed.

    Started by root with ``user``, the runtime reads the key and artifact as root (the key
    file may be root's alone, mode 0600) and binds the socket before it switches, like a
    daemon that binds a privileged port; no request is read before the switch. The socket
    belongs to ``user`` and ``group`` with ``mode`` (never writable by all: connecting
    needs write permission). ``budget`` (default: unlimited) is each peer user's, kept
    for the runtime's lifetime across that user's connections.
    """
    from fedgray.backbone.artifact import load_artifact

    entry = None if user is None else _entry(user)
    owner = _socket_owner(entry, group, mode)
    limits = limits or default_limits()
    _check_limits(limits)
    backbone = load_artifact(
        artifact,
        verify_key=verify_key,
        content_key=content_key,
        level=level,
        opaque=False,  # outputs leave the process detached: the graph stays here
        min_version=min_version,
        revocations=revocations,
    )
    _warm_up(backbone)  # the budget is the peers' (Shared), not the backbone's
    server = _listen(Path(socket_path), mode, owner)
    if entry is not None:
        become(entry)
    make_undumpable()
    shared = Shared(backbone, limits, budget or Budget())
    print(f"serving {backbone!r} on {socket_path} (pid {os.getpid()})", flush=True)

    def handle(connection: socket.socket) -> None:
        with connection:
            connection.settimeout(limits.read_timeout)  # for the greeting and a refusal
            try:
                peer = peer_user(connection)
                shared.admit(peer)
            except LimitExceeded as error:
                with contextlib.suppress(OSError):
                    send(connection, error_message(error))
                return
            try:
                send(connection, shared.greeting(peer))
                serve_connection(connection, shared, peer)
            except OSError:
                pass
            finally:
                shared.leave(peer)

    failing = False
    while True:
        try:
            connection, _ = server.accept()
        except OSError as error:  # out of file descriptors, or a peer gone: keep serving
            if not failing:
                print(f"accept: {error.strerror or error}; still serving", file=sys.stderr)
            failing = True
            time.sleep(0.05)
            continue
        failing = False
        threading.Thread(target=handle, args=(connection,), daemon=True).start()


def default_limits(*, total_mib: int | None = None) -> Limits:
    """:class:`Limits` for a runtime on this machine: all connections together may hold
    ``total_mib`` (default: half the machine's memory), a user half of that and a
    connection a quarter."""
    if total_mib is None:
        total_mib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2 // MIB
    total = total_mib * MIB
    return Limits(connection_bytes=total // 4, user_bytes=total // 2, total_bytes=total)

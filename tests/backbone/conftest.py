"""Fixtures of the runtime's tests: a sealed micro artifact, ``fedgray runtime serve``
processes stopped after each test, and throwaway users and groups."""

from __future__ import annotations

import grp
import os
import pwd
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedgray.backbone import create_clip
from fedgray.owner.keys import KeyFiles, generate_keys
from fedgray.owner.seal import seal
from tests.backbone.attacks import Serve, ServeMicro, Users, micro_arguments

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def micro_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyFiles, Path]:
    root = tmp_path_factory.mktemp("service")
    keys = generate_keys(root / "keys")
    torch.manual_seed(0)
    path = root / "micro.fgs"
    owner = {"signing_key": keys.signing_key, "content_key": keys.content_key}
    seal(create_clip("fedgray-micro", None), path, name="fedgray-micro", level="gray", **owner)
    return keys, path


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start ``fedgray runtime serve`` with the given arguments; stop it after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, files: int | None = None) -> subprocess.Popen[str]:
        """``files``: the runtime's open-files limit (soft and hard)."""
        command = [sys.executable, "-m", "fedgray.cli", "runtime", "serve", *args]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}

        def limit() -> None:
            if files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=limit
        )
        started.append(process)
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("serving"), f"the runtime did not start: {line!r}"
        return process

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def serve_micro(serve: Serve, micro_artifact: tuple[KeyFiles, Path]) -> ServeMicro:
    """``serve_micro(socket, *extra, files=None)``: serve the micro artifact on ``socket``
    (see :func:`tests.backbone.attacks.micro_arguments`), stopped after the test."""

    def start(socket: Path, *extra: str, files: int | None = None) -> subprocess.Popen[str]:
        return serve(*micro_arguments(micro_artifact, socket, *extra), files=files)

    return start


@pytest.fixture
def users() -> Iterator[Users]:
    """Make system users (``group``: their primary group, made too) for the test; the
    ones it made are deleted afterwards, pass or fail (the machine's user database is not
    the test's to keep)."""
    made: list[str] = []
    groups: list[str] = []

    def user(name: str, group: str | None = None) -> pwd.struct_passwd:
        if group is not None:
            try:
                grp.getgrnam(group)
            except KeyError:
                subprocess.run(["groupadd", "--system", group], check=True)
                groups.append(group)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            primary = [] if group is None else ["--gid", group]
            subprocess.run(["useradd", "--system", "--no-create-home", *primary, name], check=True)
            made.append(name)
            return pwd.getpwnam(name)

    yield user
    for name in made:  # set up before the runtime's fixture, so torn down after it
        subprocess.run(["pkill", "-KILL", "-u", name], check=False, capture_output=True)
        subprocess.run(["userdel", name], check=False, capture_output=True)
    for group in groups:
        subprocess.run(["groupdel", group], check=False, capture_output=True)

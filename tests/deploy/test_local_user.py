"""What another local user (``nobody``) can and cannot reach on a SuperLink's or a site's
machine, tried as that user: the secrets and private keys fedgray writes, and a site's
privacy ledger, stay out of reach even in folders every user may traverse; the SuperLink's
loopback port answers its Control API to that user (the residual risk docs/security.md
names). Needs root, to act as the other user; skipped otherwise."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedgray.deploy.credentials import create_credentials
from fedgray.deploy.roles import superexec_secret
from fedgray.fl.clientapp.floor import LEDGER_FILE, Floor
from fedgray.owner.keys import generate_keys
from tests.deploy.conftest import Federation

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
OTHER = "nobody"
# What the other user runs: the stdlib of a Python every user may execute (a venv's
# interpreter may live under root's home). For each path: read one byte, take its lock.
TRY_FILES = """
import fcntl, json, sys
found = {}
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        found[path] = "read and locked"
    except OSError as error:
        found[path] = type(error).__name__
print(json.dumps(found))
"""
# POST an empty request to the SuperLink's Control API (as curl would), trusting its CA.
TRY_CONTROL = """
import ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context(cafile=sys.argv[2])
request = urllib.request.Request(
    f"https://{sys.argv[1]}/v1/control/list-runs", data=b"", method="POST",
    headers={"Content-Type": "application/protobuf"},
)
try:
    with urllib.request.urlopen(request, context=context, timeout=30) as reply:
        print(reply.status)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def _python_for_everyone() -> str:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no Python every user may run")


def _as_other_user(code: str, *args: str) -> str:
    user = pwd.getpwnam(OTHER)
    done = subprocess.run(
        [_python_for_everyone(), "-c", code, *args],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0 and "Permission denied" in done.stderr and not done.stdout:
        pytest.skip(f"{OTHER} cannot run Python here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def open_tree() -> Iterator[Path]:
    """A folder every user may traverse (as /srv or /home often are), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="fedgray-local-user-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_another_local_user_reads_no_secret_key_or_ledger_fedgray_wrote(open_tree: Path) -> None:
    credentials = create_credentials(open_tree / "creds", 1)
    owner = generate_keys(open_tree / "owner")
    secrets = {
        "the SuperLink's SuperExec secret": superexec_secret(open_tree / "server"),
        "a site's SuperExec secret": superexec_secret(open_tree / "site"),
        "the CA key": credentials.ca_key,
        "the SuperLink's TLS key": credentials.superlink_key,
        "a site's node key": credentials.sites[0].private_key,
        "the owner's signing key": owner.signing_key,
        "the backbone's content key": owner.content_key,
    }
    state = open_tree / "site" / "state"
    Floor(max_epsilon_total=100.0).release(state, 1, (1.0, 0.01, 10))  # a round recorded
    secrets["the site's privacy ledger"] = state / LEDGER_FILE
    secrets["the ledger's lock"] = state / f"{LEDGER_FILE}.lock"
    public = {
        "the CA certificate": credentials.ca_cert,
        "a site's public key": credentials.sites[0].public_key,
        "the owner's verification key": owner.verify_key,
    }
    for path in [*secrets.values(), *public.values()]:
        assert path.is_file(), path
    found = json.loads(_as_other_user(TRY_FILES, *map(str, [*secrets.values(), *public.values()])))
    reached = {what for what, path in secrets.items() if found[str(path)] == "read and locked"}
    assert not reached, f"{OTHER} reached {sorted(reached)}"
    assert all(found[str(path)] == "read and locked" for path in public.values()), found


@pytest.mark.slow
@pytest.mark.deploy
def test_another_local_user_reaches_the_loopback_control_api(
    federation: Federation, open_tree: Path
) -> None:
    """The residual risk, shown: open-source Flower 1.42 has no user accounts, so any local
    user who can reach the SuperLink's loopback port lists runs like the operator."""
    ca = shutil.copy(federation.credentials.ca_cert, open_tree / "ca.crt")
    status = _as_other_user(TRY_CONTROL, federation.link.options.local_address, str(ca))
    assert status == "200"

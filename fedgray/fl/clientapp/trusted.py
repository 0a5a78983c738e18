"""The site runs only code it trusts: fedgray's ClientApp as installed on its own machine.

Flower's ``flwr-clientapp`` installs the submitted app bundle (FAB) and imports the
ClientApp its ``pyproject.toml`` names, with the bundle's folder on ``sys.path``: whoever
reaches the SuperLink could make every site run their code. Flower 1.42's own check
(``--trusted-entities``) accepts only bundles that Flower's hub signed, so it cannot vouch
for a bundle submitted to a self-hosted SuperLink.

A fedgray site therefore loads its ClientApp with :func:`trusted_app` (in its
long-lived ClientApp process, :mod:`fedgray.fl.clientapp.resident`), which imports no code
from the bundle. It loads :data:`TRUSTED_CLIENTAPP` from the installed fedgray package when
the bundle names exactly that ClientApp and carries nothing Python could import or run
(only :data:`INERT_SUFFIXES` files); otherwise it writes one line to the SuperNode's log
and answers every message with an :data:`UNTRUSTED_APP` error naming the reason, which the
submitter's ServerApp receives.
A site that names a publisher also refuses, the same way, runs whose run config that
publisher did not sign (:mod:`fedgray.fl.clientapp.signed_runs`).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

from fedgray.fl.common.flower_internals import get_project_dir

TRUSTED_CLIENTAPP = "fedgray.fl.clientapp.app:app"
INERT_SUFFIXES = frozenset({".toml", ".yaml", ".yml", ".md", ".txt", ".json"})
UNTRUSTED_APP = 4405  # Error code of a reply from a site that refused the submitted app


def bundle_verdict(app_dir: Path) -> str | None:
    """Why the installed bundle in ``app_dir`` is not trusted (None: it is)."""
    try:
        config = tomllib.loads((app_dir / "pyproject.toml").read_text(encoding="utf-8"))
        named = config["tool"]["flwr"]["app"]["components"]["clientapp"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as error:
        return f"its pyproject.toml names no ClientApp ({type(error).__name__})"
    if named != TRUSTED_CLIENTAPP:
        return f"its ClientApp is '{named}', this site runs only '{TRUSTED_CLIENTAPP}'"
    code = sorted(
        str(p.relative_to(app_dir))
        for p in app_dir.rglob("*")
        if p.is_file() and p.suffix not in INERT_SUFFIXES
    )
    if code:
        return f"it carries files that are not inert data: {', '.join(code[:5])}"
    return None


class RefusingApp(ClientApp):
    """A ClientApp that answers every message with an :data:`UNTRUSTED_APP` error."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def __call__(self, message: Message, context: Context) -> Message:
        return Message(Error(code=UNTRUSTED_APP, reason=self.reason), reply_to=message)


class PinnedApp(ClientApp):
    """fedgray's ClientApp behind the site's publisher pin: where the node config names a
    publisher key (:data:`~fedgray.fl.clientapp.signed_runs.PUBLISHER_KEY`), a message of a
    run whose run config that publisher did not sign gets the :data:`UNTRUSTED_APP` error
    (and one line in the site's log); every other message goes to ``app``."""

    def __init__(self, app: ClientApp, app_dir: Path, label: str) -> None:
        super().__init__()
        self.app = app
        self.pyproject = tomllib.loads((app_dir / "pyproject.toml").read_text(encoding="utf-8"))
        self.label = label

    def __call__(self, message: Message, context: Context) -> Message:
        # here, not at the top: this module runs before Flower's task heartbeat starts, and
        # the key loading imports torch (seconds), which would let the task's token lapse
        from fedgray.fl.clientapp.signed_runs import PUBLISHER_KEY, run_verdict

        pinned = context.node_config.get(PUBLISHER_KEY)
        if pinned:
            verdict = run_verdict(self.pyproject, context.run_config, Path(str(pinned)))
            if verdict is not None:
                reason = f"this site refuses app {self.label}: {verdict}"
                print(f"fedgray site: {reason}", file=sys.stderr, flush=True)
                return Message(Error(code=UNTRUSTED_APP, reason=reason), reply_to=message)
        return self.app(message, context)


def trusted_app(fab_id: str, fab_version: str, fab_hash: str) -> ClientApp:
    """The ClientApp for the installed bundle ``fab_id``/``fab_version``/``fab_hash``:
    fedgray's own (behind the site's publisher pin) if the bundle passes
    :func:`bundle_verdict`, else a :class:`RefusingApp`. Nothing is imported from the bundle."""
    app_dir = get_project_dir(fab_id, fab_version, fab_hash)
    verdict = bundle_verdict(app_dir)
    label = f"'{fab_id}' {fab_version} ({fab_hash[:12]})"
    if verdict is None:
        from fedgray.fl.clientapp.app import app

        return PinnedApp(app, app_dir, label)
    reason = f"this site refuses app {label}: {verdict}"
    print(f"fedgray site: {reason}", file=sys.stderr, flush=True)
    return RefusingApp(reason)

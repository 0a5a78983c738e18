"""A site that pins a publisher runs only run configs that publisher signed: the attacks of
whoever can submit runs (an unsigned run, one signed with another key, the publisher's own
signed app with a ``--run-config`` override turning privacy off, or its document rewritten
for more rounds) are each answered with the
untrusted-app error, and the site's ClientApp never sees them."""

from __future__ import annotations

import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.cli.build import build_fab_from_disk
from flwr.clientapp import ClientApp
from flwr.common.config import flatten_dict, fuse_dicts, get_fab_config
from flwr.supercore.task_identity import TaskIdentity

from fedgray.backbone.keys import ArtifactError
from fedgray.config import to_document
from fedgray.deploy.app_signing import sign_app
from fedgray.deploy.credentials import create_credentials
from fedgray.deploy.roles import check_node_config
from fedgray.deploy.trial_folders import write_partition_folders
from fedgray.fl.clientapp.signed_runs import PUBLISHER_KEY
from fedgray.fl.clientapp.trusted import UNTRUSTED_APP, PinnedApp
from fedgray.launch.app_folder import write_app
from fedgray.resolver import load_config

SMALL = ["data.train_size=60", "federation.num_sites=3", "federation.partitioner=iid"]
PRIVATE = [*SMALL, "privacy.enabled=true", "privacy.noise_multiplier=1.0"]


class Recorder(ClientApp):
    """Stands in for fedgray's ClientApp: records each message it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Message] = []

    def __call__(self, message: Message, context: Context) -> Message:
        self.seen.append(message)
        return Message(RecordDict({"ran": ConfigRecord({"ok": True})}), reply_to=message)


def _delivered(app_dir: Path, tmp_path: Path, overrides: dict | None = None) -> tuple[Path, dict]:
    """What a site's ClientApp process gets for a submission of ``app_dir``: the bundle as
    Flower builds it (it re-serialises pyproject.toml), installed into a folder, and the run
    config Flower fuses from the bundle and the submitter's overrides."""
    fab = build_fab_from_disk(app_dir)
    installed = tmp_path / f"installed-{app_dir.name}"
    zipfile.ZipFile(BytesIO(fab)).extractall(installed)
    declared = flatten_dict(get_fab_config(fab)["tool"]["flwr"]["app"]["config"])
    return installed, fuse_dicts(declared, overrides or {})


def _ask(app: PinnedApp, run_config: dict, node_config: dict) -> Message:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0  # Message() reads it
    message = Message(RecordDict(), dst_node_id=7, message_type="train")
    context = Context(
        run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=run_config
    )
    return app(message=message, context=context)


@pytest.fixture
def apps(tmp_path: Path) -> dict[str, Path]:
    """The publisher's signed app, the same unsigned, and one signed with another key."""
    config = load_config(None, PRIVATE)
    ours = create_credentials(tmp_path / "ours", 1).publisher_key
    theirs = create_credentials(tmp_path / "theirs", 1).publisher_key
    made = {name: write_app(config, tmp_path / name) for name in ("signed", "unsigned", "forged")}
    sign_app(made["signed"], ours)
    sign_app(made["forged"], theirs)
    return made


@pytest.mark.parametrize(
    ("app", "overrides", "verdict"),
    [
        ("unsigned", None, "its run config is unsigned"),
        ("forged", None, "is not signed with this site's publisher's key"),
        (
            "signed",
            {"overrides": "privacy.enabled=false"},
            "is not signed with this site's publisher's key",
        ),
        (
            "signed",
            {"document": to_document(load_config(None, [*PRIVATE, "federation.num_rounds=500"]))},
            "is not signed with this site's publisher's key",
        ),
    ],
    ids=["unsigned", "another-key", "privacy-off-override", "rounds-override"],
)
def test_a_pinned_site_refuses_runs_its_publisher_did_not_sign(
    apps: dict[str, Path],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    app: str,
    overrides: dict | None,
    verdict: str,
) -> None:
    pin = {PUBLISHER_KEY: str(tmp_path / "ours" / "sites" / "site-0" / "publisher.pem")}
    installed, run_config = _delivered(apps[app], tmp_path, overrides)
    inner = Recorder()
    reply = _ask(PinnedApp(inner, installed, "'fedgray/fedgray'"), run_config, pin)
    assert reply.has_error() and reply.error.code == UNTRUSTED_APP
    assert verdict in reply.error.reason
    assert not inner.seen  # fedgray's ClientApp never ran
    logged = capfd.readouterr().err.splitlines()
    assert [line for line in logged if line.startswith("fedgray site: this site refuses")] == [
        f"fedgray site: {reply.error.reason}"
    ]


def test_a_pinned_site_runs_its_publishers_signed_run_and_an_unpinned_site_runs_any(
    apps: dict[str, Path], tmp_path: Path
) -> None:
    pin = {PUBLISHER_KEY: str(tmp_path / "ours" / "publisher" / "publisher.pem")}
    installed, run_config = _delivered(apps["signed"], tmp_path)
    inner = Recorder()
    assert not _ask(PinnedApp(inner, installed, "'fedgray/fedgray'"), run_config, pin).has_error()
    unsigned, unsigned_config = _delivered(apps["unsigned"], tmp_path)
    assert not _ask(
        PinnedApp(inner, unsigned, "'fedgray/fedgray'"), unsigned_config, {}
    ).has_error()
    assert len(inner.seen) == 2


def test_a_supernode_pinning_an_unreadable_publisher_key_fails_in_one_line(tmp_path: Path) -> None:
    data = write_partition_folders(load_config(None, SMALL), 1, tmp_path / "sites")[0]
    not_a_key = tmp_path / "publisher.pem"
    not_a_key.write_text("hello\n")
    with pytest.raises(ArtifactError, match=r"publisher.pem: not an Ed25519 public key \(PEM\)$"):
        check_node_config({"data-dir": str(data), PUBLISHER_KEY: str(not_a_key)})

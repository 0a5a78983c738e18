"""A deployed site's own settings: node config, data folders, and the app's run config."""

from __future__ import annotations

import csv
import dataclasses
import os
import socket
import tomllib
from pathlib import Path

import pytest

from fedgray.data.registry import load_dataset
from fedgray.deploy.demo import demo_config
from fedgray.deploy.roles import check_node_config
from fedgray.deploy.trial_folders import write_partition_folders
from fedgray.fl.clientapp.node_config import NodeConfigError, config_at_node
from fedgray.fl.clientapp.trusted import TRUSTED_CLIENTAPP, bundle_verdict
from fedgray.fl.common.partitions import load_partition, partition_indices
from fedgray.fl.run_config import resolve_config
from fedgray.launch.app_folder import write_app
from fedgray.launch.commands import (
    LaunchError,
    SuperLinkOptions,
    SuperNodeOptions,
    config_arg,
    finished_run,
    last_error,
    superlink_command,
    supernode_command,
    write_cli_config,
)
from fedgray.launch.processes import free_port
from fedgray.resolver import load_config

SMALL = ["data.train_size=60", "federation.num_sites=3", "federation.partitioner=iid"]


def test_missing_or_empty_data_folders_fail_in_one_line_naming_the_path(tmp_path: Path) -> None:
    config = load_config(None, SMALL)
    missing = tmp_path / "nowhere"
    with pytest.raises(NodeConfigError) as error:
        config_at_node(config, {"data-dir": str(missing)})
    assert str(error.value) == f"node-config data-dir: {missing}: no such directory"
    (tmp_path / "empty").mkdir()
    with pytest.raises(NodeConfigError, match=r"empty/train/captions.csv: not found$"):
        check_node_config({"data-dir": str(tmp_path / "empty")})


def test_written_partitions_are_the_simulated_ones_and_load_as_the_site(tmp_path: Path) -> None:
    config = load_config(None, SMALL)
    folders = write_partition_folders(config, 3, tmp_path)
    pool = load_dataset("world/sketch", split="train", size=60, seed=config.data.seed)
    total = 0
    for site, folder in enumerate(folders):
        share = partition_indices(config, partition_id=site, num_partitions=3)
        with (folder / "train" / "captions.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        expected = sorted([*share.train.tolist(), *share.heldout.tolist()])
        assert [r["caption"] for r in rows] == [pool.captions[i] for i in expected]
        total += len(rows)
        local = config_at_node(config, {"data-dir": str(folder)})
        assert local.data.dataset == f"folder:{folder}" and local.data.train_size == len(rows)
    assert total == 60


def test_site_config_names_the_sealed_backbone_and_refuses_a_missing_key(tmp_path: Path) -> None:
    config = load_config(None, SMALL)
    folder = write_partition_folders(config, 3, tmp_path)[0]
    files = {name: tmp_path / name for name in ("a.sealed", "v.pem", "c.key")}
    for path in files.values():
        path.write_text("x")
    node = {
        "data-dir": str(folder),
        "backbone-artifact": str(files["a.sealed"]),
        "verify-key": str(files["v.pem"]),
        "content-key": str(files["c.key"]),
    }
    local = config_at_node(config, node)
    assert (local.backbone.artifact, local.backbone.verify_key, local.backbone.content_key) == (
        str(files["a.sealed"]),
        str(files["v.pem"]),
        str(files["c.key"]),
    )
    with pytest.raises(NodeConfigError, match="node-config content-key: .*gone.key: not found"):
        config_at_node(config, {**node, "content-key": str(tmp_path / "gone.key")})


def test_a_site_on_a_served_runtime_names_its_socket_and_holds_no_key(tmp_path: Path) -> None:
    """``fedgray deploy supernode --runtime SOCKET``: the site's backbone is a runtime served
    under another OS user; its node config names the socket only. A site that would also
    hold the artifact or a key, or whose socket is not there, is refused in one line before
    anything starts."""
    from flwr.common.config import parse_config_args

    from fedgray.cli import build_parser
    from fedgray.deploy.cli import supernode_node_config

    config = load_config(None, SMALL)
    folder = write_partition_folders(config, 3, tmp_path)[0]
    path = tmp_path / "runtime.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        argv = ["deploy", "supernode", "--superlink", "127.0.0.1:9092", "--credentials", "c"]
        argv += ["--data", str(folder), "--site", "0", "--runtime", str(path)]
        node = parse_config_args(
            [config_arg(supernode_node_config(build_parser().parse_args(argv)))]
        )
        check_node_config(node)
        local = config_at_node(config, node)
        assert local.backbone.runtime == str(path)
        assert (local.backbone.artifact, local.backbone.content_key) == (None, None)
        key = tmp_path / "content.key"
        key.write_text("x")
        for check in (check_node_config, lambda n: config_at_node(config, n)):
            with pytest.raises(
                NodeConfigError,
                match="^node-config backbone-runtime: a served "
                "runtime replaces content-key: the site holds neither",
            ):
                check({**node, "content-key": str(key)})
    path.unlink()  # the runtime is gone
    with pytest.raises(NodeConfigError, match="runtime.sock: no runtime socket there"):
        check_node_config(node)
    (tmp_path / "file.sock").write_text("")
    with pytest.raises(NodeConfigError, match="file.sock: no runtime socket there"):
        config_at_node(config, {**node, "backbone-runtime": str(tmp_path / "file.sock")})


def test_a_deployed_site_reads_its_own_folder_as_its_whole_data(tmp_path: Path) -> None:
    config = load_config(None, [*SMALL, "backbone.name=fedgray-micro", "backbone.pretrained=null"])
    folder = write_partition_folders(config, 3, tmp_path)[1]
    local = config_at_node(config, {"data-dir": str(folder)})
    data = load_partition(local, partition_id=0, num_partitions=1)
    assert len(data.train) + len(data.heldout) == local.data.train_size == 20


def test_the_app_carries_the_whole_config_and_the_apps_read_it_back(tmp_path: Path) -> None:
    config = demo_config(
        load_config(
            "configs/private_secagg.yaml",
            ["federation.domains=[world/sketch, world/noisy]", "federation.partitioner=by_group"],
        ),
        3,
    )
    app = write_app(config, tmp_path / "app")
    declared = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert declared["components"]["clientapp"] == "fedgray.fl.clientapp.app:app"

    assert set(declared["config"]) == {"document", "overrides"}
    assert resolve_config(None, declared["config"]) == config
    assert config.federation.secure_aggregation.num_shares == 3


def test_flower_connection_and_node_config_are_written_as_flower_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.common.config import parse_config_args

    path = write_cli_config(tmp_path, "127.0.0.1:9092", tmp_path / "ca.crt")
    assert path == tmp_path / "config.toml"
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    connection = read_superlink_connection()
    assert connection.address == "127.0.0.1:9092"
    assert connection.root_certificates == str(tmp_path / "ca.crt")
    arg = config_arg({"partition-id": 2, "data-dir": "/data/a b", "backbone-isolated": True})
    assert parse_config_args([arg]) == {
        "partition-id": 2,
        "data-dir": "/data/a b",
        "backbone-isolated": True,
    }


def test_tls_and_node_authentication_unless_insecure_is_asked_for(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("ca.crt", "link.crt", "link.key", "node.key")}
    link = SuperLinkOptions("127.0.0.1", 9092, tmp_path, *list(files.values())[:3])
    secure = superlink_command(link)
    assert secure[secure.index("--ssl-certfile") + 1] == str(files["link.crt"])
    assert "--enable-supernode-auth" in secure and "--insecure" not in secure
    assert "--disable-runtime-dependency-installation" in secure
    insecure = superlink_command(dataclasses.replace(link, insecure=True))
    assert "--insecure" in insecure and "--enable-supernode-auth" not in insecure
    node = SuperNodeOptions("127.0.0.1:9092", files["ca.crt"], files["node.key"], {}, 9094)
    command = supernode_command(node)
    assert command[command.index("--root-certificates") + 1] == str(files["ca.crt"])
    assert command[command.index("--auth-supernode-private-key") + 1] == str(files["node.key"])
    assert "--insecure" in supernode_command(dataclasses.replace(node, insecure=True))
    assert "--isolation" not in secure and "--isolation" not in command
    secret = tmp_path / "superexec.secret"
    for isolated in (
        superlink_command(dataclasses.replace(link, superexec_secret=secret)),
        supernode_command(dataclasses.replace(node, superexec_secret=secret)),
    ):
        assert isolated[isolated.index("--isolation") + 1] == "process"
        assert isolated[isolated.index("--superexec-auth-secret-file") + 1] == str(secret)


def test_a_supernode_is_named_as_its_operator_says(tmp_path: Path) -> None:
    """``fedgray deploy supernode --name`` reaches the site's node config as ``site-name``,
    the name the server's warnings and ``failed_sites`` use; without it the site is site-N."""
    from flwr.common.config import parse_config_args

    from fedgray.cli import build_parser
    from fedgray.deploy.cli import supernode_node_config
    from fedgray.fl.clientapp.node_config import site_name

    base = ["deploy", "supernode", "--superlink", "127.0.0.1:9092", "--credentials", "c"]
    base += ["--data", str(tmp_path), "--site", "2"]
    for extra, name in (([], "site-2"), (["--name", "hospital b"], "hospital b")):
        args = build_parser().parse_args([*base, *extra])
        node_config = parse_config_args([config_arg(supernode_node_config(args))])
        assert site_name(node_config) == name
        assert node_config["data-dir"] == str(tmp_path.resolve())


def test_fedgray_runs_simulation_config_is_one_flower_accepts(tmp_path: Path) -> None:
    from flwr.cli.run.run import _parse_federation_config_overrides
    from flwr.cli.typing import SuperLinkConnection

    from fedgray.fl.simulation.engine import simulation_config

    config = load_config(None, ["federation.num_sites=5", "federation.actors=2"])
    parsed = _parse_federation_config_overrides(  # what flwr run does with the argument
        [config_arg(simulation_config(config.federation))],
        SuperLinkConnection(name="fedgray", address="127.0.0.1:1", insecure=True),
    )
    assert parsed is not None
    assert parsed.num_supernodes == 5 and parsed.client_resources_num_gpus == 0
    assert parsed.client_resources_num_cpus == max(1, (os.cpu_count() or 1) // 2)
    assert parsed.init_args_log_to_driver is False


def test_last_error_reads_the_flwr_clis_error_box_and_flowers_log_lines(tmp_path: Path) -> None:
    log = tmp_path / "flower.log"
    log.write_text(
        "Using SuperLink: fedgray (127.0.0.1:1)\n"
        "╭─ Error ─────────────╮\n"
        "│ Unknown simulation  │\n"
        "│ config field(s): x  │\n"
        "╰─────────────────────╯\n",
        encoding="utf-8",
    )
    assert last_error(log) == "Unknown simulation config field(s): x"
    log.write_text("INFO: fine\nERROR: the ServerApp failed\nINFO: done\n", encoding="utf-8")
    assert last_error(log) == "ERROR: the ServerApp failed"
    assert last_error(tmp_path / "none.log") == "no error logged"


def test_following_a_run_on_a_superlink_that_is_gone_fails_in_one_line(tmp_path: Path) -> None:
    """``flwr list --format json`` exits 0 with ``success: false`` when nothing answers;
    following a run then stops with Flower's reason instead of a KeyError."""
    home = tmp_path / "flwr"
    write_cli_config(home, f"127.0.0.1:{free_port()}", None)
    with pytest.raises(LaunchError) as gone:
        finished_run(home, 1)
    unavailable = "flwr list fedgray: Connection to the SuperLink is unavailable"
    assert str(gone.value).startswith(unavailable)


def test_a_site_trusts_only_a_bundle_naming_fedgrays_clientapp_and_carrying_no_code(
    tmp_path: Path,
) -> None:
    """The bundle ``fedgray deploy submit`` writes is trusted; one naming another
    ClientApp, carrying a Python file, or naming none is not, with the reason."""
    ours = write_app(load_config(None, []), tmp_path / "ours")
    assert bundle_verdict(ours) is None
    (ours / "fedgray").mkdir()
    (ours / "fedgray" / "__init__.py").write_text("", encoding="utf-8")
    assert bundle_verdict(ours) == ("it carries files that are not inert data: fedgray/__init__.py")
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text(
        '[tool.flwr.app.components]\nclientapp = "thief:client"\n', encoding="utf-8"
    )
    assert bundle_verdict(other) == (
        f"its ClientApp is 'thief:client', this site runs only '{TRUSTED_CLIENTAPP}'"
    )
    assert bundle_verdict(tmp_path) == "its pyproject.toml names no ClientApp (FileNotFoundError)"


def test_a_floor_option_with_an_unknown_key_is_one_line() -> None:
    from fedgray.deploy.cli import floor_node_config

    assert floor_node_config(["require-dp=true", "max-epsilon-run=8", "allowed-levels=gray"]) == {
        "require-dp": True,
        "max-epsilon-run": 8,
        "allowed-levels": "gray",
    }
    with pytest.raises(ValueError) as bad:
        floor_node_config(["max-epsilon=8"])
    assert str(bad.value).startswith("--floor max-epsilon=8: expected KEY=VALUE with KEY one of ")


def test_trial_data_writes_one_site_folder_each_that_a_supernode_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fedgray deploy trial-data`` writes N folders ``check_node_config`` accepts, the
    samples split among them; into a folder that is not empty it refuses in one line."""
    from fedgray.cli import main

    out = tmp_path / "sites"
    args = ["deploy", "trial-data", "--sites", "2", "--out", str(out)]
    main([*args, "--set", "data.train_size=30", "--set", "data.test_size=10"])
    lines = capsys.readouterr().out.splitlines()
    folders = [out / f"site-{k}" / "data" for k in range(2)]
    assert [line.split(": ")[0] for line in lines] == ["site 0", "site 1"]
    for folder in folders:
        check_node_config({"data-dir": str(folder)})
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"fedgray: error: --out: {out}: not empty; refusing to write into it"
    )

"""``fedgray deploy demo``: the three roles of a real deployment on one machine (loopback).

In one run folder: the owner seals the backbone (``owner/``), the operator creates the
credentials (``credentials/``) and starts a SuperLink with TLS and SuperNode authentication
(``superlink/``; behind a proxy passing on only the Fleet API when nginx is installed, as
``--public`` does), each site gets its partition as files and starts its SuperNode
(``sites/site-N/``), and the federation runs with ``flwr run`` (Flower's CLI config in
``superlink/flwr``). Results land in ``superlink/results``. Every process started here is
stopped when the demo ends, however it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.deploy.app_signing import sign_app
from fedgray.deploy.credentials import Credentials, create_credentials
from fedgray.deploy.fleet_proxy import ProxyError, nginx_executable
from fedgray.deploy.locks import try_lock
from fedgray.deploy.roles import SuperLink, SuperNode, start_superlink, start_supernode
from fedgray.deploy.trial_folders import OwnerFiles, seal_backbone, write_partition_folders
from fedgray.fl.clientapp.signed_runs import PUBLISHER_KEY
from fedgray.fl.serverapp.progress import PROGRESS, Follower
from fedgray.launch.app_folder import write_app
from fedgray.launch.commands import (
    CONNECTION,
    SuperLinkOptions,
    SuperNodeOptions,
    flower_env,
    flwr_run_to_end,
    last_error,
)
from fedgray.launch.commands import flower_executable as flower
from fedgray.launch.processes import Processes, free_port, supervised

Echo = Callable[[str], None]
HOST = "127.0.0.1"
RESULTS = "results"
MIN_SECAGG_SITES = 3  # SecAgg+ shares keys among >2 sites (num_shares > 2)
SITE_FLOOR: dict[str, str | int | float | bool] = {
    "require-dp": True,
    "max-epsilon-run": 10.0,
    "max-epsilon-total": 100.0,
}
"""The floor each demo site holds (:mod:`fedgray.fl.clientapp.floor`): DP-SGD on, epsilon at
most 10 per run and 100 over every run on its data (delta 1e-5)."""


@dataclass(frozen=True)
class DemoResult:
    """Where a demo's run folder and results are, and how long it took."""

    run_dir: Path
    results: Path
    seconds: float


def demo_config(config: Config, num_sites: int) -> Config:
    """``config`` for ``num_sites`` deployed sites: SecAgg+ shares fit the site count."""
    fed = config.federation
    secure = fed.secure_aggregation
    if secure.enabled:
        if num_sites < MIN_SECAGG_SITES:
            raise ConfigError(
                f"--sites: SecAgg+ needs at least {MIN_SECAGG_SITES} sites, got {num_sites} "
                "(or --set federation.secure_aggregation.enabled=false)"
            )
        shares = min(secure.num_shares, num_sites)
        threshold = min(secure.reconstruction_threshold, max(2, shares - 1))
        secure = dataclasses.replace(secure, num_shares=shares, reconstruction_threshold=threshold)
    return dataclasses.replace(
        config,
        federation=dataclasses.replace(fed, num_sites=num_sites, secure_aggregation=secure),
    )


def site_node_config(
    site: int, data_dir: Path, owner: OwnerFiles, *, publisher: Path | None = None
) -> dict[str, str | int | float | bool]:
    """What site ``site`` names locally: its number, data folder, sealed backbone, the
    folder for its own durable state (personal adapters, privacy ledger) next to its data,
    its privacy floor (:data:`SITE_FLOOR`) and, if given, the publisher whose signed runs
    alone it runs."""
    pin: dict[str, str | int | float | bool] = {PUBLISHER_KEY: str(publisher)} if publisher else {}
    return {
        **pin,
        **SITE_FLOOR,
        "partition-id": site,
        "data-dir": str(data_dir),
        "state-dir": str(data_dir.parent / "state"),
        "backbone-artifact": str(owner.artifact),
        "verify-key": str(owner.verify_key),
        "content-key": str(owner.content_key),
    }


def start_federation(
    processes: Processes,
    run_dir: Path,
    credentials: Credentials,
    data_dirs: list[Path],
    owner: OwnerFiles,
    *,
    echo: Echo,
    public: bool = False,
    signed: bool = False,
) -> tuple[SuperLink, list[SuperNode]]:
    """Start the SuperLink (registering every site) and one SuperNode per data folder;
    with ``public``, the SuperNodes dial a Fleet-only nginx proxy in front of it (as
    ``fedgray deploy superlink --public`` does); with ``signed``, each site runs only runs
    signed with the credentials' publisher key."""
    options = SuperLinkOptions(
        host=HOST,
        port=free_port(HOST),
        run_dir=run_dir / "superlink",
        ca_cert=credentials.superlink_ca_cert,
        cert=credentials.superlink_cert,
        key=credentials.superlink_key,
        public=(HOST, free_port(HOST)) if public else None,
    )
    link = start_superlink(processes, options, credentials, echo=echo)
    dial = f"{HOST}:{options.public[1]}" if options.public else options.address
    nodes = []
    for site, data_dir in zip(credentials.sites, data_dirs, strict=True):
        number = int(site.name.rsplit("-", 1)[1])
        node = SuperNodeOptions(
            superlink=dial,
            root_cert=site.ca_cert,
            private_key=site.private_key,
            node_config=site_node_config(
                number, data_dir, owner, publisher=site.publisher if signed else None
            ),
            port=free_port(HOST),
        )
        nodes.append(start_supernode(processes, node, site_dir=data_dir.parent, echo=echo))
    return link, nodes


def submission(
    run_dir: Path, config: Config, *, name: str = RESULTS, sign_key: Path | None = None
) -> tuple[list[str], Path]:
    """``flwr run`` of the fedgray app with ``config`` on the SuperLink whose operator folder
    is ``run_dir`` (its ``flwr`` CLI home is ``run_dir/flwr``), and the results folder it
    writes: ``run_dir/name`` (resumed if it holds a checkpoint). ``sign_key``: the
    publisher's key that signs the run config."""
    results = run_dir / name
    config = dataclasses.replace(
        config, output=dataclasses.replace(config.output, root=str(results.parent), name=name)
    )
    app = write_app(config, run_dir / "app" / name)
    if sign_key is not None:
        sign_app(app, sign_key)
    return [flower("flwr"), "run", str(app), CONNECTION, "--stream"], results


@contextlib.contextmanager
def claimed_results(run_dir: Path, name: str) -> Iterator[str]:
    """A results name in ``run_dir`` held for the block: ``name`` itself unless another
    submission is running under it or its run finished (``summary.json``), then ``name-2``,
    ``name-3``, ...; so two runs never share a folder, and a run stopped before its end
    (a checkpoint, no summary) is resumed under its own name. The claim is a lock file in
    ``run_dir/app`` that ends with the submitting process."""
    for number in itertools.count(1):
        candidate = name if number == 1 else f"{name}-{number}"
        fd = try_lock(run_dir / "app" / f"{candidate}.lock")
        if fd is None:
            continue
        if (run_dir / candidate / "summary.json").is_file():
            os.close(fd)
            continue
        try:
            yield candidate
        finally:
            os.close(fd)
        return


def flwr_run(
    processes: Processes,
    run_dir: Path,
    config: Config,
    *,
    echo: Echo,
    timeout: float,
    name: str = RESULTS,
    sign_key: Path | None = None,
) -> Path:
    """Submit the fedgray app with ``config`` (see :func:`submission`) and follow it to its
    end, echoing the lines the ServerApp writes to the results' ``progress.log`` (Flower's
    stream goes to ``run_dir/flwr-run-NAME.log``); the results folder (``name``, or the
    next free one: :func:`claimed_results`), or one line with the run's error."""
    with claimed_results(run_dir, name) as name:
        args, results = submission(run_dir, config, name=name, sign_key=sign_key)
        log = run_dir / f"flwr-run-{name}.log"
        env = flower_env(run_dir / "flwr")
        with Follower(results / PROGRESS, echo) as follower:
            status = flwr_run_to_end(processes, args, log_file=log, env=env, timeout=timeout)
    if follower.error is not None:
        raise RuntimeError(f"the run failed: {follower.error} (see {log})")
    if status["status"] != "finished:completed" or not (results / "summary.json").is_file():
        raise RuntimeError(
            f"flwr run: the run ended {status['status']}, no summary: {last_error(log)} (see {log})"
        )
    return results


def fleet_proxy_available(echo: Echo) -> bool:
    """Whether nginx can front the demo's SuperLink (Fleet API only, as ``--public``); one
    line saying what the demo does without it."""
    try:
        nginx_executable()
    except ProxyError:
        echo(
            "no nginx (Debian/Ubuntu: apt-get install nginx-light): the SuperNodes dial the "
            f"SuperLink's own port on {HOST}, which also serves its Control API"
        )
        return False
    return True


def run_demo(
    config: Config,
    *,
    num_sites: int,
    run_dir: Path,
    echo: Echo = print,
    timeout: float = 1800.0,
    progress: bool = True,
) -> DemoResult:
    """The whole demo in ``run_dir`` (see the module docstring); ``progress`` shows a bar
    while the owner pretrains."""
    start = time.monotonic()
    config = demo_config(config, num_sites)
    run_dir.mkdir(parents=True, exist_ok=False)
    echo(f"run folder: {run_dir}")
    echo(f"owner: sealing {config.backbone.name} (pretrained first if not cached)")
    owner = seal_backbone(config, run_dir / "owner", progress=progress)
    echo(f"owner: sealed {owner.artifact.name}")
    data_dirs = write_partition_folders(config, num_sites, run_dir / "sites")
    echo(f"sites: {num_sites} data folders under {run_dir / 'sites'}")
    credentials = create_credentials(run_dir / "credentials", num_sites)
    public = fleet_proxy_available(echo)
    with supervised() as processes:
        link, _ = start_federation(
            processes, run_dir, credentials, data_dirs, owner, echo=echo, public=public, signed=True
        )
        results = flwr_run(
            processes,
            link.options.run_dir,
            config,
            echo=echo,
            timeout=timeout,
            sign_key=credentials.publisher_key,
        )
    return DemoResult(run_dir, results, time.monotonic() - start)

"""``fedgray deploy``: credentials, a SuperLink, a SuperNode, and the one-machine demo."""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedgray.deploy.credentials import create_credentials, read_credentials
from fedgray.launch.commands import SuperLinkOptions, SuperNodeOptions
from fedgray.launch.processes import free_port, supervised
from fedgray.resolver import load_config

DEFAULT_PORT = 9092
DEMO_DEFAULTS = [
    "data.train_size=600",
    "data.validation_size=200",
    "data.test_size=200",
    "train.batch_size=32",
    "train.threads=1",
    "federation.num_rounds=2",
    "federation.local_steps=5",
    "privacy.enabled=true",
    "privacy.target_epsilon=8.0",
    "privacy.delta=1.0e-5",
    "federation.secure_aggregation.enabled=true",
]
"""The demo's settings under the user's: small, with DP-SGD and SecAgg+ (as
configs/private_secagg.yaml, fewer samples, rounds and steps)."""


Handler = Callable[[argparse.Namespace], None]


def _one_line(handler: Handler) -> Handler:
    """``handler`` with deployment failures (a Flower process that exits, a timeout) and
    Ctrl-C reported in one line; by then every process it started has been stopped."""

    def run(args: argparse.Namespace) -> None:
        _line_buffered()
        try:
            handler(args)
        except KeyboardInterrupt:
            print("fedgray: interrupted; every process it started is stopped", file=sys.stderr)
            raise SystemExit(130) from None
        except (RuntimeError, TimeoutError, OSError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            print(f"fedgray: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    return run


def _wait(process: Any, what: str, log: Path) -> None:
    """Block until ``process`` exits (Ctrl-C stops it); one line if it failed."""
    status = process.wait()
    if status != 0:
        raise RuntimeError(f"{what} exited with status {status} (see {log})")


def _line_buffered() -> None:
    """Long-running commands: each line reaches a log file or pipe as it is printed."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)


def _cmd_credentials(args: argparse.Namespace) -> None:
    files = create_credentials(args.out, args.sites, hosts=tuple(args.host))
    print(f"CA (keep offline):      {files.ca_key}")
    print(f"SuperLink's files:      {files.superlink_cert.parent}")
    print(f"publisher (signs runs): {files.publisher_key}")
    for site in files.sites:
        print(f"{site.name + ':':<23} {site.private_key.parent}")


def _host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` as a pair; one line naming the option otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--public: expected HOST:PORT, got {value!r}")
    return host, int(port)


def _cmd_superlink(args: argparse.Namespace) -> None:
    from fedgray.deploy.roles import start_superlink

    credentials = None if args.insecure else read_credentials(args.credentials)
    run_dir = Path(args.run_dir).resolve()
    options = SuperLinkOptions(
        host=args.host,
        port=args.port,
        run_dir=run_dir,
        ca_cert=credentials.superlink_ca_cert if credentials else None,
        cert=credentials.superlink_cert if credentials else None,
        key=credentials.superlink_key if credentials else None,
        insecure=args.insecure,
        public=_host_port(args.public) if args.public else None,
    )
    restart = (run_dir / "superlink.db").is_file()  # its registrations are kept there
    with supervised() as processes:
        link = start_superlink(processes, options, credentials, register=not restart)
        if restart:
            print(f"restarted on {run_dir / 'superlink.db'}: sites registered before stay so")
        print(
            f"submit a run: fedgray deploy submit CONFIG.yaml --run-dir {run_dir}; follow "
            f"it with FLWR_HOME={link.flwr_home} flwr list|log|stop; Ctrl-C stops the SuperLink"
        )
        _wait(link.process, "flower-superlink", run_dir / "superlink.log")


def supernode_node_config(args: argparse.Namespace) -> dict[str, str | int | float | bool]:
    """The SuperNode's ``--node-config`` from ``fedgray deploy supernode``'s options: the
    site's number, data folder, sealed backbone, state folder and (``--name``) the name the
    server's log and metrics give it."""
    from fedgray.fl.clientapp.node_config import SITE_NAME
    from fedgray.fl.clientapp.signed_runs import PUBLISHER_KEY

    node_config: dict[str, str | int | float | bool] = {
        "partition-id": args.site,
        "data-dir": str(Path(args.data).resolve()),
    }
    if args.name:
        node_config[SITE_NAME] = args.name
    for flag, key in (
        ("artifact", "backbone-artifact"),
        ("verify_key", "verify-key"),
        ("content_key", "content-key"),
    ):
        if getattr(args, flag):
            node_config[key] = str(Path(getattr(args, flag)).resolve())
    if args.isolated:
        node_config["backbone-isolated"] = True
    if args.runtime:
        node_config["backbone-runtime"] = str(Path(args.runtime).expanduser().absolute())
    if args.state_dir:
        node_config["state-dir"] = str(Path(args.state_dir).resolve())
    if args.publisher_key:
        node_config[PUBLISHER_KEY] = str(Path(args.publisher_key).resolve())
    node_config.update(floor_node_config(args.floor))
    return node_config


def floor_node_config(pairs: list[str]) -> dict[str, str | int | float | bool]:
    """``--floor KEY=VALUE`` options as node-config entries (values read as TOML scalars);
    one line naming an unknown key or a malformed pair."""
    import tomllib

    from fedgray.fl.clientapp.floor import FLOOR_KEYS

    entries: dict[str, str | int | float | bool] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in FLOOR_KEYS:
            raise ValueError(
                f"--floor {pair}: expected KEY=VALUE with KEY one of {', '.join(FLOOR_KEYS)}"
            )
        try:
            entries[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            entries[key] = raw  # a bare word: a comma-separated list of names
    return entries


def _cmd_supernode(args: argparse.Namespace) -> None:
    from fedgray.deploy.roles import start_supernode

    site_dir = Path(args.credentials).resolve()
    node_config = supernode_node_config(args)
    options = SuperNodeOptions(
        superlink=args.superlink,
        root_cert=None if args.insecure else site_dir / "ca.crt",
        private_key=None if args.insecure else site_dir / "node.key",
        node_config=node_config,
        port=args.port or free_port(),
        insecure=args.insecure,
    )
    if not args.insecure:
        for path in (options.root_cert, options.private_key):
            assert path is not None
            if not path.is_file():
                raise FileNotFoundError(f"--credentials: {path}: not found")
    run_dir = Path(args.run_dir).resolve()
    with supervised() as processes:
        node = start_supernode(processes, options, site_dir=run_dir)
        if node.process.wait() != 0:
            raise RuntimeError(node.exit_reason())


def _cmd_submit(args: argparse.Namespace) -> None:
    from fedgray.deploy.demo import flwr_run

    run_dir = Path(args.run_dir).resolve()
    if not (run_dir / "flwr" / "config.toml").is_file():
        raise FileNotFoundError(f"{run_dir / 'flwr' / 'config.toml'}: start the SuperLink first")
    config = load_config(args.config, args.overrides)
    with supervised() as processes:
        results = flwr_run(
            processes,
            run_dir,
            config,
            echo=print,
            timeout=args.timeout,
            name=args.name,
            sign_key=Path(args.sign_key) if args.sign_key else None,
        )
    print(f"results (metrics, epsilon ledgers, checkpoint, adapters): {results}")


def _cmd_trial_data(args: argparse.Namespace) -> None:
    from fedgray.deploy.trial_folders import write_partition_folders
    from fedgray.fl.clientapp.node_config import check_data_dir

    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out: {out}: not empty; refusing to write into it")
    config = load_config(args.config, args.overrides)
    for site, folder in enumerate(write_partition_folders(config, args.sites, out)):
        print(f"site {site}: {folder} ({check_data_dir(folder)} samples): --data {folder}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from fedgray.deploy.demo import run_demo

    config = load_config(args.config, [*DEMO_DEFAULTS, *args.overrides])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out).resolve() / f"deploy-{stamp}"
    result = run_demo(
        config,
        num_sites=args.sites,
        run_dir=run_dir,
        timeout=args.timeout,
        progress=not args.quiet,
    )
    print(f"demo finished in {result.seconds:.0f} s; every process it started is stopped")
    print(f"results (metrics, epsilon ledgers, checkpoint, adapters): {result.results}")


def _credentials_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "credentials",
        help="create a CA, the SuperLink's TLS certificate and a key pair per site",
        description="Create the federation's credentials in DIR: a CA, a SuperLink "
        "certificate for 127.0.0.1, localhost and each --host, a P-384 node key pair per "
        "site (OpenSSH format, as Flower reads them) and the publisher's Ed25519 key pair "
        "that signs run configs. Never overwrites a file.",
    )
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--sites", type=int, required=True, metavar="N")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="another name or IP address SuperNodes dial the SuperLink by (repeatable)",
    )
    parser.set_defaults(handler=_one_line(_cmd_credentials))


def _superlink_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "superlink",
        help="start the SuperLink with TLS and SuperNode authentication",
        description="Start flower-superlink with TLS and --enable-supernode-auth, register "
        "every site's public key with flwr supernode register, and write the flwr CLI's "
        "connection into RUN_DIR/flwr. Runs until Ctrl-C.",
    )
    parser.add_argument("--credentials", metavar="DIR", help="what deploy credentials wrote")
    parser.add_argument("--run-dir", required=True, metavar="DIR", help="state, logs, results")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--public",
        metavar="HOST:PORT",
        help="the address SuperNodes dial, served by nginx passing on only the Fleet API "
        "(the SuperLink, its Control and runtime APIs stay on --host 127.0.0.1)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="no TLS, no node authentication (warned)"
    )
    parser.set_defaults(handler=_one_line(_cmd_superlink))


def _supernode_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "supernode",
        help="start a site's SuperNode on its own data and sealed backbone",
        description="Start flower-supernode: TLS verified with the federation's CA, "
        "authenticated with the site's key, the data folder and sealed backbone named in "
        "--node-config. The data never leaves DATA. Runs until Ctrl-C.",
    )
    parser.add_argument("--superlink", required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--credentials", required=True, metavar="DIR", help="the site's ca.crt and node.key"
    )
    parser.add_argument(
        "--data", required=True, metavar="DIR", help="folder dataset: train/captions.csv"
    )
    parser.add_argument("--site", type=int, required=True, metavar="N", help="the site's number")
    parser.add_argument(
        "--name", metavar="NAME", help="how the server names the site (default: site-N)"
    )
    parser.add_argument("--artifact", metavar="FILE", help="the sealed backbone")
    parser.add_argument("--verify-key", metavar="FILE", help="the owner's verification key")
    parser.add_argument("--content-key", metavar="FILE", help="the backbone's content key")
    parser.add_argument("--isolated", action="store_true", help="backbone in its own process")
    parser.add_argument(
        "--runtime",
        metavar="SOCKET",
        help="a backbone served by `fedgray runtime serve` under another OS user, instead of "
        "--artifact and its keys: the site never holds the content key",
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", help="where the site keeps its personal adapters"
    )
    parser.add_argument(
        "--floor",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the site's own privacy floor, whatever a run asks (repeatable; e.g. "
        "require-dp=true max-epsilon-run=8 max-epsilon-total=16; see docs/deployment.md)",
    )
    parser.add_argument(
        "--publisher-key",
        metavar="FILE",
        help="run only runs whose config this publisher signed (its public key, PEM: "
        "credentials' sites/site-N/publisher.pem)",
    )
    parser.add_argument("--run-dir", default=".", metavar="DIR", help="log and Flower home")
    parser.add_argument("--port", type=int, help="loopback port for its ClientApps (free one)")
    parser.add_argument("--insecure", action="store_true", help="no TLS (warned)")
    parser.set_defaults(handler=_one_line(_cmd_supernode))


def _submit_parser(commands: Any, config_arguments: Callable[..., None]) -> None:
    parser = commands.add_parser(
        "submit",
        help="run the federation: the fedgray app with a YAML config, by flwr run",
        description="Write an app folder whose run config is the whole resolved CONFIG "
        "(the YAML fedgray run reads, plus --set overrides) and submit it with flwr run "
        "to the SuperLink started with the same --run-dir; follow its log to the end. "
        "Results land in RUN_DIR/NAME; a NAME whose run stopped before its end (a "
        "checkpoint, no summary) is resumed.",
    )
    config_arguments(parser, required=True)
    parser.add_argument("--run-dir", required=True, metavar="DIR", help="the SuperLink's")
    parser.add_argument(
        "--name",
        default="results",
        help="results folder in RUN_DIR (the next free NAME-2, ... if a run holds it or "
        "finished in it)",
    )
    parser.add_argument(
        "--sign-key",
        metavar="FILE",
        help="sign the run config with the publisher's key (credentials' "
        "publisher/publisher.key), for sites that pin its public key",
    )
    parser.add_argument("--timeout", type=float, default=24 * 3600.0, help="seconds")
    parser.set_defaults(handler=_one_line(_cmd_submit))


def _trial_data_parser(commands: Any, config_arguments: Callable[..., None]) -> None:
    parser = commands.add_parser(
        "trial-data",
        help="write each site's partition of the built-in benchmark as a data folder",
        description="Write N data folders (OUT/site-K/data: train/captions.csv and its "
        "images), each site's partition of CONFIG's built-in dataset, ready for "
        "fedgray deploy supernode --data. OUT must be new or empty.",
    )
    config_arguments(parser, required=False)
    parser.add_argument("--sites", type=int, required=True, metavar="N")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.set_defaults(handler=_one_line(_cmd_trial_data))


def _demo_parser(commands: Any, config_arguments: Callable[..., None]) -> None:
    parser = commands.add_parser(
        "demo",
        help="a whole deployment on 127.0.0.1: SuperLink, N SuperNodes, DP-SGD, SecAgg+",
        description="Seal the backbone, write each site's benchmark partition as files, "
        "create credentials, start a SuperLink and N SuperNodes on 127.0.0.1 with TLS and "
        "node authentication, run the federation with flwr run (DP-SGD and SecAgg+), print "
        "where the results are and stop every process, also on Ctrl-C or failure.",
    )
    config_arguments(parser, required=False)
    parser.add_argument("--sites", type=int, default=3, metavar="N")
    parser.add_argument("--out", default="runs", metavar="DIR", help="parent of the run folder")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for flwr run")
    parser.set_defaults(handler=_one_line(_cmd_demo))


def add_deploy_parser(commands: Any, config_arguments: Callable[..., None]) -> None:
    """Add ``deploy`` and its six subcommands to the ``fedgray`` command's subparsers."""
    deploy = commands.add_parser(
        "deploy",
        help="multi-site deployment on Flower's deployment engine (see docs/deployment.md)",
        description="Run fedgray as hospitals would: a SuperLink, one SuperNode per site, TLS "
        "and SuperNode authentication, the app submitted with flwr run.",
    )
    roles = deploy.add_subparsers(dest="deploy_command", required=True, metavar="ROLE")
    _credentials_parser(roles)
    _superlink_parser(roles)
    _supernode_parser(roles)
    _submit_parser(roles, config_arguments)
    _trial_data_parser(roles, config_arguments)
    _demo_parser(roles, config_arguments)

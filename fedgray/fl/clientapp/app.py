"""The fedgray ClientApp (Flower Message API).

The train handler's pipeline follows the resolved config of each message: in the clear,
the Message-API handler (with ``fixedclipping_mod`` under central DP); under
``federation.secure_aggregation``, the legacy-Fit handler behind SecAgg+'s mods (see
:mod:`fedgray.fl.clientapp.secagg`). Evaluation is the same in both. Every reply names the
site, and a ``query`` is answered with the name alone (see
:mod:`fedgray.fl.common.site_names`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import make_ffn
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from fedgray.backbone.budget import spent_by
from fedgray.config import Config
from fedgray.fl.clientapp.client import Client
from fedgray.fl.clientapp.floor import Floor
from fedgray.fl.clientapp.node_config import STATE_DIR, config_at_node, is_deployed, site_name
from fedgray.fl.clientapp.secagg import legacy_train, secure_train_mods
from fedgray.fl.common.central import clipping_mods
from fedgray.fl.common.packing import packed_mod
from fedgray.fl.common.private import refusal_mod
from fedgray.fl.common.site_names import SITE_RECORD, identity_reply, name_record
from fedgray.fl.run_config import resolve_config


def _client(config: Config, context: Context) -> Client:
    """This node's site: a simulated partition, or (with ``data-dir`` in the node config)
    a deployed site's own data and backbone (see :mod:`fedgray.fl.clientapp.node_config`)."""
    if is_deployed(context.node_config):
        local = config_at_node(config, context.node_config)
        partition_id = int(context.node_config.get("partition-id", 0))
        data = Client.open(local, partition_id=0, num_partitions=1).data
        state_dir = context.node_config.get(STATE_DIR)
        folder = Path(str(state_dir)) if state_dir else None
        return Client(
            local, partition_id, data, folder, Floor.from_node_config(context.node_config)
        )
    return Client.open(
        config,
        partition_id=int(context.node_config["partition-id"]),
        num_partitions=int(context.node_config["num-partitions"]),
    )


def _train_pipeline(config: Config) -> ClientAppCallable:
    """The train handler and its mods for ``config``."""

    def train(
        arrays: ArrayRecord, settings: ConfigRecord, context: Context
    ) -> tuple[ArrayRecord, dict[str, float], RecordDict]:
        return _client(config, context).train(
            arrays,
            context.state,
            server_round=int(cast(int, settings["server-round"])),
            proximal_mu=float(cast(float, settings.get("proximal-mu", 0.0))),
            settings=settings,
            run_id=context.run_id,
        )

    if config.federation.secure_aggregation.enabled:
        return make_ffn(legacy_train(train), secure_train_mods(config.privacy.central))

    def handle(msg: Message, context: Context) -> Message:
        arrays, metrics, records = train(
            cast(ArrayRecord, msg.content["arrays"]),  # as the strategy's configure_train sends
            cast(ConfigRecord, msg.content["config"]),
            context,
        )
        # dict(): MetricRecord takes a dict[str, MetricRecordValues] (it may empty its input)
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord(dict(metrics)), **records})
        content[SITE_RECORD] = name_record(site_name(context.node_config))
        return Message(content, reply_to=msg)

    return make_ffn(handle, [refusal_mod, *clipping_mods(config.privacy.central, legacy=False)])


def quiet_flower_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Keep Flower to warnings in this (site) process, as ``fedgray run`` does in its own:
    SecAgg+'s and the DP mods' per-message lines would also be echoed by the root handler
    that Opacus installs on import."""
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.WARNING)
    flower.propagate = False
    return call_next(msg, context)


def own_budget_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A simulated site spends a backbone budget of its own (``backbone.sample_budget`` and
    the others), as a deployed site does with its own backbone: the process that simulates
    it (the in-process grid, a Ray actor) shares one backbone among many sites."""
    if is_deployed(context.node_config):
        return call_next(msg, context)
    with spent_by(("partition", int(context.node_config["partition-id"]))):
        return call_next(msg, context)


def make_client_app(config: Config | None = None, *, quiet: bool = False) -> ClientApp:
    """A ClientApp for ``config`` (defaults when None), overridden by ``context.run_config``.

    The closure holds only the (small) config: the backbone and data come from per-process
    caches, so they are not shipped with every message. ``quiet``: see
    :func:`quiet_flower_mod` (for site processes of their own, such as Ray's actors). Every
    simulated site spends its own backbone budget (:func:`own_budget_mod`); every message's
    arrays arrive packed and every reply's leave packed (:mod:`fedgray.fl.common.packing`).
    """
    app = ClientApp(mods=[*([quiet_flower_mod] if quiet else []), own_budget_mod, packed_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _train_pipeline(resolve_config(config, context.run_config))(msg, context)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        site = _client(resolve_config(config, context.run_config), context)
        server_round = (
            cast(ConfigRecord, msg.content["config"]).get("server-round")
            if "config" in msg.content
            else None
        )
        metrics = site.evaluate(
            cast(ArrayRecord, msg.content["arrays"]),  # as the strategy's configure_evaluate sends
            context.state,
            server_round=int(cast(int, server_round)) if server_round is not None else None,
        )
        content = RecordDict({"metrics": MetricRecord(dict(metrics))})
        content[SITE_RECORD] = name_record(site_name(context.node_config))
        return Message(content, reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """The site's name only: no data, backbone or config is loaded."""
        return identity_reply(site_name(context.node_config), msg)

    return app


app = make_client_app()

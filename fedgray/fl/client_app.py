"""The fedgray ClientApp (Flower Message API)."""

from __future__ import annotations

from logging import WARNING

from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import log

from fedgray.config import Config
from fedgray.fl.client import Site
from fedgray.fl.private import BUDGET_EXHAUSTED, BudgetExhausted
from fedgray.fl.run_config import resolve_config


def _site(config: Config | None, context: Context) -> Site:
    return Site.open(
        resolve_config(config, context.run_config),
        partition_id=int(context.node_config["partition-id"]),
        num_partitions=int(context.node_config["num-partitions"]),
    )


def make_client_app(config: Config | None = None) -> ClientApp:
    """A ClientApp for ``config`` (defaults when None), overridden by ``context.run_config``.

    The closure holds only the (small) config: the backbone and data come from per-process
    caches, so they are not shipped with every message.
    """
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        site = _site(config, context)
        settings = msg.content["config"]
        try:
            arrays, metrics, records = site.train(
                msg.content["arrays"],
                context.state,
                server_round=int(settings["server-round"]),
                proximal_mu=float(settings.get("proximal-mu", 0.0)),
                settings=settings,
            )
        except BudgetExhausted as refusal:
            log(WARNING, str(refusal))
            return Message(Error(code=BUDGET_EXHAUSTED, reason=str(refusal)), reply_to=msg)
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics), **records})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        metrics = _site(config, context).evaluate(msg.content["arrays"], context.state)
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


app = make_client_app()

"""The site's side of SecAgg+: the train handler on Flower's legacy Fit messages, and mods.

SecAgg+ (``SecAggPlusWorkflow`` / ``secaggplus_mod``) exists only on Flower's legacy
Fit messages: ``fitins.*`` in, ``fitres.*`` out, arrays as an unnamed list and config and
metrics as scalars. :func:`legacy_train` speaks that format around the same
:meth:`~fedgray.fl.clientapp.client.Client.train` as the Message-API handler: the adapter names and
fedgray's settings (ledger copies) come as JSON strings in the Fit config, the site's
ledger goes back as a JSON string in the Fit metrics, next to the site's name (public
metadata; SecAgg+ masks only the arrays).

The train handler's mods, outermost first: ``refusal_mod`` (budget refusals become error
replies), ``secaggplus_mod`` (the four protocol stages; it calls inward only to collect the
masked vector), :func:`delta_mod` (send new minus global adapters, which stay well inside
SecAgg+'s ``±clipping_range``), then, under central DP, Flower's legacy ``fixedclipping_mod``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from fedgray.config import CentralPrivacyConfig
from fedgray.fl.clientapp.node_config import site_name
from fedgray.fl.common.central import clipping_mods
from fedgray.fl.common.fit_messages import ADAPTER_KEYS, SERVER_ROUND, SETTINGS
from fedgray.fl.common.flower_internals import recorddict_compat as compat
from fedgray.fl.common.private import LEDGER, refusal_mod
from fedgray.fl.common.site_names import FIT_NAME

SiteTrain = Callable[
    [ArrayRecord, ConfigRecord, Context], tuple[ArrayRecord, dict[str, float], RecordDict]
]


def delta_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Send ``new - global`` instead of the new adapters (the server adds the global back)."""
    sent = parameters_to_ndarrays(compat.recorddict_to_fitins(msg.content, True).parameters)
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    fitres = compat.recorddict_to_fitres(reply.content, True)
    new = parameters_to_ndarrays(fitres.parameters)
    fitres.parameters = ndarrays_to_parameters(
        [np.subtract(n, s, dtype=n.dtype) for n, s in zip(new, sent, strict=True)]
    )
    reply.content = compat.fitres_to_recorddict(fitres, True)
    return reply


def legacy_train(train: SiteTrain) -> ClientAppCallable:
    """A handler for legacy Fit messages around ``train(arrays, settings, context)``."""

    def handle(msg: Message, context: Context) -> Message:
        fitins = compat.recorddict_to_fitins(msg.content, True)
        keys = json.loads(str(fitins.config[ADAPTER_KEYS]))
        sent = parameters_to_ndarrays(fitins.parameters)
        arrays = ArrayRecord({k: Array(a) for k, a in zip(keys, sent, strict=True)})
        settings = ConfigRecord(json.loads(str(fitins.config[SETTINGS])))
        settings[SERVER_ROUND] = int(fitins.config[SERVER_ROUND])
        new, metrics, records = train(arrays, settings, context)
        scalars: dict[str, bool | bytes | float | int | str] = dict(metrics)
        if LEDGER in records:
            scalars[LEDGER] = json.dumps(dict(records[LEDGER]))
        scalars[FIT_NAME] = site_name(context.node_config)
        fitres = FitRes(
            Status(Code.OK, "trained"),
            ndarrays_to_parameters([new[k].numpy() for k in keys]),
            int(metrics["num-examples"]),
            scalars,
        )
        return Message(compat.fitres_to_recorddict(fitres, True), reply_to=msg)

    return handle


def secure_train_mods(central: CentralPrivacyConfig) -> list[Mod]:
    """The train handler's mods under secure aggregation, outermost first."""
    return [refusal_mod, secaggplus_mod, delta_mod, *clipping_mods(central, legacy=True)]

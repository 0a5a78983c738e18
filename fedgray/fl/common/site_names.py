"""How a site tells the server who it is: its name, public, in every reply.

Flower knows a site only by its node id, which a simulation draws at random each run and a
deployment assigns at registration; operators know a site by its name. Each site puts its
name (``site-name`` in a deployed node's config, else ``site-<partition-id>``) in a small
ConfigRecord of its train and evaluate replies (:data:`SITE_RECORD`), in its legacy Fit
metrics under SecAgg+ (:data:`FIT_NAME`), and answers a ``query`` message with it alone
(:data:`QUERY`), which the server sends once to every node it has not heard from yet. The
name is public metadata, like the node id: it carries nothing of the site's data.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Message, RecordDict

SITE_RECORD = "site"  # reply content: ConfigRecord {"name": ...}
NAME = "name"
FIT_NAME = "fedgray-site-name"  # legacy Fit metrics (SecAgg+): the name as a string metric
QUERY = "query"  # Flower's message type of the server's "who are you?"


def name_record(name: str) -> ConfigRecord:
    """The record a site adds to its replies."""
    return ConfigRecord({NAME: name})


def identity_reply(name: str, msg: Message) -> Message:
    """A site's answer to the server's :data:`QUERY`."""
    return Message(RecordDict({SITE_RECORD: name_record(name)}), reply_to=msg)


def name_in(reply: Message) -> str | None:
    """The site name a (non-error) reply carries, or None (an older site, an error)."""
    if reply.has_error():
        return None
    content = reply.content
    if SITE_RECORD in content.config_records:
        name = content.config_records[SITE_RECORD].get(NAME)
        return str(name) if name is not None else None
    return None

"""The Faust app of the sink worker: Centrifugo publishing and the audit archive.

`activity worker sinks` runs it. Its two agents, in `publishing` and
`archiving`, consume the deliveries and audit topics in one consumer group.
"""

from __future__ import annotations

from activity_schemas.topics import AUDIT_TOPIC, DELIVERIES_TOPIC, RECEIPTS_TOPIC
from activity_streams.app import create_app
from activity_streams.observability import install_web_endpoints

from activity_sinks.settings import SinkSettings

__all__ = ["app", "audit_topic", "deliveries_topic", "receipts_topic", "settings"]

settings = SinkSettings()
app = create_app("activity-sinks", settings, settings.sink_web_port)
install_web_endpoints(app)

deliveries_topic = app.topic(settings.topic(DELIVERIES_TOPIC), partitions=settings.topic_partitions)
audit_topic = app.topic(settings.topic(AUDIT_TOPIC), partitions=settings.topic_partitions)
receipts_topic = app.topic(settings.topic(RECEIPTS_TOPIC), partitions=settings.topic_partitions)

# Register the agents on `app`; imported last because they need the topics above.
from activity_sinks import archiving, publishing  # noqa: E402, F401

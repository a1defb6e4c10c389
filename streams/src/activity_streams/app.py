"""The Faust app of the enrichment worker and the topic its agent reads.

`activity worker enrichment` runs it; `faust -A activity_streams.app worker`
does too. Settings come from `ACTIVITY_*` environment variables.
"""

from __future__ import annotations

from pathlib import Path

import faust
from activity_schemas.topics import EVENTS_TOPIC

from activity_streams.observability import install_web_endpoints
from activity_streams.settings import StreamsSettings
from activity_streams.transport import Transport

__all__ = ["app", "create_app", "events_topic", "settings"]


def create_app(app_id: str, settings: StreamsSettings, web_port: int) -> faust.App:
    """Return a Faust app with raw keys and values; the agents decode with pydantic."""
    app_id = f"{settings.topic_prefix}{app_id}"
    data_dir = Path(settings.faust_data_dir).resolve() / app_id
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_disable_leader=True,
        producer_acks=-1,
        datadir=str(data_dir),
        web_port=web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        broker_session_timeout=settings.kafka_session_timeout_s,
    )
    app.transport = Transport(app.conf.broker_consumer, app)
    return app


settings = StreamsSettings()
app = create_app("activity-enrichment", settings, settings.enrichment_web_port)
install_web_endpoints(app)

events_topic = app.topic(settings.topic(EVENTS_TOPIC), partitions=settings.topic_partitions)

# Registers the agent on `app`; imported last because it needs the topic above.
from activity_streams import enrichment  # noqa: E402, F401

"""Running the pipeline's long-lived processes: the relay and the Faust workers."""

from __future__ import annotations

import importlib
import signal
import sys
from enum import StrEnum
from types import FrameType

import structlog
from activity_producer.relay import OutboxRelay, RelaySettings, ensure_topics
from activity_producer.relay.topics import ADMIN_TIMEOUT_S
from activity_schemas.topics import (
    AUDIT_TOPIC,
    DEAD_LETTER_TOPIC,
    DELIVERIES_TOPIC,
    EVENTS_TOPIC,
    RECEIPTS_TOPIC,
)
from confluent_kafka.admin import AdminClient

__all__ = [
    "PIPELINE_TOPICS",
    "WorkerKind",
    "create_pipeline_topics",
    "delete_pipeline_topics",
    "run_relay",
    "run_worker",
]

log = structlog.get_logger(__name__)

PIPELINE_TOPICS = (EVENTS_TOPIC, DELIVERIES_TOPIC, AUDIT_TOPIC, RECEIPTS_TOPIC, DEAD_LETTER_TOPIC)


class WorkerKind(StrEnum):
    """The Faust workers the pipeline runs."""

    ENRICHMENT = "enrichment"
    SINKS = "sinks"


_APP_MODULES = {
    WorkerKind.ENRICHMENT: "activity_streams.app",
    WorkerKind.SINKS: "activity_sinks.app",
}


def create_pipeline_topics(settings: RelaySettings) -> list[str]:
    """Create every topic of the pipeline that is missing; return the names created."""
    return ensure_topics(
        settings.kafka_bootstrap_servers,
        [f"{settings.topic_prefix}{name}" for name in PIPELINE_TOPICS],
        settings.topic_partitions,
        settings.topic_replication_factor,
        settings.topic_retention_ms,
    )


def delete_pipeline_topics(settings: RelaySettings) -> None:
    """Delete every topic of the pipeline under the settings' prefix; missing ones are fine."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    existing = set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    names = [f"{settings.topic_prefix}{name}" for name in PIPELINE_TOPICS]
    doomed = [name for name in names if name in existing]
    if not doomed:
        return
    for name, future in admin.delete_topics(doomed, operation_timeout=ADMIN_TIMEOUT_S).items():
        future.result()
        log.info("topic_deleted", topic=name)


def run_relay(settings: RelaySettings) -> None:
    """Run the relay until SIGINT or SIGTERM, then finish the batch in hand and flush."""
    create_pipeline_topics(settings)
    relay = OutboxRelay(settings)

    def request_stop(signum: int, _: FrameType | None) -> None:
        log.info("relay_stop_requested", signal=signal.Signals(signum).name)
        relay.stop()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    log.info(
        "relay_starting",
        kafka=settings.kafka_bootstrap_servers,
        topic_prefix=settings.topic_prefix,
        batch_size=settings.relay_batch_size,
        metrics_port=settings.relay_metrics_port,
    )
    relay.run()
    log.info(
        "relay_stopped",
        rows_sent=relay.stats.rows_sent,
        rows_dead_lettered=relay.stats.rows_dead_lettered,
        batches=relay.stats.batches,
    )


def run_worker(kind: WorkerKind, log_level: str) -> None:
    """Run a Faust worker of `kind` in this process until it is stopped."""
    module = importlib.import_module(_APP_MODULES[kind])
    faust_level = {"warning": "warn", "critical": "crit"}.get(log_level, log_level)
    sys.argv = [f"activity-{kind.value}", "worker", "--loglevel", faust_level]
    module.app.main()

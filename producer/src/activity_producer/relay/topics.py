"""Creation of the pipeline's Kafka topics when they are missing."""

from __future__ import annotations

import time
from collections.abc import Iterable

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from activity_producer.errors import RelayError

__all__ = ["ensure_topics"]

log = structlog.get_logger(__name__)

LEADER_POLL_S = 0.2
"""Seconds between two checks that new partitions have a leader."""

ADMIN_TIMEOUT_S = 30.0
"""How long topic creation may take; a fresh single-node KRaft broker needs a few seconds."""


def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int,
    replication_factor: int,
    retention_ms: int | None = None,
) -> list[str]:
    """Create each of `topics` that does not exist yet, and return the names created.

    `retention_ms` sets the topics' `retention.ms`; None keeps the broker's default.
    Existing topics are left as they are.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    try:
        existing = set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    except KafkaException as exc:
        raise RelayError(
            f"cannot list topics on Kafka at {bootstrap_servers}: {exc}; "
            "check that the broker is running (`activity stack status`)"
        ) from exc

    config = {} if retention_ms is None else {"retention.ms": str(retention_ms)}
    missing = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=config,
        )
        for name in topics
        if name not in existing
    ]
    if not missing:
        return []

    created = []
    for name, future in admin.create_topics(missing, request_timeout=ADMIN_TIMEOUT_S).items():
        try:
            future.result(timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise RelayError(f"cannot create topic {name}: {exc}") from exc
        created.append(name)
        log.info("topic_created", topic=name, partitions=partitions)
    _wait_for_leaders(admin, created)
    return created


def _wait_for_leaders(admin: AdminClient, topics: list[str]) -> None:
    """Return once every partition of `topics` has a leader, so clients can use them at once."""
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while topics and time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
        if all(
            name in metadata
            and metadata[name].partitions
            and all(p.leader >= 0 for p in metadata[name].partitions.values())
            for name in topics
        ):
            return
        time.sleep(LEADER_POLL_S)
    if topics:
        raise RelayError(
            f"topics {', '.join(topics)} have partitions without a leader after "
            f"{ADMIN_TIMEOUT_S:.0f} s; check the broker log"
        )

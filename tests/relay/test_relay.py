"""The relay on a thread against real PostgreSQL and Kafka: order, gaps, poison rows, operations."""

from __future__ import annotations

import json
import socket

import httpx
import psycopg
import pytest
from activity_producer.dsn import for_libpq
from activity_producer.errors import RelayError
from activity_producer.relay import OutboxRelay, RelaySettings, RelayState
from activity_producer.relay.outbox import SELECT_UNSENT, delete_sent_rows
from activity_producer.relay.relay import MAX_ATTEMPTS, producer_config
from activity_schemas.topics import DEAD_LETTER_TOPIC, EVENTS_TOPIC
from confluent_kafka import KafkaError, Producer
from sqlalchemy.engine import make_url

from tests.conftest import wait_until
from tests.relay.conftest import (
    RELAY_DATABASE,
    WAIT_S,
    RelayThread,
    insert_row,
    read_topic,
    unsent_rows,
    wait_for_records,
)


def test_late_commit_of_lower_id_sent_once(
    settings: RelaySettings, running_relay: OutboxRelay
) -> None:
    with (
        psycopg.connect(for_libpq(settings.database_url)) as first,
        psycopg.connect(for_libpq(settings.database_url)) as second,
    ):
        lower_id, lower_event = insert_row(first)
        higher_id, higher_event = insert_row(second)
        second.commit()
        topic = settings.topic_prefix + EVENTS_TOPIC
        wait_for_records(settings.kafka_bootstrap_servers, topic, {higher_event})

        first.commit()
        records = wait_for_records(
            settings.kafka_bootstrap_servers, topic, {lower_event, higher_event}
        )

    assert lower_id < higher_id
    assert sorted(str(r.event_id) for r in records) == sorted([str(lower_event), str(higher_event)])


def test_rollback_gap_does_not_stall(settings: RelaySettings, running_relay: OutboxRelay) -> None:
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        rolled_back_id, _ = insert_row(conn)
        conn.rollback()
        committed_id, committed_event = insert_row(conn)
        conn.commit()

    records = wait_for_records(
        settings.kafka_bootstrap_servers, settings.topic_prefix + EVENTS_TOPIC, {committed_event}
    )

    assert committed_id == rolled_back_id + 1
    assert [r.event_id for r in records] == [committed_event]


def test_record_key_and_cloudevents_headers(
    settings: RelaySettings, running_relay: OutboxRelay
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        _, event_id = insert_row(
            conn, key="tenant:resource", payload={"a": 1}, headers={"traceparent": traceparent}
        )
        conn.commit()

    [record] = wait_for_records(
        settings.kafka_bootstrap_servers, settings.topic_prefix + EVENTS_TOPIC, {event_id}
    )

    assert record.key == "tenant:resource"
    assert json.loads(record.value) == {"a": 1}
    assert record.headers["ce_id"] == str(event_id)
    assert record.headers["ce_specversion"] == "1.0"
    assert record.headers["ce_type"] == "signal.created"
    assert record.headers["ce_subject"] == "subject"
    assert record.headers["ce_source"].startswith("/tenants/")
    assert record.headers["ce_time"].endswith("+00:00")
    assert record.headers["traceparent"] == traceparent


def test_oversize_row_dead_lettered_others_flow(
    relay_settings: RelaySettings, settings: RelaySettings
) -> None:
    small_limit = settings.model_copy(update={"relay_max_message_bytes": 4096})
    relay = RelayThread(small_limit).start()
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        poison_id, poison_event = insert_row(conn, key="k1", payload={"blob": "x" * 10_000})
        _, later_same_key = insert_row(conn, key="k1")
        _, later_other_key = insert_row(conn, key="k2")
        conn.commit()

    events = wait_for_records(
        settings.kafka_bootstrap_servers,
        settings.topic_prefix + EVENTS_TOPIC,
        {later_same_key, later_other_key},
    )
    dead = wait_for_records(
        settings.kafka_bootstrap_servers, settings.topic_prefix + DEAD_LETTER_TOPIC, {poison_event}
    )
    relay.stop()

    assert {r.event_id for r in events} == {later_same_key, later_other_key}
    [letter] = dead
    assert letter.headers["dead_letter_reason"].startswith("record of ")
    assert "exceeds the limit of 4096 bytes" in letter.headers["dead_letter_reason"]
    assert letter.headers["dead_letter_source"] == f"activity_outbox:{poison_id}"
    assert letter.headers["dead_letter_topic"] == EVENTS_TOPIC
    assert letter.key == "k1"
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT sent_at IS NOT NULL, dead_letter_reason FROM activity_outbox WHERE id = %s",
            (poison_id,),
        ).fetchone()
    assert row is not None and row[0] is True and "exceeds the limit" in row[1]


def test_unknown_topic_dead_lettered_after_retries(
    settings: RelaySettings, running_relay: OutboxRelay
) -> None:
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        _, poison_event = insert_row(conn, key="k1", topic="no.such.topic")
        _, other_event = insert_row(conn, key="k2")
        conn.commit()

    dead = wait_for_records(
        settings.kafka_bootstrap_servers, settings.topic_prefix + DEAD_LETTER_TOPIC, {poison_event}
    )
    events = read_topic(settings.kafka_bootstrap_servers, settings.topic_prefix + EVENTS_TOPIC)

    [letter] = dead
    assert letter.headers["dead_letter_reason"] == (
        f"topic '{settings.topic_prefix}no.such.topic' does not exist; "
        "create it with `activity migrate`"
    )
    assert [r.event_id for r in events] == [other_event]
    assert running_relay.metrics.errors.labels(kind="rejected")._value.get() == MAX_ATTEMPTS - 1
    assert running_relay.stats.rows_dead_lettered == 1


def test_delivery_failure_raised_with_fake_timeout(
    settings: RelaySettings,
) -> None:
    class TimingOutProducer(Producer):
        """A real producer whose delivery reports all say the message timed out."""

        def produce(self, *args: object, on_delivery: object = None, **kwargs: object) -> None:
            on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)  # type: ignore[operator]

    relay = OutboxRelay(settings, producer=TimingOutProducer(producer_config(settings)))
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        row_id, _ = insert_row(conn)
        conn.commit()

    with (
        psycopg.connect(for_libpq(settings.database_url), autocommit=True) as conn,
        pytest.raises(
            RelayError,
            match=r"Kafka did not acknowledge 1 of 1 rows; first failure "
            rf"on outbox row {row_id}: Local: Message timed out; they stay unsent",
        ),
    ):
        relay.relay_once(conn)

    assert unsent_rows(settings.database_url) == 1


def test_stopped_relay_cannot_run_again(settings: RelaySettings) -> None:
    relay = RelayThread(settings).start()
    wait_until(lambda: relay.relay.state is RelayState.ACTIVE, WAIT_S)
    relay.stop()

    with pytest.raises(RelayError, match="relay cannot move from stopped to standby; create a new"):
        relay.relay.run()


def test_metrics_and_health_report_active(settings: RelaySettings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relay = RelayThread(settings.model_copy(update={"relay_metrics_port": port}))
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        insert_row(conn)
        conn.commit()

    relay.start()
    wait_until(lambda: relay.relay.stats.rows_sent == 1, WAIT_S)
    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    relay.stop()

    assert health.status_code == 200
    assert health.json() == {"state": "active", "rows_sent": 1}
    assert "activity_relay_rows_sent_total 1.0" in metrics
    assert "activity_relay_active 1.0" in metrics
    assert "activity_relay_oldest_transaction_age_seconds" in metrics
    assert relay.relay.metrics_port is None


def test_cleanup_deletes_only_expired_sent_rows(settings: RelaySettings) -> None:
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        old_id, _ = insert_row(conn)
        recent_id, _ = insert_row(conn)
        unsent_id, _ = insert_row(conn)
        conn.execute(
            "UPDATE activity_outbox SET sent_at = now() - interval '2 hours' WHERE id = %s",
            (old_id,),
        )
        conn.execute("UPDATE activity_outbox SET sent_at = now() WHERE id = %s", (recent_id,))
        conn.commit()

    with psycopg.connect(for_libpq(settings.database_url), autocommit=True) as conn:
        deleted = delete_sent_rows(conn, retention_s=3600, batch_size=100, max_batches=10)
        remaining = [r[0] for r in conn.execute("SELECT id FROM activity_outbox ORDER BY id")]

    assert deleted == 1
    assert remaining == [recent_id, unsent_id]


def test_poll_uses_unsent_index_with_sent_rows(settings: RelaySettings) -> None:
    # 300,000 sent rows rather than 2 million keep the test fast; the plan is the same
    # index scan at any count, because the partial index holds only unsent rows.
    sent_rows = 300_000
    with psycopg.connect(for_libpq(settings.database_url), autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO activity_outbox (event_id, topic, message_key, event_type, tenant_id,
                                         subject, occurred_at, payload, sent_at)
            SELECT gen_random_uuid(), 'activity.events', 'k', 'signal.created',
                   gen_random_uuid(), 's', now(), '{}', now()
            FROM generate_series(1, %s)
            """,
            (sent_rows,),
        )
        insert_row(conn)
        conn.execute("ANALYZE activity_outbox")
        conn.execute("SET enable_sort = off")
        plan = "\n".join(
            r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + SELECT_UNSENT, (5000,))
        )
        conn.execute("TRUNCATE activity_outbox")

    [index_scan] = [line for line in plan.splitlines() if "Index Scan" in line]
    assert "Index Scan using activity_outbox_unsent_idx" in index_scan
    assert "rows=1 loops=1" in index_scan
    assert "Seq Scan" not in plan


def test_backlog_sent_by_later_relay(settings: RelaySettings) -> None:
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        event_ids = {insert_row(conn, key=f"k{i}")[1] for i in range(50)}
        conn.commit()

    relay = RelayThread(settings).start()
    records = wait_for_records(
        settings.kafka_bootstrap_servers, settings.topic_prefix + EVENTS_TOPIC, event_ids
    )
    relay.stop()

    assert {r.event_id for r in records} == event_ids
    assert unsent_rows(settings.database_url) == 0


def test_unmigrated_database_raises_relay_error(settings: RelaySettings) -> None:
    empty = f"{RELAY_DATABASE}_empty"
    with psycopg.connect(for_libpq(settings.database_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{empty}"')
        conn.execute(f'CREATE DATABASE "{empty}"')
    url = make_url(settings.database_url).set(database=empty)
    relay = OutboxRelay(
        settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})
    )

    try:
        with pytest.raises(
            RelayError,
            match=r'an outbox statement failed: relation "activity_outbox" does not exist.*'
            r"check that the database is migrated to the latest revision \(`activity migrate`\)",
        ):
            relay.run()
    finally:
        with psycopg.connect(for_libpq(settings.database_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')

    assert relay.state is RelayState.STOPPED


def test_zero_retention_deletes_rows_at_acknowledgement(settings: RelaySettings) -> None:
    relay = RelayThread(settings.model_copy(update={"relay_sent_retention_s": 0.0}))
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        _, event_id = insert_row(conn)
        conn.commit()

    relay.start()
    records = wait_for_records(
        settings.kafka_bootstrap_servers, settings.topic_prefix + EVENTS_TOPIC, {event_id}
    )
    wait_until(lambda: relay.relay.stats.rows_sent == 1, WAIT_S)
    relay.stop()

    assert [r.event_id for r in records] == [event_id]
    with psycopg.connect(for_libpq(settings.database_url)) as conn:
        row = conn.execute("SELECT count(*) FROM activity_outbox").fetchone()
    assert row is not None
    assert row[0] == 0

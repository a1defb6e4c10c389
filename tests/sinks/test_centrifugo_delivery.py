"""The Centrifugo sink's steps against real Centrifugo, PostgreSQL and WebSocket clients.

Each test drives `DeliveryProcessor` directly with deliveries of its own
tenant; the Faust wiring around it is tested in `test_publishing_agent.py`.
"""

from __future__ import annotations

import asyncio
import json
from uuid import uuid4

import asyncpg
import pytest
from activity_pipeline.examples.client import NotificationClient, database_inbox_loader
from activity_schemas import Delivery, Visibility
from activity_sinks.centrifugo import CentrifugoPublisher
from activity_sinks.delivering import DeadLetterKind, DeliveryProcessor
from activity_sinks.tokens import connection_token, subscription_token
from activity_streams.channels import inbox_channel, resource_channel
from cent import AsyncClient, BatchRequest
from cent.dto import BatchResult
from cent.exceptions import CentTimeoutError
from centrifuge import Client
from centrifuge.exceptions import CentrifugeError

from tests.conftest import eventually
from tests.sinks.conftest import PUBLISH_TIMEOUT_S, RETRY_BUDGET_S, build_processor
from tests.sinks.support import (
    API_KEY,
    HMAC_SECRET,
    SHARED_WEBSOCKET_URL,
    WAIT_S,
    InboxClient,
    PrivateCentrifugo,
    free_port,
    make_delivery,
    records,
)


async def test_own_inbox_received_foreign_inbox_rejected(
    processor: DeliveryProcessor,
) -> None:
    tenant, alice, bob = uuid4(), uuid4(), uuid4()
    inbox = InboxClient(tenant, alice)
    await inbox.start()
    delivery = make_delivery(tenant, [alice])
    intruder = Client(SHARED_WEBSOCKET_URL, token=connection_token(alice, HMAC_SECRET), proxy=None)
    await intruder.connect()
    foreign = intruder.new_subscription(inbox_channel(tenant, bob))

    outcome = await processor.process(records([delivery]))
    received = await eventually(lambda: bool(inbox.received), WAIT_S)
    await foreign.subscribe()
    with pytest.raises(CentrifugeError, match="unsubscribed"):
        await foreign.ready(timeout=WAIT_S)
    await intruder.disconnect()
    await inbox.stop()

    assert received
    assert inbox.received == {str(delivery.event.event_id): 1}
    assert outcome.dead_letters == []
    assert [r.recipients for _, r in outcome.receipts] == [(alice,)]


async def test_resource_channel_needs_a_subscription_token() -> None:
    tenant, resource, principal = uuid4(), uuid4(), uuid4()
    channel = resource_channel(tenant, resource)
    client = Client(
        SHARED_WEBSOCKET_URL, token=connection_token(principal, HMAC_SECRET), proxy=None
    )
    await client.connect()
    without_token = client.new_subscription(channel)
    await without_token.subscribe()

    with pytest.raises(CentrifugeError, match="unsubscribed"):
        await without_token.ready(timeout=WAIT_S)
    client.remove_subscription(without_token)
    with_token = client.new_subscription(
        channel, token=subscription_token(principal, channel, HMAC_SECRET)
    )
    await with_token.subscribe()
    await with_token.ready(timeout=WAIT_S)
    await client.disconnect()


async def test_invalid_channels_dead_lettered_rest_delivered(
    processor: DeliveryProcessor,
) -> None:
    tenant, alice = uuid4(), uuid4()
    inbox = InboxClient(tenant, alice)
    await inbox.start()
    unknown_namespace = make_delivery(tenant, [alice], ("nowhere:channel",))
    bad_characters = make_delivery(tenant, [], ("resource:with space",))
    after = make_delivery(tenant, [alice])

    outcome = await processor.process(records([unknown_namespace, bad_characters, after]))
    received = await eventually(lambda: len(inbox.received) == 2, WAIT_S)
    await inbox.stop()

    assert received
    assert [letter.kind for letter in outcome.dead_letters] == [DeadLetterKind.PERMANENT] * 2
    first, second = outcome.dead_letters
    assert "nowhere:channel" in first.reason and "102 unknown channel" in first.reason
    assert Delivery.model_validate_json(first.value).shared_channels == ("nowhere:channel",)
    assert Delivery.model_validate_json(first.value).recipients == ()
    assert "characters outside" in second.reason
    assert first.headers()["dead_letter_offset"] == b"0"
    assert [r.event_id for _, r in outcome.receipts] == [
        unknown_namespace.event.event_id,
        after.event.event_id,
    ]


async def test_undecodable_record_dead_lettered(
    processor: DeliveryProcessor,
) -> None:
    good = make_delivery(uuid4(), [uuid4()])
    batch = records([good, good])
    broken = type(batch[1])(b"k", b"{not json", "test.deliveries", 3, 41)

    outcome = await processor.process([batch[0], broken])

    assert len(outcome.receipts) == 1
    [letter] = outcome.dead_letters
    assert letter.kind == DeadLetterKind.UNDECODABLE
    assert letter.value == b"{not json"
    assert "test.deliveries:3@41 is not a valid Delivery" in letter.reason


async def test_reconnect_recovers_missed_notifications(
    processor: DeliveryProcessor,
) -> None:
    tenant, alice = uuid4(), uuid4()
    inbox = InboxClient(tenant, alice)
    await inbox.start()
    before = make_delivery(tenant, [alice])
    missed = [make_delivery(tenant, [alice]) for _ in range(3)]
    await processor.process(records([before]))
    await eventually(lambda: bool(inbox.received), WAIT_S)

    await inbox.stop()
    await processor.process(records(missed))
    await inbox.start()
    recovered = await eventually(lambda: len(inbox.received) == 4, WAIT_S)
    await inbox.stop()

    assert recovered
    assert set(inbox.received.values()) == {1}


async def test_revoked_recipient_dropped_at_delivery(
    pool: asyncpg.Pool, processor: DeliveryProcessor
) -> None:
    tenant, folder, document = uuid4(), uuid4(), uuid4()
    owner, editor, revoked, target = uuid4(), uuid4(), uuid4(), uuid4()
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO resources (tenant_id, id, type, parent_id, owner_principal_id)"
            " VALUES ($1, $2, $3, $4, $5)",
            [
                (tenant, folder, "folder", None, owner),
                (tenant, document, "document", folder, owner),
            ],
        )
        await conn.executemany(
            "INSERT INTO role_bindings (id, tenant_id, principal_id, resource_id, role, revoked_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (uuid4(), tenant, editor, folder, "editor", None),
                (uuid4(), tenant, revoked, folder, "editor", None),
            ],
        )
    delivery = make_delivery(
        tenant,
        [owner, editor, revoked, target],
        resource_id=document,
        visibility=Visibility.RESOURCE,
        target=target,
    )
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE role_bindings SET revoked_at = now()"
            " WHERE tenant_id = $1 AND principal_id = $2",
            tenant,
            revoked,
        )

    outcome = await processor.process(records([delivery]))

    assert outcome.recipients_dropped == 1
    [(_, receipt)] = outcome.receipts
    assert set(receipt.recipients) == {owner, editor, target}


async def test_replayed_batch_stores_inbox_rows_once(
    pool: asyncpg.Pool, processor: DeliveryProcessor
) -> None:
    tenant, alice, bob = uuid4(), uuid4(), uuid4()
    batch = records([make_delivery(tenant, [alice, bob]), make_delivery(tenant, [alice])])

    await processor.process(batch)
    await processor.process(batch)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT principal_id, notification FROM inbox_notifications WHERE tenant_id = $1",
            tenant,
        )

    assert sorted(str(row["principal_id"]) for row in rows) == sorted(
        [str(alice), str(alice), str(bob)]
    )
    assert {json.loads(row["notification"])["schema_version"] for row in rows} == {"1"}


async def test_oversize_payload_sent_as_summary_with_link(
    pool: asyncpg.Pool, publisher: CentrifugoPublisher
) -> None:
    processor = build_processor(pool, publisher, max_bytes=2048)
    tenant, alice = uuid4(), uuid4()
    inbox = InboxClient(tenant, alice)
    await inbox.start()
    pushed: list[dict[str, object]] = []
    inbox.subscription.events.on_publication = (  # type: ignore[method-assign]
        lambda ctx: _record(pushed, ctx.pub.data)
    )
    delivery = make_delivery(tenant, [alice], payload={"body": "x" * 4000})

    await processor.process(records([delivery]))
    received = await eventually(lambda: bool(pushed), WAIT_S)
    await inbox.stop()

    assert received
    [document] = pushed
    assert document["truncated"] is True
    assert document["event"]["payload"] == {}  # type: ignore[index]
    assert document["link"] == f"/activities/{tenant}/{delivery.event.event_id}"
    assert document["summary"] == f"Ada: resource.updated on document {delivery.event.resource.id}"


async def _record(pushed: list[dict[str, object]], data: dict[str, object]) -> None:
    pushed.append(data)


class _TimeoutAfterAcceptance(AsyncClient):
    """A `cent` client whose first batch reaches Centrifugo and then reports a timeout."""

    calls = 0

    async def batch(self, request: BatchRequest, timeout: float | None = None) -> BatchResult:
        result = await super().batch(request, timeout)
        self.calls += 1
        if self.calls == 1:
            raise CentTimeoutError(message="Request timeout")
        return result


async def test_retry_after_accepted_timeout_shows_once_with_fake_timeout(
    pool: asyncpg.Pool,
) -> None:
    client = _TimeoutAfterAcceptance("http://127.0.0.1:18000/api", API_KEY)
    publisher = CentrifugoPublisher("unused", API_KEY, PUBLISH_TIMEOUT_S, RETRY_BUDGET_S, client)
    await publisher.start()
    processor = build_processor(pool, publisher)
    tenant, alice = uuid4(), uuid4()
    inbox = InboxClient(tenant, alice)
    await inbox.start()
    delivery = make_delivery(tenant, [alice])

    outcome = await processor.process(records([delivery]))
    marker = make_delivery(tenant, [alice])
    await processor.process(records([marker]))
    received = await eventually(lambda: str(marker.event.event_id) in inbox.received, WAIT_S)
    await inbox.stop()
    await publisher.stop()

    assert received
    assert client.calls == 3
    assert outcome.dead_letters == []
    assert inbox.received[str(delivery.event.event_id)] == 1


async def test_centrifugo_paused_30_s_delivers_each_once(
    pool: asyncpg.Pool, private_centrifugo: PrivateCentrifugo
) -> None:
    publisher = CentrifugoPublisher(
        private_centrifugo.api_url, API_KEY, PUBLISH_TIMEOUT_S, RETRY_BUDGET_S
    )
    await publisher.start()
    processor = build_processor(pool, publisher)
    tenant, alice, bob = uuid4(), uuid4(), uuid4()
    inbox = InboxClient(tenant, alice, private_centrifugo.websocket_url)
    await inbox.start()
    batches = [[make_delivery(tenant, [alice, bob]) for _ in range(5)] for _ in range(12)]
    dead_letters = []

    async def stream() -> None:
        for batch in batches:
            dead_letters.extend((await processor.process(records(batch))).dead_letters)
            await asyncio.sleep(0.5)

    streaming = asyncio.create_task(stream())
    await asyncio.sleep(1.5)
    private_centrifugo.pause()
    await asyncio.sleep(30)
    private_centrifugo.resume()
    await streaming
    everything = await eventually(lambda: len(inbox.received) == 60, WAIT_S)
    await inbox.stop()
    await publisher.stop()

    assert everything
    assert set(inbox.received.values()) == {1}
    assert dead_letters == []


async def test_example_client_pulls_inbox_after_restart(
    pool: asyncpg.Pool, private_centrifugo: PrivateCentrifugo
) -> None:
    publisher = CentrifugoPublisher(
        private_centrifugo.api_url, API_KEY, PUBLISH_TIMEOUT_S, RETRY_BUDGET_S
    )
    await publisher.start()
    processor = build_processor(pool, publisher)
    tenant, alice = uuid4(), uuid4()
    shown: list[str] = []
    client = NotificationClient(
        private_centrifugo.websocket_url,
        connection_token(alice, HMAC_SECRET),
        inbox_channel(tenant, alice),
        database_inbox_loader(pool, tenant, alice),
        lambda notification: shown.append(notification["event"]["event_id"]),
    )
    await client.start()
    before = [make_delivery(tenant, [alice]) for _ in range(2)]
    during = [make_delivery(tenant, [alice]) for _ in range(3)]
    await processor.process(records(before))
    await eventually(lambda: len(shown) == 2, WAIT_S)

    private_centrifugo.stop()
    publishing = asyncio.create_task(processor.process(records(during)))
    await asyncio.sleep(2)
    private_centrifugo.start()
    outcome = await publishing
    everything = await eventually(lambda: len(shown) == 5, WAIT_S)
    await client.stop()
    await publisher.stop()

    assert everything
    assert outcome.dead_letters == []
    assert client.gaps_loaded >= 1
    assert sorted(shown) == sorted(str(d.event.event_id) for d in before + during)


async def test_enrichment_target_row_gets_versioned_document(
    pool: asyncpg.Pool, processor: DeliveryProcessor
) -> None:
    tenant, target = uuid4(), uuid4()
    delivery = make_delivery(tenant, [target], target=target)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO inbox_notifications (tenant_id, principal_id, event_id, action,"
            " notification) VALUES ($1, $2, $3, $4, $5::jsonb)",
            tenant,
            target,
            delivery.event.event_id,
            delivery.event.action,
            json.dumps({"event_id": str(delivery.event.event_id)}),
        )

    await processor.process(records([delivery]))
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT notification FROM inbox_notifications WHERE tenant_id = $1", tenant
        )

    assert json.loads(stored)["event"]["event_id"] == str(delivery.event.event_id)


async def test_exhausted_retry_budget_dead_letters_batch_as_transient(pool: asyncpg.Pool) -> None:
    closed_port = free_port()
    publisher = CentrifugoPublisher(
        f"http://127.0.0.1:{closed_port}/api", API_KEY, PUBLISH_TIMEOUT_S, retry_budget_s=0.5
    )
    await publisher.start()
    processor = build_processor(pool, publisher)
    tenant, alice = uuid4(), uuid4()
    unreachable = make_delivery(tenant, [alice])
    invalid = make_delivery(tenant, [alice], ("resource:with space",))

    outcome = await processor.process(records([unreachable, invalid]))
    await publisher.stop()

    assert outcome.receipts == []
    kinds = sorted(letter.kind for letter in outcome.dead_letters)
    assert kinds == [DeadLetterKind.PERMANENT, DeadLetterKind.TRANSIENT, DeadLetterKind.TRANSIENT]
    transient = [d for d in outcome.dead_letters if d.kind == DeadLetterKind.TRANSIENT]
    assert all("within the retry budget of 0.5 s" in letter.reason for letter in transient)
    assert all(
        Delivery.model_validate_json(letter.value).recipients[0].principal_id == alice
        for letter in transient
    )

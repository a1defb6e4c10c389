"""One batch of deliveries, from Kafka records to Centrifugo: the sink's steps, without Faust.

A batch goes through these steps. Decode the deliveries, then drop the
recipients whose access was revoked since enrichment and check channel names.
Render one notification per activity and store the durable inbox rows. Last,
publish one broadcast per activity in one Centrifugo `batch` call.

What Centrifugo accepted becomes a receipt. What it rejected for good, or
what cannot be sent at all, becomes a dead letter that names the reason and
contains only the rejected channels, so the rest of the batch and of the
stream flows on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from activity_schemas import Delivery, DeliveryReceipt, Recipient
from activity_streams.channels import CHANNEL_MAX_LENGTH, inbox_channel
from pydantic import ValidationError

from activity_sinks.access import AccessChecker
from activity_sinks.centrifugo import Broadcast, CentrifugoPublisher, ChannelFailure
from activity_sinks.errors import InvalidChannelError, NotificationTooLargeError, PublishError
from activity_sinks.inbox import InboxRow, InboxWriter
from activity_sinks.notification import render_notification
from activity_sinks.publish_metrics import DEAD_LETTERS, RECIPIENTS_DROPPED

__all__ = [
    "BatchOutcome",
    "DeadLetter",
    "DeadLetterKind",
    "DeliveryProcessor",
    "SourceRecord",
    "check_channel",
]

log = structlog.get_logger(__name__)

_CHANNEL_CHARACTERS = re.compile(r"^[A-Za-z0-9_:#.\-]+$")


def check_channel(name: str) -> str:
    """Return `name` when Centrifugo accepts it as a channel; raise `InvalidChannelError`."""
    if not name or len(name.encode()) > CHANNEL_MAX_LENGTH:
        raise InvalidChannelError(
            f"channel {name[:60]!r} is {len(name.encode())} bytes long; Centrifugo accepts "
            f"1 to {CHANNEL_MAX_LENGTH}: build channel names with activity_streams.channels"
        )
    if not _CHANNEL_CHARACTERS.match(name):
        raise InvalidChannelError(
            f"channel {name!r} contains characters outside A-Z, a-z, 0-9, '_', ':', '#', "
            "'.', '-': build channel names with activity_streams.channels"
        )
    return name


class DeadLetterKind:
    """Values of the `dead_letter_kind` header of the sink's dead letters."""

    UNDECODABLE = "undecodable"
    PERMANENT = "permanent"
    TRANSIENT = "transient"


@dataclass(frozen=True)
class SourceRecord:
    """A deliveries-topic record and where it was read."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class DeadLetter:
    """A record for the dead-letter topic: the value to replay and why it was not delivered."""

    source: SourceRecord
    value: bytes
    reason: str
    kind: str

    def headers(self) -> dict[str, bytes]:
        """Return the dead-letter headers that the `replay` command reads."""
        return {
            "dead_letter_reason": self.reason.encode(),
            "dead_letter_kind": self.kind.encode(),
            "dead_letter_source": f"{self.source.topic}:{self.source.partition}".encode(),
            "dead_letter_offset": str(self.source.offset).encode(),
        }


@dataclass
class BatchOutcome:
    """Receipts and dead letters of one batch, each keyed like its source record."""

    receipts: list[tuple[bytes | None, DeliveryReceipt]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    recipients_dropped: int = 0


@dataclass
class _Pending:
    """A decoded delivery on its way: its channels and which recipient each inbox belongs to."""

    source: SourceRecord
    delivery: Delivery
    recipients: tuple[Recipient, ...]
    inboxes: dict[str, Recipient] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    unsent: bool = False
    """Set when the retry budget ran out: every valid channel went to the dead-letter topic."""

    @property
    def channels(self) -> tuple[str, ...]:
        return (*self.inboxes, *self.shared)


class DeliveryProcessor:
    """Runs the sink's steps on one batch; it holds no state between batches."""

    def __init__(
        self,
        publisher: CentrifugoPublisher,
        access: AccessChecker,
        inbox: InboxWriter,
        notification_max_bytes: int,
        link_template: str,
    ) -> None:
        self._publisher = publisher
        self._access = access
        self._inbox = inbox
        self._max_bytes = notification_max_bytes
        self._link_template = link_template

    async def process(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        """Deliver one batch and return its receipts and dead letters."""
        outcome = BatchOutcome()
        decoded = self._decode(records, outcome)

        access = await self._access.load([delivery for _, delivery in decoded])
        pending = []
        for source, delivery in decoded:
            kept = access.allowed(delivery)
            outcome.recipients_dropped += len(delivery.recipients) - len(kept)
            pending.append(self._route(source, delivery, kept))
        RECIPIENTS_DROPPED.inc(outcome.recipients_dropped)

        broadcasts, sendable, rows = self._render(pending, outcome)
        await self._inbox.store(rows)

        failures: list[list[ChannelFailure]]
        try:
            failures = await self._publisher.broadcast(broadcasts)
        except PublishError as exc:
            for item in sendable:
                self._dead_letter_channels(
                    item, list(item.channels), str(exc), DeadLetterKind.TRANSIENT, outcome
                )
                item.unsent = True
            failures = [[] for _ in sendable]
        accepted_at = datetime.now(UTC)
        for item, rejected in zip(sendable, failures, strict=True):
            item.rejected.extend((failure.channel, failure.reason) for failure in rejected)
        for item in pending:
            self._settle(item, accepted_at, outcome)
        return outcome

    @staticmethod
    def _decode(
        records: Sequence[SourceRecord], outcome: BatchOutcome
    ) -> list[tuple[SourceRecord, Delivery]]:
        decoded = []
        for record in records:
            try:
                decoded.append((record, Delivery.model_validate_json(record.value)))
            except ValidationError as exc:
                reason = (
                    f"value at {record.topic}:{record.partition}@{record.offset} is not a "
                    f"valid Delivery document ({exc.error_count()} errors)"
                )
                outcome.dead_letters.append(
                    DeadLetter(record, record.value, reason, DeadLetterKind.UNDECODABLE)
                )
                DEAD_LETTERS.labels(kind=DeadLetterKind.UNDECODABLE).inc()
        return decoded

    @staticmethod
    def _route(source: SourceRecord, delivery: Delivery, kept: tuple[Recipient, ...]) -> _Pending:
        """Return the delivery's channels; invalid names are marked rejected."""
        item = _Pending(source, delivery, kept)
        tenant_id = delivery.event.tenant_id
        for recipient in kept:
            item.inboxes[inbox_channel(tenant_id, recipient.principal_id)] = recipient
        for channel in delivery.shared_channels:
            try:
                item.shared.append(check_channel(channel))
            except InvalidChannelError as exc:
                item.rejected.append((channel, str(exc)))
        return item

    def _render(
        self, pending: list[_Pending], outcome: BatchOutcome
    ) -> tuple[list[Broadcast], list[_Pending], list[InboxRow]]:
        broadcasts: list[Broadcast] = []
        sendable: list[_Pending] = []
        rows: list[InboxRow] = []
        for item in pending:
            if not item.channels:
                continue
            event = item.delivery.event
            try:
                notification = render_notification(event, self._max_bytes, self._link_template)
            except NotificationTooLargeError as exc:
                item.rejected.extend((channel, str(exc)) for channel in item.channels)
                continue
            rows.extend(
                InboxRow(
                    event.tenant_id,
                    recipient.principal_id,
                    event.event_id,
                    event.action,
                    notification.json,
                )
                for recipient in item.inboxes.values()
            )
            broadcasts.append(Broadcast(item.channels, notification.data, str(event.event_id)))
            sendable.append(item)
        return broadcasts, sendable, rows

    def _settle(self, item: _Pending, accepted_at: datetime, outcome: BatchOutcome) -> None:
        """Turn what was accepted into a receipt and what was rejected into one dead letter."""
        rejected = dict(item.rejected)
        if rejected:
            reason = "; ".join(dict.fromkeys(rejected.values()))
            self._dead_letter_channels(
                item, list(rejected), reason, DeadLetterKind.PERMANENT, outcome
            )
        accepted = [channel for channel in item.channels if channel not in rejected]
        if item.unsent or (rejected and not accepted):
            return
        event = item.delivery.event
        outcome.receipts.append(
            (
                item.source.key,
                DeliveryReceipt(
                    event_id=event.event_id,
                    tenant_id=event.tenant_id,
                    recipients=tuple(
                        r.principal_id for c, r in item.inboxes.items() if c not in rejected
                    ),
                    shared_channels=tuple(c for c in item.shared if c not in rejected),
                    recorded_at=event.recorded_at,
                    accepted_at=accepted_at,
                ),
            )
        )

    @staticmethod
    def _dead_letter_channels(
        item: _Pending, channels: list[str], reason: str, kind: str, outcome: BatchOutcome
    ) -> None:
        """Dead-letter the delivery narrowed to `channels`, so a replay sends only those."""
        wanted = set(channels)
        inbox_recipients = tuple(r for c, r in item.inboxes.items() if c in wanted)
        shared = tuple(c for c in item.delivery.shared_channels if c in wanted)
        narrowed = item.delivery.model_copy(
            update={"recipients": inbox_recipients, "shared_channels": shared}
        )
        outcome.dead_letters.append(
            DeadLetter(item.source, narrowed.model_dump_json().encode(), reason, kind)
        )
        DEAD_LETTERS.labels(kind=kind).inc()
        log.error(
            "delivery_dead_lettered",
            topic=item.source.topic,
            partition=item.source.partition,
            offset=item.source.offset,
            event_id=str(item.delivery.event.event_id),
            channels=len(channels),
            kind=kind,
            reason=reason,
        )

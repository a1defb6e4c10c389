"""Record activities in a transactional outbox, in the same transaction as the change."""

from activity_producer.correlation import correlation
from activity_producer.errors import PayloadPolicyError, ProducerError, RelayError
from activity_producer.policy import PayloadPolicy
from activity_producer.recording import (
    ActivityRecorder,
    RecordedActivity,
    configure_recording,
    record_activity_with_outbox,
    record_activity_with_outbox_sync,
    tx_activity,
    tx_activity_sync,
)

__all__ = [
    "ActivityRecorder",
    "PayloadPolicy",
    "PayloadPolicyError",
    "ProducerError",
    "RecordedActivity",
    "RelayError",
    "configure_recording",
    "correlation",
    "record_activity_with_outbox",
    "record_activity_with_outbox_sync",
    "tx_activity",
    "tx_activity_sync",
]

"""Record activities in a transactional outbox, in the same transaction as the change."""

from activity_schemas.catalogue import (
    ActionCatalogue,
    ActionCategory,
    CatalogueEntry,
    default_catalogue,
)

from activity_producer.correlation import active_correlation_id, correlation
from activity_producer.errors import (
    EnvelopeError,
    PayloadPolicyError,
    ProducerError,
    RelayError,
    UnknownActionError,
)
from activity_producer.policy import PayloadPolicy
from activity_producer.recording import (
    ActivityRecorder,
    RecordedActivity,
    UnknownActions,
    configure_recording,
    current_recorder,
    record_activity_with_outbox,
    record_activity_with_outbox_sync,
    tx_activity,
    tx_activity_sync,
)

__all__ = [
    "ActionCatalogue",
    "ActionCategory",
    "ActivityRecorder",
    "CatalogueEntry",
    "EnvelopeError",
    "PayloadPolicy",
    "PayloadPolicyError",
    "ProducerError",
    "RecordedActivity",
    "RelayError",
    "UnknownActionError",
    "UnknownActions",
    "active_correlation_id",
    "configure_recording",
    "correlation",
    "current_recorder",
    "default_catalogue",
    "record_activity_with_outbox",
    "record_activity_with_outbox_sync",
    "tx_activity",
    "tx_activity_sync",
]

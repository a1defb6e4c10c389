"""The relay that moves committed outbox rows onto Kafka topics with confluent-kafka."""

from activity_producer.relay.relay import OutboxRelay, RelayState, RelayStats
from activity_producer.relay.settings import RelaySettings
from activity_producer.relay.topics import ensure_topics

__all__ = ["OutboxRelay", "RelaySettings", "RelayState", "RelayStats", "ensure_topics"]

"""Prometheus metrics of the Centrifugo sink, in the process's default registry.

`rate(activity_sink_publications_total[1m])` is publishes per second.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "DEAD_LETTERS",
    "PUBLICATIONS",
    "PUBLISH_LATENCY",
    "PUBLISH_RETRIES",
    "RECIPIENTS_DROPPED",
]

PUBLICATIONS = Counter(
    "activity_sink_publications_total",
    "Channel publications Centrifugo accepted (one per channel of a broadcast).",
)
PUBLISH_RETRIES = Counter(
    "activity_sink_publish_retries_total",
    "Centrifugo calls sent again after a transient failure.",
)
DEAD_LETTERS = Counter(
    "activity_sink_dead_letters_total",
    "Deliveries the Centrifugo sink sent to the dead-letter topic.",
    ["kind"],
)
PUBLISH_LATENCY = Histogram(
    "activity_sink_publish_latency_seconds",
    "Duration of one Centrifugo batch call, in seconds.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RECIPIENTS_DROPPED = Counter(
    "activity_sink_recipients_dropped_total",
    "Recipients dropped at delivery because their access was revoked after enrichment.",
)

"""Exceptions the producer library raises."""

from __future__ import annotations

from activity_schemas.errors import ActivityPipelineError

__all__ = ["PayloadPolicyError", "ProducerError", "RelayError"]


class ProducerError(ActivityPipelineError):
    """Raised when an activity cannot be recorded."""


class PayloadPolicyError(ProducerError):
    """Raised when a payload breaks the payload policy: a credential, a non-JSON value, or size."""


class RelayError(ActivityPipelineError):
    """Raised when the relay cannot move outbox rows to Kafka."""

    retriable = True

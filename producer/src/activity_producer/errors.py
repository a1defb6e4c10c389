"""Exceptions the producer library raises; each says what failed and what to do next."""

from __future__ import annotations

from activity_schemas.errors import ActivityPipelineError

__all__ = [
    "EnvelopeError",
    "PayloadPolicyError",
    "ProducerError",
    "RelayError",
    "UnknownActionError",
]


class ProducerError(ActivityPipelineError):
    """Raised when an activity cannot be recorded, or the recording settings are invalid."""


class EnvelopeError(ProducerError):
    """Raised when the fields handed to the recorder do not make a valid activity envelope."""


class UnknownActionError(ProducerError):
    """Raised when an action is missing from the catalogue and unknown actions are rejected."""


class PayloadPolicyError(ProducerError):
    """Raised when a payload breaks the payload policy: a credential, a non-JSON value, or size."""


class RelayError(ActivityPipelineError):
    """Raised when the relay cannot move outbox rows to Kafka."""

    retriable = True

"""The root of the pipeline's exceptions; each distribution subclasses it once per layer."""

from __future__ import annotations

__all__ = ["ActivityPipelineError"]


class ActivityPipelineError(Exception):
    """Raised by any part of the activity pipeline; catch this to handle them all."""

    retriable: bool = False
    """Whether trying the same operation again may succeed."""

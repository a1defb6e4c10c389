"""Exceptions of the enrichment layer, rooted at `ActivityPipelineError`."""

from __future__ import annotations

from activity_schemas.errors import ActivityPipelineError

__all__ = ["EnrichmentError", "ReferenceDataError"]


class EnrichmentError(ActivityPipelineError):
    """Raised when the enrichment agent cannot resolve or store what a batch needs."""


class ReferenceDataError(EnrichmentError):
    """Raised when a reference data query or write to PostgreSQL fails; a retry may succeed."""

    retriable = True

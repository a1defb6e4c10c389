"""Publishing deliveries to Centrifugo through one long-lived `cent` client.

A batch of deliveries becomes one `batch` API call holding one `broadcast`
per activity: the same publication goes to every recipient's inbox channel
and to the shared channels. The broadcast's idempotency key is the event id,
and Centrifugo applies it per channel, so a retry after a timeout never
shows a person the same notification twice.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import structlog
from activity_schemas import Delivery
from activity_streams.channels import inbox_channel
from cent import AsyncClient, BatchRequest, BroadcastRequest
from cent.exceptions import (
    CentApiResponseError,
    CentNetworkError,
    CentTimeoutError,
    CentTransportError,
)

from activity_sinks.errors import PublishError

__all__ = ["CentrifugoPublisher", "delivery_channels", "notification_data"]

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 6
"""Tries of one batch call; with the backoff below they span about half a minute."""

BACKOFF_BASE_S = 0.5
"""First retry delay in seconds; each later one doubles, with full jitter."""

BACKOFF_MAX_S = 10.0
"""Longest delay between two tries, in seconds."""

_TRANSIENT = (CentNetworkError, CentTimeoutError)


def delivery_channels(delivery: Delivery) -> list[str]:
    """Return every channel a delivery publishes to: recipients' inboxes, then shared ones."""
    tenant_id = delivery.event.tenant_id
    channels = [inbox_channel(tenant_id, r.principal_id) for r in delivery.recipients]
    channels.extend(delivery.shared_channels)
    return channels


def notification_data(delivery: Delivery) -> dict[str, Any]:
    """Return the document a connected client receives for a delivery."""
    return {"type": "activity", "event": delivery.event.model_dump(mode="json")}


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, CentTransportError) and exc.status_code >= 500


class CentrifugoPublisher:
    """Publishes batches of deliveries; `start()` and `stop()` bound its HTTP connection pool."""

    def __init__(self, api_url: str, api_key: str, timeout_s: float) -> None:
        self._api_url = api_url
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._client: AsyncClient | None = None

    async def start(self) -> None:
        """Open the client and its connection pool."""
        self._client = AsyncClient(self._api_url, self._api_key, timeout=self._timeout_s)

    async def stop(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client._session.close()
            self._client = None

    async def publish(self, deliveries: Sequence[Delivery]) -> int:
        """Publish every delivery with channels, and return the number of channels published to.

        Transient failures (network, timeout, HTTP 5xx) are retried with
        exponential backoff and jitter; then `PublishError` is raised.
        """
        if self._client is None:
            raise PublishError("CentrifugoPublisher.publish() called before start()")
        requests = []
        channel_count = 0
        for delivery in deliveries:
            channels = delivery_channels(delivery)
            if not channels:
                continue
            channel_count += len(channels)
            requests.append(
                BroadcastRequest(
                    channels=channels,
                    data=notification_data(delivery),
                    idempotency_key=str(delivery.event.event_id),
                )
            )
        if not requests:
            return 0

        await self._send_with_retries(BatchRequest(requests=requests, parallel=True))
        return channel_count

    async def _send_with_retries(self, request: BatchRequest) -> None:
        assert self._client is not None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                result = await self._client.batch(request)
            except CentApiResponseError as exc:
                raise PublishError(f"Centrifugo rejected the batch: {exc}") from exc
            except Exception as exc:
                if not _is_transient(exc) or attempt == MAX_ATTEMPTS:
                    raise PublishError(
                        f"Centrifugo did not accept a batch of {len(request.requests)} "
                        f"broadcasts after {attempt} tries: {exc}"
                    ) from exc
                delay = random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))
                log.warning(
                    "centrifugo_publish_retry",
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    error=str(exc),
                    consequence="the batch will be sent again; idempotency keys drop repeats",
                )
                await asyncio.sleep(delay)
                continue
            self._check_replies(result.replies)
            return

    @staticmethod
    def _check_replies(replies: Sequence[Any]) -> None:
        # TODO: send a broadcast whose channel Centrifugo rejected to the dead-letter topic.
        for reply in replies:
            for response in getattr(reply, "responses", ()) or ():
                error = getattr(response, "error", None)
                if error is not None:
                    log.error("centrifugo_channel_rejected", code=error.code, message=error.message)
